package main

// End-to-end tests: both real binaries, built once per test run by
// internal/testproc, started on loopback ports and driven over TCP, as a
// user runs them.

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sigil-auth/sigil/internal/testproc"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

var propagationAuthorizers = flag.Int("propagation.authorizers", 8, "authorizers connected in BenchmarkPropagation")

// The main packages started by these tests, built once for the test run.
const (
	authorityPkg  = "services/authority"
	authorizerPkg = "services/authorizer"
)

// proc is a running binary.
type proc struct {
	*testproc.Proc
	addr string
	conn *grpc.ClientConn
}

// start runs the main package pkg with args and waits for its
// `"msg":"listening"` log line.
func start(t testing.TB, name, pkg string, args ...string) *proc {
	t.Helper()
	tp := testproc.StartWith(t, testproc.Options{Name: name}, testproc.MustBuild(t, pkg), args...)
	addr, conn := tp.Listening(t, 30*time.Second)
	return &proc{Proc: tp, addr: addr, conn: conn}
}

// kill sends SIGKILL and waits.
func (p *proc) kill() {
	p.Kill()
	p.conn.Close()
}

// term sends SIGTERM and requires a clean exit; bound only guards against a
// hang.
func (p *proc) term(t testing.TB, bound time.Duration) {
	t.Helper()
	if err := p.Stop(bound); err != nil {
		t.Fatal(err)
	}
	p.conn.Close()
}

// authority is a running authority with its data directory.
type authority struct {
	*proc
	dataDir string
	client  sigilv1.TokenAuthorityServiceClient
}

