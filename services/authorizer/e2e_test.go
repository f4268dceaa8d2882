package main

// End-to-end tests: both real binaries, built once in TestMain, started on
// loopback ports and driven over TCP, as a user runs them.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

var (
	authorityBin  string
	authorizerBin string
	propagation   = flag.Int("propagation", 0, "run TestPropagationLatency with this many revocations (0 skips it)")
)

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "sigil-authorizer-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	authorityBin = filepath.Join(dir, "authority")
	authorizerBin = filepath.Join(dir, "authorizer")
	for _, b := range []struct{ out, pkg string }{{authorityBin, "../authority"}, {authorizerBin, "."}} {
		if out, err := exec.Command("go", "build", "-o", b.out, b.pkg).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go build %s: %v\n%s", b.pkg, err, out)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// logBuffer collects a process's log lines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *logBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// proc is a running binary.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logs    *logBuffer
	addr    string
	done    chan struct{}
	exitErr error
	conn    *grpc.ClientConn
}

// start runs bin with args and waits for its `"msg":"listening"` log line.
func start(t testing.TB, name, bin string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SIGIL_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	p := &proc{name: name, cmd: cmd, logs: &logBuffer{}, done: make(chan struct{})}
	pr, pw := io.Pipe()
	cmd.Stderr, cmd.Stdout = pw, p.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrs := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.logs.Write(append(sc.Bytes(), '\n'))
			var rec struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "listening" {
				select {
				case addrs <- rec.Addr:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	go func() { p.exitErr = cmd.Wait(); pw.Close(); close(p.done) }()
	select {
	case p.addr = <-addrs:
	case <-p.done:
		t.Fatalf("%s exited before listening: %v\n%s", name, p.exitErr, p.logs.String())
	case <-time.After(30 * time.Second):
		p.kill()
		t.Fatalf("%s did not listen in time\n%s", name, p.logs.String())
	}
	conn, err := grpc.NewClient(p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	p.conn = conn
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("%s logs:\n%s", name, p.logs.String())
		}
	})
	return p
}

// kill sends SIGKILL and waits.
func (p *proc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	if p.conn != nil {
		p.conn.Close()
	}
}

// term sends SIGTERM and waits at most bound for a clean exit.
func (p *proc) term(t testing.TB, bound time.Duration) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(bound):
		p.kill()
		t.Fatalf("%s did not stop within %s of SIGTERM", p.name, bound)
	}
	if p.exitErr != nil {
		t.Fatalf("%s exited with %v", p.name, p.exitErr)
	}
	p.conn.Close()
}

// authority is a running authority with its data directory.
type authority struct {
	*proc
	dataDir string
	client  sigilv1.TokenAuthorityServiceClient
}

func startAuthority(t testing.TB, dataDir, listen string) *authority {
	t.Helper()
	p := start(t, "authority", authorityBin, "--listen", listen, "--metrics-listen", "127.0.0.1:0",
		"--data-dir", dataDir, "--key-activation-delay", "1500ms", "--shutdown-timeout", "5s", "--lock-timeout", "5s")
	return &authority{proc: p, dataDir: dataDir, client: sigilv1.NewTokenAuthorityServiceClient(p.conn)}
}

func (a *authority) op(t testing.TB) context.Context {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(a.dataDir, "operator.token"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+strings.TrimSpace(string(b)))
}

var nameSeq struct {
	sync.Mutex
	n int
}

// mint creates a token in org-a allowed domain:view on domains/example.com.
func (a *authority) mint(t testing.TB) (tok, id string) {
	t.Helper()
	nameSeq.Lock()
	nameSeq.n++
	name := fmt.Sprintf("e2e-%d", nameSeq.n)
	nameSeq.Unlock()
	resp, err := a.client.CreateToken(a.op(t), &sigilv1.CreateTokenRequest{
		OrgId: "org-a", Name: name, CreatedBy: "alice",
		Grants: []*sigilv1.Grant{{Permissions: []string{"domain:view"}, Resources: []string{"domains/example.com"}}},
		Expiry: &sigilv1.CreateTokenRequest_Ttl{Ttl: durationpb.New(10 * 24 * time.Hour)},
	})
	if err != nil {
		t.Fatalf("CreateToken: %v", err)
	}
	return resp.GetToken(), resp.GetInfo().GetTokenId()
}

func (a *authority) revoke(t testing.TB, id string) uint64 {
	t.Helper()
	resp, err := a.client.RevokeToken(a.op(t), &sigilv1.RevokeTokenRequest{TokenId: id, Reason: "e2e"})
	if err != nil {
		t.Fatalf("RevokeToken: %v", err)
	}
	return resp.GetRevision()
}

