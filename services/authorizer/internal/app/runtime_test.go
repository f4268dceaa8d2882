package app

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sigil-auth/sigil/internal/testproc"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/services/authorizer/internal/config"
)

// inProcess is an authorizer run in process by RunWith.
type inProcess struct {
	logs   *testproc.Buffer
	addr   string
	health healthpb.HealthClient
	client sigilv1.AuthorizerServiceClient
	cancel context.CancelFunc
	done   chan error
}

func runInProcess(t *testing.T, opts Options, args ...string) *inProcess {
	t.Helper()
	cfg, err := config.Parse(args, func(string) (string, bool) { return "", false }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	p := &inProcess{logs: &testproc.Buffer{}, done: make(chan error, 1)}
	opts.LogOut = p.logs
	var ctx context.Context
	ctx, p.cancel = context.WithCancel(context.Background())
	go func() { p.done <- RunWith(ctx, cfg, opts) }()
	p.addr, _ = listening(t, p.logs)
	conn, err := grpc.NewClient(p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	p.health, p.client = healthpb.NewHealthClient(conn), sigilv1.NewAuthorizerServiceClient(conn)
	return p
}

// stop cancels the run and returns its error; bound only guards a hang.
func (p *inProcess) stop(t *testing.T, bound time.Duration) error {
	t.Helper()
	p.cancel()
	select {
	case err := <-p.done:
		return err
	case <-time.After(bound):
		t.Fatalf("RunWith did not return within %s of the cancellation", bound)
		return nil
	}
}

func (p *inProcess) serving() bool {
	resp, err := p.health.Check(context.Background(), &healthpb.HealthCheckRequest{})
	return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
}

func (p *inProcess) waitServing(t *testing.T, want bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for p.serving() != want {
		if time.Now().After(deadline) {
			t.Fatalf("health SERVING never became %v; logs:\n%s", want, p.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startAuthorityBinary runs the real authority on a free port.
func startAuthorityBinary(t *testing.T, dir string) (addr string, mgmt sigilv1.TokenAuthorityServiceClient, op context.Context) {
	t.Helper()
	addr = testproc.FreeAddr(t)
	a := testproc.StartWith(t, testproc.Options{Name: "authority"}, testproc.MustBuild(t, "services/authority"),
		"--listen", addr, "--metrics-listen", "127.0.0.1:0", "--data-dir", dir, "--shutdown-timeout", "5s")
	if err := a.WaitRecord(30*time.Second, "listening", nil); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "operator.token"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return addr, sigilv1.NewTokenAuthorityServiceClient(conn),
		metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+strings.TrimSpace(string(b)))
}

// TestClockSkewBound: the real authority binary, the authorizer in process
// with a wall clock offset by the test. Beyond --max-clock-skew (here its
// default, the 30s --clock-leeway) it is NOT_SERVING and every check is
// UNAVAILABLE, with one ERROR line; back within the bound it serves again.
func TestClockSkewBound(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the real authority (run without -short)")
	}
	dir := t.TempDir()
	authorityAddr, mgmt, op := startAuthorityBinary(t, dir)
	wall := &steppedClock{}
	z := runInProcess(t, Options{Now: wall.Now},
		"--listen", "127.0.0.1:0", "--authority", authorityAddr, "--authority-token-file", filepath.Join(dir, "watch.token"),
		"--max-staleness", "2s", "--clock-leeway", "30s", "--shutdown-timeout", "2s")
	t.Cleanup(func() {
		if err := z.stop(t, 10*time.Second); err != nil {
			t.Errorf("authorizer: %v", err)
		}
	})
	resp, err := mgmt.CreateToken(op, &sigilv1.CreateTokenRequest{
		OrgId: "org-a", Name: "skew", CreatedBy: "alice", Expiry: &sigilv1.CreateTokenRequest_Ttl{Ttl: durationpb.New(240 * time.Hour)},
		Grants: []*sigilv1.Grant{{Permissions: []string{"domain:view"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	tok := resp.GetToken()
	check := func() (*sigilv1.CheckPermissionResponse, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return z.client.CheckPermission(ctx, &sigilv1.CheckPermissionRequest{Token: tok, Permission: "domain:view", OrgId: "org-a"})
	}
	z.waitServing(t, true)
	if r, err := check(); err != nil || !r.GetAllowed() {
		t.Fatalf("in bound: %v, %v", r, err)
	}

	// Twelve minutes behind (the incident): fail closed.
	wall.set(-12 * time.Minute)
	z.waitServing(t, false)
	for range 5 {
		_, err := check()
		if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "max-clock-skew") {
			t.Fatalf("beyond the bound: %v, want UNAVAILABLE naming --max-clock-skew", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := strings.Count(z.logs.String(), "more than --max-clock-skew"); n != 1 {
		t.Fatalf("%d skew error lines, want 1; logs:\n%s", n, z.logs.String())
	}
	// Ahead works alike.
	wall.set(time.Minute)
	z.waitServing(t, false)
	// Back within the bound (20s ahead, below 30s): serving again.
	wall.set(20 * time.Second)
	z.waitServing(t, true)
	if r, err := check(); err != nil || !r.GetAllowed() {
		t.Fatalf("back in bound: %v, %v", r, err)
	}
}

// TestWrongServerAtAuthority: --authority names a gRPC server that is not
// a Sigil authority (the refserver binary), then this authorizer itself.
// Each gets one ERROR line, the metric counts the attempts, and the
// authorizer stays NOT_SERVING without a warning per retry.
func TestWrongServerAtAuthority(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the refserver binary (run without -short)")
	}
	ref := testproc.StartWith(t, testproc.Options{Name: "refserver"}, testproc.MustBuild(t, "internal/refserver"), "--listen", "127.0.0.1:0")
	var rec struct{ Addr string }
	if err := ref.WaitRecord(30*time.Second, "listening", &rec); err != nil {
		t.Fatal(err)
	}
	self := testproc.FreeAddr(t)
	for _, c := range []struct {
		name, authority, listen, want string
	}{
		{"refserver", rec.Addr, "127.0.0.1:0", "it is not a Sigil authority"},
		{"self", self, self, "this authorizer's own listen address"},
	} {
		t.Run(c.name, func(t *testing.T) {
			z := runInProcess(t, Options{},
				"--listen", c.listen, "--metrics-listen", "127.0.0.1:0", "--authority", c.authority, "--max-staleness", "2s", "--shutdown-timeout", "2s")
			_, metricsAddr := listening(t, z.logs)
			// Several retries at the capped backoff (2s).
			deadline := time.Now().Add(20 * time.Second)
			for metricValue(t, metricsAddr, "sigil_authorizer_stream_wrong_server_total") < 3 {
				if time.Now().After(deadline) {
					t.Fatalf("wrong-server attempts not counted; logs:\n%s", z.logs.String())
				}
				time.Sleep(100 * time.Millisecond)
			}
			if z.serving() {
				t.Fatal("SERVING against a server that is not an authority")
			}
			logs := z.logs.String()
			if n := strings.Count(logs, c.want); n != 1 || !strings.Contains(logs, `"level":"ERROR"`) {
				t.Fatalf("%d lines naming %q, want 1 ERROR line; logs:\n%s", n, c.want, logs)
			}
			if n := strings.Count(logs, "revocation stream broken"); n != 0 {
				t.Fatalf("%d warnings per retry, want none; logs:\n%s", n, logs)
			}
			if err := z.stop(t, 10*time.Second); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestStopBoundedAndTruthful: a stop step that never finishes (a hook)
// makes RunWith return an error within --shutdown-timeout, with an ERROR
// line and without "stopped"; a stop that finishes logs "stopped" last.
func TestStopBoundedAndTruthful(t *testing.T) {
	block := make(chan struct{})
	t.Cleanup(func() { close(block) })
	z := runInProcess(t, Options{stopHook: func() { <-block }},
		"--listen", "127.0.0.1:0", "--authority", "127.0.0.1:1", "--max-staleness", "2s", "--shutdown-timeout", "1s")
	err := z.stop(t, 30*time.Second)
	if err == nil || !strings.Contains(err.Error(), "--shutdown-timeout") {
		t.Fatalf("RunWith = %v, want an error naming --shutdown-timeout", err)
	}
	logs := z.logs.String()
	if !strings.Contains(logs, "stop did not finish within --shutdown-timeout") || strings.Contains(logs, `"msg":"stopped"`) {
		t.Fatalf("logs do not tell the unfinished stop, or claim stopped:\n%s", logs)
	}

	z = runInProcess(t, Options{}, "--listen", "127.0.0.1:0", "--authority", "127.0.0.1:1", "--max-staleness", "2s", "--shutdown-timeout", "1s")
	if err := z.stop(t, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(z.logs.String()), "\n")
	if last := lines[len(lines)-1]; !strings.Contains(last, `"msg":"stopped"`) {
		t.Fatalf("last line %s, want stopped", last)
	}
}

// metricValue scrapes one unlabelled sample from the metrics endpoint (-1
// when absent or unreachable).
func metricValue(t *testing.T, metricsAddr, name string) float64 {
	t.Helper()
	res, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		return -1
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}