func startAuthority(t testing.TB, dataDir, listen string, extra ...string) *authority {
	t.Helper()
	args := append([]string{"--listen", listen, "--metrics-listen", "127.0.0.1:0",
		"--data-dir", dataDir, "--key-activation-delay", "1500ms", "--shutdown-timeout", "5s", "--lock-timeout", "5s"}, extra...)
	p := start(t, "authority", authorityPkg, args...)
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
	p := start(t, "authorizer", authorizerPkg, args...)
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

// waitRevoked checks without min_revision until the authorizer says
// REVOKED, and returns that answer. limit only guards against a revocation
// that never arrives.
func waitRevoked(t testing.TB, z *authorizer, tok string, limit time.Duration) *sigilv1.CheckPermissionResponse {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		resp, err := z.check(tok, 0)
		if err != nil {
			t.Fatalf("CheckPermission: %v", err)
		}
		if resp.GetReason() == sigilv1.DenyReason_DENY_REASON_REVOKED {
			return resp
		}
		if !resp.GetAllowed() {
			t.Fatalf("revoked token denied with %v, want REVOKED", resp.GetReason())
		}
		if time.Now().After(deadline) {
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

	// Without min_revision, revocations arrive by the stream, and in order:
	// once the authorizer denies the last of several revoked tokens, it
	// denies every one revoked before it.
	var toks []string
	var ids []string
	for range 5 {
		tok, id := a.mint(t)
		wantDecision(t, z, tok, 0, allowed)
		toks, ids = append(toks, tok), append(ids, id)
	}
	var revs []uint64
	for i, id := range ids {
		revs = append(revs, a.revoke(t, id))
		if i > 0 && revs[i] <= revs[i-1] {
			t.Fatalf("revisions of successive revocations %v do not increase", revs)
		}
	}
	last := waitRevoked(t, z, toks[len(toks)-1], 10*time.Second)
	if last.GetRevision() < revs[len(revs)-1] {
		t.Fatalf("REVOKED at revision %d, before the revocation's %d", last.GetRevision(), revs[len(revs)-1])
	}
	for i, tok := range toks[:len(toks)-1] {
		if got := wantDecision(t, z, tok, 0, sigilv1.DenyReason_DENY_REASON_REVOKED); got.GetRevision() < revs[i] {
			t.Fatalf("decision at revision %d, before the revocation's %d", got.GetRevision(), revs[i])
		}
	}
	// An event after them all, a new token, is seen as well.
	later, _ := a.mint(t)
	wantDecision(t, z, later, 0, allowed)

	// A forged token, a token of another deployment's shape, garbage: denied.
	wantDecision(t, z, tok[:len(tok)-2]+"zz", 0, sigilv1.DenyReason_DENY_REASON_MALFORMED)

	// SIGTERM drains and exits cleanly; no token reached the logs.
	z.term(t, 10*time.Second)
	for _, p := range []*proc{z.proc, a.proc} {
		if strings.Contains(p.Logs.String(), tok) {
			t.Fatalf("%s logged a token", p.Name)
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
	// It answers from its cache until nothing came for --max-staleness
	// (2s), then fails closed: UNAVAILABLE, and health NOT_SERVING. (When,
	// against a clock, is the follower's and server's unit tests' business;
	// the 30s limit only catches an authorizer that never fails closed.)
	killed := time.Now()
	cached := 0
	for {
		resp, err := z.check(tok, 0)
		if status.Code(err) == codes.Unavailable {
			break
		}
		if err != nil || !resp.GetAllowed() {
			t.Fatalf("before failing closed: %v, %v; want the cached decision", resp, err)
		}
		cached++
		if time.Since(killed) > 30*time.Second {
			t.Fatal("still answering 30s after the authority died")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if cached == 0 {
		t.Fatal("UNAVAILABLE at once: no answer from the cache after the authority died")
	}
	t.Logf("UNAVAILABLE %v after the authority was killed (--max-staleness 2s)", time.Since(killed))
	z.waitServing(t, false, 10*time.Second)

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

// TestE2ERevocationReachesEveryAuthorizer: with several authorizers
// connected, each one denies a revoked token, without min_revision, and
// only after it allowed it.
func TestE2ERevocationReachesEveryAuthorizer(t *testing.T) {
	a := startAuthority(t, t.TempDir(), "127.0.0.1:0")
	zs := []*authorizer{startAuthorizer(t, a), startAuthorizer(t, a), startAuthorizer(t, a)}
	for range 3 {
		tok, id := a.mint(t)
		for _, z := range zs {
			wantDecision(t, z, tok, 0, allowed)
		}
		rev := a.revoke(t, id)
		for _, z := range zs {
			if got := waitRevoked(t, z, tok, 10*time.Second); got.GetRevision() < rev {
				t.Fatalf("REVOKED at revision %d, before the revocation's %d", got.GetRevision(), rev)
			}
		}
	}
}

// BenchmarkPropagation measures, with -propagation.authorizers (8)
// authorizers connected, the time from RevokeToken's reply to each
// authorizer's first REVOKED answer (polled every 200µs), and reports its
// p50, p90, p99 and max; one revocation per iteration.
// Run it with: go test ./services/authorizer -run '^$' -bench Propagation -benchtime 1000x
func BenchmarkPropagation(b *testing.B) {
	a := startAuthority(b, b.TempDir(), "127.0.0.1:0")
	zs := make([]*authorizer, *propagationAuthorizers)
	for i := range zs {
		zs[i] = startAuthorizer(b, a)
	}
	var lat []time.Duration
	for b.Loop() {
		b.StopTimer()
		tok, id := a.mint(b)
		for _, z := range zs {
			wantDecision(b, z, tok, 0, allowed)
		}
		b.StartTimer()
		a.revoke(b, id)
		since := time.Now()
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, z := range zs {
			wg.Go(func() {
				waitRevoked(b, z, tok, 10*time.Second)
				d := time.Since(since)
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			})
		}
		wg.Wait()
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))]) / float64(time.Millisecond) }
	b.ReportMetric(q(.50), "p50-ms")
	b.ReportMetric(q(.90), "p90-ms")
	b.ReportMetric(q(.99), "p99-ms")
	b.ReportMetric(q(1), "max-ms")
}

var (
	ghzTotal  = flag.Int("ghz", 0, "run TestGhz with this many requests per round (0 skips it)")
	ghzRounds = flag.Int("ghz.rounds", 3, "rounds of TestGhz, each calling every target once")
	ghzRate   = flag.Int("ghz.rps", 0, "TestGhz: ghz's request rate (0: as fast as it can)")
)

// TestGhz measures, with ghz on loopback, CheckPermission of the real
// authorizer (a cached, allowed token), Envoy's ext_authz Check of the same
// authorizer for the same decision (started with the e2e route policy),
// the authorizer's own Health.Check, and Health.Check of the reference
// server (internal/refserver: bare grpc-go, no interceptors), alternating
// the four in each round, and prints each one's throughput ratio to the
// reference server per round and the medians, then ext_authz's to
// CheckPermission, by rps and by the server's CPU per call, and the
// ceiling ghz's own CPU puts on the rps ratio. With -ghz.rps, ghz sends at
// that fixed rate and only the CPU per call is compared. ghz: 50 callers
// on one connection, binary request data, template data and functions
// disabled (else ghz itself is the bottleneck on two cores). A benchmark, not a test: run it with
// `go tool task bench:limit` or -args -ghz=N; it asserts only that every
// call succeeded.
func TestGhz(t *testing.T) {
	if *ghzTotal == 0 {
		t.Skip("a benchmark: run with `go tool task bench:limit` or -args -ghz=N (see BENCHMARKS.md)")
	}
	a := startAuthority(t, t.TempDir(), "127.0.0.1:0")
	z, ext := startSidecarAuthorizer(t, a)
	ref := start(t, "refserver", "internal/refserver")
	tok, _ := a.mint(t)
	wantDecision(t, z, tok, 0, allowed)
	extReq := benchExtRequest(tok, "GET", "/v5/domain/domains/example.com")
	if v, err := extCheck(t, ext, extReq); err != nil || !v.allowed {
		t.Fatalf("ext_authz: %+v, %v", v, err)
	}
	// Requests go as serialized binary, so that ghz (on the same cores)
	// does not spend its time turning JSON into messages.
	dir := t.TempDir()
	checkFile, healthFile, extFile := filepath.Join(dir, "check.bin"), filepath.Join(dir, "health.bin"), filepath.Join(dir, "extauthz.bin")
	checkData, err := proto.Marshal(&sigilv1.CheckPermissionRequest{Token: tok, Permission: "domain:view", Resource: "domains/example.com", OrgId: "org-a"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(checkFile, checkData, 0o600); err != nil {
		t.Fatal(err)
	}
	extData, err := proto.Marshal(extReq)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(extFile, extData, 0o600); err != nil {
		t.Fatal(err)
	}
	// The whole server's health, with field 1 (service = "") written out:
	// ghz takes an empty file for "no data".
	healthData := []byte{0x0a, 0x00}
	if err := os.WriteFile(healthFile, healthData, 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(addr, call, dataFile string) (rps float64, p50, p99, client time.Duration) {
		args := []string{"tool", "ghz", "--insecure", "--disable-template-data", "--disable-template-functions",
			"-c", "50", "--connections", "1", "-n", fmt.Sprint(*ghzTotal), "-O", "json",
			"--call", call, "-B", dataFile}
		if *ghzRate > 0 {
			args = append(args, "--rps", fmt.Sprint(*ghzRate))
		}
		cmd := exec.Command("go", append(args, addr)...)
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
		// ghz's own CPU (with the go tool that ran it), on the same cores.
		client = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		return rep.Rps, p50, p99, client
	}
	targets := []struct {
		name, addr, call, data string
		pid                    int
	}{
		{"CheckPermission", z.addr, "sigil.v1.AuthorizerService/CheckPermission", checkFile, z.PID()},
		{"ext_authz Check", z.addr, "envoy.service.auth.v3.Authorization/Check", extFile, z.PID()},
		{"authorizer Health", z.addr, "grpc.health.v1.Health/Check", healthFile, z.PID()},
		{"reference Health", ref.addr, "grpc.health.v1.Health/Check", healthFile, ref.PID()},
	}
	const cp, ex, hc, rf = 0, 1, 2, 3 // indexes in targets
	ratios := make([][]float64, len(targets))
	var extVsCheck, extVsCheckCPU, ceiling, free []float64
	for round := range *ghzRounds {
		// Per target: ghz rps, and the server's and ghz's CPU per call.
		var rps, server, client [4]float64
		for i, tg := range targets {
			var p50, p99, clientCPU time.Duration
			cpu0 := procCPU(t, tg.pid)
			rps[i], p50, p99, clientCPU = run(tg.addr, tg.call, tg.data)
			// The server's own CPU per call (user and system, all threads),
			// which ghz's share of the same cores does not blur.
			perCall := (procCPU(t, tg.pid) - cpu0) / time.Duration(*ghzTotal)
			server[i], client[i] = float64(perCall), float64(clientCPU/time.Duration(*ghzTotal))
			fmt.Printf("ghz round %d: %-18s %8.0f rps  p50 %-10v p99 %-10v CPU/call: server %v, ghz %v\n",
				round, tg.name, rps[i], p50, p99, perCall, clientCPU/time.Duration(*ghzTotal))
		}
		for i := range targets {
			ratios[i] = append(ratios[i], rps[i]/rps[rf])
		}
		extVsCheck = append(extVsCheck, rps[ex]/rps[cp])
		extVsCheckCPU = append(extVsCheckCPU, server[cp]/server[ex])
		// ghz and the server share the machine's cores, both busy, so a
		// call's rps goes as 1 / (ghz's CPU + the server's CPU per call).
		// Were ext_authz as cheap for the server as the cheapest call it
		// answers (its own Health.Check: same chain, no work), ghz's own
		// cost of Envoy's messages would still bound ext_authz /
		// CheckPermission by this; were it free, by the second.
		ceiling = append(ceiling, (client[cp]+server[cp])/(client[ex]+server[hc]))
		free = append(free, (client[cp]+server[cp])/client[ex])
	}
	if *ghzRate > 0 {
		// At a fixed rate below every target's limit, rps ratios are 1 and
		// nothing is saturated: only the CPU per call compares.
		fmt.Printf("ghz: at %d rps: ext_authz Check / CheckPermission by server CPU per call: rounds %s, median %.2f\n",
			*ghzRate, fmtRatios(extVsCheckCPU), median(extVsCheckCPU))
		return
	}
	for i, tg := range targets[:rf] {
		fmt.Printf("ghz: %-18s / reference: rounds %s, median %.2f\n", tg.name, fmtRatios(ratios[i]), median(ratios[i]))
	}
	// ext_authz against CheckPermission, each round's two runs side by side.
	fmt.Printf("ghz: ext_authz Check / CheckPermission: rounds %s, median %.2f\n", fmtRatios(extVsCheck), median(extVsCheck))
	fmt.Printf("ghz: ext_authz Check / CheckPermission by server CPU per call: rounds %s, median %.2f\n", fmtRatios(extVsCheckCPU), median(extVsCheckCPU))
	fmt.Printf("ghz: ext_authz Check / CheckPermission ceiling from ghz's own CPU, ext_authz costing the server what its Health.Check does: rounds %s, median %.2f; nothing: rounds %s, median %.2f\n",
		fmtRatios(ceiling), median(ceiling), fmtRatios(free), median(free))
}

// procCPU returns the user and system CPU time process pid has used, from
// /proc (Linux; clock ticks of 10 ms).
func procCPU(t testing.TB, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name, which is in parentheses: state is
	// field 3, utime 14 and stime 15.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		t.Fatalf("/proc/%d/stat: %q", pid, b)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("/proc/%d/stat: %q", pid, b)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

func fmtRatios(rs []float64) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = fmt.Sprintf("%.2f", r)
	}
	return strings.Join(parts, " ")
}

func median(rs []float64) float64 {
	s := slices.Clone(rs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