// authorizer is a running authorizer.
type authorizer struct {
	*proc
	client sigilv1.AuthorizerServiceClient
	health healthpb.HealthClient
}

func startAuthorizer(t testing.TB, a *authority, extra ...string) *authorizer {
	t.Helper()
	args := append([]string{"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--authority", a.addr,
		"--authority-token-file", filepath.Join(a.dataDir, "watch.token"), "--max-staleness", "2s", "--shutdown-timeout", "5s"}, extra...)
	p := start(t, "authorizer", authorizerBin, args...)
	z := &authorizer{proc: p, client: sigilv1.NewAuthorizerServiceClient(p.conn), health: healthpb.NewHealthClient(p.conn)}
	z.waitServing(t, true, 10*time.Second)
	return z
}

func (z *authorizer) waitServing(t testing.TB, serving bool, within time.Duration) {
	t.Helper()
	want := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		want = healthpb.HealthCheckResponse_SERVING
	}
	deadline := time.Now().Add(within)
	for {
		resp, err := z.health.Check(context.Background(), &healthpb.HealthCheckRequest{})
		if err == nil && resp.GetStatus() == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("authorizer health not %v within %s (last %v, %v)", want, within, resp.GetStatus(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (z *authorizer) check(tok string, minRevision uint64) (*sigilv1.CheckPermissionResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return z.client.CheckPermission(ctx, &sigilv1.CheckPermissionRequest{
		Token: tok, Permission: "domain:view", Resource: "domains/example.com", OrgId: "org-a", MinRevision: minRevision,
	})
}

func wantDecision(t testing.TB, z *authorizer, tok string, minRevision uint64, want sigilv1.DenyReason) *sigilv1.CheckPermissionResponse {
	t.Helper()
	resp, err := z.check(tok, minRevision)
	if err != nil {
		t.Fatalf("CheckPermission: %v", err)
	}
	if resp.GetReason() != want || resp.GetAllowed() != (want == sigilv1.DenyReason_DENY_REASON_UNSPECIFIED) {
		t.Fatalf("CheckPermission = allowed %v reason %v, want %v", resp.GetAllowed(), resp.GetReason(), want)
	}
	return resp
}

const allowed = sigilv1.DenyReason_DENY_REASON_UNSPECIFIED

// pollRevoked checks until the authorizer says REVOKED and returns how long
// that took from since.
func pollRevoked(t testing.TB, z *authorizer, tok string, since time.Time, limit time.Duration) time.Duration {
	t.Helper()
	for {
		resp, err := z.check(tok, 0)
		if err != nil {
			t.Fatalf("CheckPermission: %v", err)
		}
		if resp.GetReason() == sigilv1.DenyReason_DENY_REASON_REVOKED {
			return time.Since(since)
		}
		if resp.GetAllowed() && time.Since(since) > limit {
			t.Fatalf("revoked token still allowed %s after the revocation", limit)
		}
		time.Sleep(200 * time.Microsecond)
	}
}

func TestE2EMintCheckRevoke(t *testing.T) {
	a := startAuthority(t, t.TempDir(), "127.0.0.1:0")
	z := startAuthorizer(t, a)

	// A token works the moment it is minted: no min_revision needed, its
	// key was announced before it signed anything.
	tok, id := a.mint(t)
	resp := wantDecision(t, z, tok, 0, allowed)
	if resp.GetTokenId() != id || resp.GetOrgId() != "org-a" {
		t.Fatalf("response %v does not describe token %s", resp, id)
	}

	// Read-after-revoke with min_revision.
	rev := a.revoke(t, id)
	if got := wantDecision(t, z, tok, rev, sigilv1.DenyReason_DENY_REASON_REVOKED); got.GetRevision() < rev {
		t.Fatalf("decision at revision %d, below min_revision %d", got.GetRevision(), rev)
	}

	// Without min_revision, the revocation is seen within 100 ms.
	var lat []time.Duration
	for range 5 {
		tok, id := a.mint(t)
		wantDecision(t, z, tok, 0, allowed)
		a.revoke(t, id)
		lat = append(lat, pollRevoked(t, z, tok, time.Now(), 5*time.Second))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	t.Logf("revocation seen after %v", lat)
	if lat[len(lat)/2] > 100*time.Millisecond {
		t.Fatalf("median propagation %v exceeds 100ms", lat[len(lat)/2])
	}

	// A forged token, a token of another deployment's shape, garbage: denied.
	wantDecision(t, z, tok[:len(tok)-2]+"zz", 0, sigilv1.DenyReason_DENY_REASON_MALFORMED)

	// SIGTERM drains and exits cleanly; no token reached the logs.
	z.term(t, 10*time.Second)
	for _, p := range []*proc{z.proc, a.proc} {
		if strings.Contains(p.logs.String(), tok) {
			t.Fatalf("%s logged a token", p.name)
		}
	}
}

func TestE2EAuthorityDownThenBack(t *testing.T) {
	dir := t.TempDir()
	a := startAuthority(t, dir, "127.0.0.1:0")
	z := startAuthorizer(t, a)
	tok, _ := a.mint(t)
	wantDecision(t, z, tok, 0, allowed)

	addr := a.addr
	a.kill()
	killed := time.Now()
	// Fail closed once nothing came for --max-staleness (2s).
	for {
		_, err := z.check(tok, 0)
		if status.Code(err) == codes.Unavailable {
			break
		}
		if err != nil {
			t.Fatalf("unexpected error %v", err)
		}
		if time.Since(killed) > 10*time.Second {
			t.Fatal("still answering 10s after the authority died")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The last checkpoint came at most a second before the kill, so the
	// 2s staleness bound runs out between 1s and 2s after it.
	d := time.Since(killed)
	if d < time.Second {
		t.Fatalf("UNAVAILABLE %v after the kill: sooner than --max-staleness allows", d)
	}
	t.Logf("UNAVAILABLE %v after the authority was killed (--max-staleness 2s)", d)
	z.waitServing(t, false, 2*time.Second)

	// The authority comes back on the same address: the authorizer resumes.
	a = startAuthority(t, dir, addr)
	z.waitServing(t, true, 15*time.Second)
	wantDecision(t, z, tok, 0, allowed)
	_, id := a.mint(t)
	rev := a.revoke(t, id)
	if resp, err := z.check(tok, rev); err != nil || !resp.GetAllowed() || resp.GetRevision() < rev {
		t.Fatalf("after recovery: %v, %v", resp, err)
	}
}

func TestE2ERestartedAuthorizerStillDeniesRevoked(t *testing.T) {
	a := startAuthority(t, t.TempDir(), "127.0.0.1:0")
	z := startAuthorizer(t, a)
	tok, id := a.mint(t)
	rev := a.revoke(t, id)
	wantDecision(t, z, tok, rev, sigilv1.DenyReason_DENY_REASON_REVOKED)
	z.kill()

	z = startAuthorizer(t, a)
	wantDecision(t, z, tok, 0, sigilv1.DenyReason_DENY_REASON_REVOKED)
}

func TestE2EKeyRotationAndRevocation(t *testing.T) {
	a := startAuthority(t, t.TempDir(), "127.0.0.1:0")
	z := startAuthorizer(t, a)
	oldTok, oldID := a.mint(t)
	oldInfo, err := a.client.GetToken(a.op(t), &sigilv1.GetTokenRequest{TokenId: oldID})
	if err != nil {
		t.Fatal(err)
	}
	oldKey := oldInfo.GetInfo().GetKeyId()

	rot, err := a.client.RotateSigningKey(a.op(t), &sigilv1.RotateSigningKeyRequest{})
	if err != nil {
		t.Fatalf("RotateSigningKey: %v", err)
	}
	if rot.GetKeyId() == oldKey {
		t.Fatal("rotation returned the old key")
	}
	// Old tokens keep working through the rotation.
	wantDecision(t, z, oldTok, rot.GetRevision(), allowed)

	// Once the new key is active, new tokens carry it and work at once.
	deadline := time.Now().Add(15 * time.Second)
	var newTok string
	for {
		tok, id := a.mint(t)
		info, err := a.client.GetToken(a.op(t), &sigilv1.GetTokenRequest{TokenId: id})
		if err != nil {
			t.Fatal(err)
		}
		if info.GetInfo().GetKeyId() == rot.GetKeyId() {
			newTok = tok
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("new key never signed a token")
		}
		time.Sleep(250 * time.Millisecond)
	}
	wantDecision(t, z, newTok, 0, allowed)
	wantDecision(t, z, oldTok, 0, allowed)

	// Revoking the old key stops its tokens, not the new key's.
	rk, err := a.client.RevokeSigningKey(a.op(t), &sigilv1.RevokeSigningKeyRequest{KeyId: oldKey})
	if err != nil {
		t.Fatalf("RevokeSigningKey: %v", err)
	}
	wantDecision(t, z, oldTok, rk.GetRevision(), sigilv1.DenyReason_DENY_REASON_KEY_REVOKED)
	wantDecision(t, z, newTok, 0, allowed)
}

// TestPropagationLatency measures, with 8 authorizers connected, the time
// from RevokeToken's reply to each authorizer's first REVOKED answer.
// Run it with: go test ./services/authorizer -run Propagation -propagation 1000 -v
func TestPropagationLatency(t *testing.T) {
	if *propagation == 0 {
		t.Skip("a benchmark: run with -propagation N (see BENCHMARKS.md)")
	}
	const authorizers = 8
	a := startAuthority(t, t.TempDir(), "127.0.0.1:0")
	zs := make([]*authorizer, authorizers)
	for i := range zs {
		zs[i] = startAuthorizer(t, a)
	}
	var lat []time.Duration
	for range *propagation {
		tok, id := a.mint(t)
		for _, z := range zs {
			wantDecision(t, z, tok, 0, allowed)
		}
		a.revoke(t, id)
		since := time.Now()
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, z := range zs {
			wg.Go(func() {
				d := pollRevoked(t, z, tok, since, 10*time.Second)
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			})
		}
		wg.Wait()
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(p float64) time.Duration { return lat[int(p*float64(len(lat)-1))] }
	fmt.Printf("propagation: %d revocations x %d authorizers: p50 %v p90 %v p99 %v max %v\n",
		*propagation, authorizers, q(.50), q(.90), q(.99), lat[len(lat)-1])
	if q(.99) > 100*time.Millisecond {
		t.Errorf("p99 %v exceeds 100ms", q(.99))
	}
}

var ghzTotal = flag.Int("ghz", 0, "run TestGhz with this many requests per run (0 skips it)")

// TestGhz load-tests a real authorizer with ghz, 50 concurrent callers:
// CheckPermission on a cached token, then the health check of the same
// server, alternating twice. The figure is the throughput ratio.
// Run it with: go test ./services/authorizer -run Ghz -v -args -ghz=100000
func TestGhz(t *testing.T) {
	if *ghzTotal == 0 {
		t.Skip("a benchmark: run with -args -ghz=N (see BENCHMARKS.md)")
	}
	a := startAuthority(t, t.TempDir(), "127.0.0.1:0")
	z := startAuthorizer(t, a)
	tok, _ := a.mint(t)
	wantDecision(t, z, tok, 0, allowed)
	// Requests go as serialized binary, so that ghz (on the same cores)
	// does not spend its time turning JSON into messages.
	dir := t.TempDir()
	checkFile, healthFile := filepath.Join(dir, "check.bin"), filepath.Join(dir, "health.bin")
	checkData, err := proto.Marshal(&sigilv1.CheckPermissionRequest{Token: tok, Permission: "domain:view", Resource: "domains/example.com", OrgId: "org-a"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(checkFile, checkData, 0o600); err != nil {
		t.Fatal(err)
	}
	// An empty message would be "no data" to ghz: ask about the service.
	healthData, _ := proto.Marshal(&healthpb.HealthCheckRequest{Service: sigilv1.AuthorizerService_ServiceDesc.ServiceName})
	if err := os.WriteFile(healthFile, healthData, 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(call, dataFile string) (rps float64, p50, p99 time.Duration) {
		cmd := exec.Command("go", "tool", "ghz", "--insecure", "--disable-template-data", "--disable-template-functions",
			"-c", "50", "-n", fmt.Sprint(*ghzTotal), "-O", "json",
			"--call", call, "-B", dataFile, z.addr)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("ghz %s: %v\n%.500s\n%.500s", call, err, stderr.String(), out)
		}
		var rep struct {
			Rps                    float64
			StatusCodeDistribution map[string]int `json:"statusCodeDistribution"`
			LatencyDistribution    []struct {
				Percentage int
				Latency    time.Duration
			} `json:"latencyDistribution"`
		}
		if err := json.Unmarshal(out, &rep); err != nil {
			t.Fatalf("ghz output: %v", err)
		}
		if len(rep.StatusCodeDistribution) != 1 || rep.StatusCodeDistribution["OK"] != *ghzTotal {
			t.Fatalf("%s: status codes %v", call, rep.StatusCodeDistribution)
		}
		for _, l := range rep.LatencyDistribution {
			switch l.Percentage {
			case 50:
				p50 = l.Latency
			case 99:
				p99 = l.Latency
			}
		}
		return rep.Rps, p50, p99
	}
	var check, health float64
	for round := range 2 {
		c, c50, c99 := run("sigil.v1.AuthorizerService/CheckPermission", checkFile)
		h, h50, h99 := run("grpc.health.v1.Health/Check", healthFile)
		fmt.Printf("ghz round %d, 50 callers, %d calls: CheckPermission %.0f rps (p50 %v, p99 %v); Health %.0f rps (p50 %v, p99 %v)\n",
			round, *ghzTotal, c, c50, c99, h, h50, h99)
		check += c
		health += h
	}
	fmt.Printf("ghz: CheckPermission/Health throughput ratio %.2f\n", check/health)
}
