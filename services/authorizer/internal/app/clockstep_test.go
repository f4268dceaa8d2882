package app

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sigil-auth/sigil/internal/faultproxy"
	"github.com/sigil-auth/sigil/internal/testproc"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/services/authorizer/internal/config"
)

// steppedClock is the real wall clock plus an offset the test steps, as
// NTP or an operator would; the process's monotonic clock is untouched.
type steppedClock struct{ offset atomic.Int64 }

func (c *steppedClock) Now() time.Time                     { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *steppedClock) set(d time.Duration)                { c.offset.Store(int64(d)) }
func (c *steppedClock) step(d time.Duration) (undo func()) { c.set(d); return func() { c.set(0) } }

// TestClockStep is the fault suite's clock-step scenario (it lives here
// because only this module path may run the authorizer in process): the
// real authority binary, the authorizer in process with a wall clock the
// test steps, joined by the fault proxy. A step can neither make a stale
// authorizer Ready (freshness is monotonic), nor a fresh one stale; token
// times follow the stepped wall clock, with the leeway. Steps stay within
// --max-clock-skew (5m) where the authorizer must keep serving: beyond it
// the clock itself makes it fail closed (TestClockSkewBound).
func TestClockStep(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the real authority (run without -short)")
	}
	dir := t.TempDir()
	authorityAddr := testproc.FreeAddr(t)
	a := testproc.StartWith(t, testproc.Options{Name: "authority"}, testproc.MustBuild(t, "services/authority"),
		"--listen", authorityAddr, "--metrics-listen", "127.0.0.1:0", "--data-dir", dir,
		"--min-ttl", "1m", "--shutdown-timeout", "5s")
	if err := a.WaitRecord(30*time.Second, "listening", nil); err != nil {
		t.Fatal(err)
	}
	proxy, err := faultproxy.New(authorityAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })

	const maxStaleness = 2 * time.Second
	cfg, err := config.Parse([]string{
		"--listen", "127.0.0.1:0", "--authority", proxy.Addr(), "--authority-token-file", filepath.Join(dir, "watch.token"),
		"--max-staleness", maxStaleness.String(), "--clock-leeway", "30s", "--max-clock-skew", "5m", "--shutdown-timeout", "2s",
	}, func(string) (string, bool) { return "", false }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	wall := &steppedClock{}
	logs := &testproc.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- RunWith(ctx, cfg, Options{Now: wall.Now, LogOut: logs}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("authorizer: %v", err)
		}
	})
	addr, _ := listening(t, logs)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	health := healthpb.NewHealthClient(conn)
	client := sigilv1.NewAuthorizerServiceClient(conn)
	serving := func() bool {
		resp, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{})
		return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
	}
	waitServing := func(want bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for serving() != want {
			if time.Now().After(deadline) {
				t.Fatalf("health SERVING never became %v", want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	// Two tokens: one living 10 days, one 2 minutes.
	op, err := os.ReadFile(filepath.Join(dir, "operator.token"))
	if err != nil {
		t.Fatal(err)
	}
	aconn, err := grpc.NewClient(authorityAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { aconn.Close() })
	mgmt := sigilv1.NewTokenAuthorityServiceClient(aconn)
	opCtx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+strings.TrimSpace(string(op)))
	mint := func(name string, ttl time.Duration) string {
		t.Helper()
		resp, err := mgmt.CreateToken(opCtx, &sigilv1.CreateTokenRequest{
			OrgId: "org-a", Name: name, CreatedBy: "alice", Expiry: &sigilv1.CreateTokenRequest_Ttl{Ttl: durationpb.New(ttl)},
			Grants: []*sigilv1.Grant{{Permissions: []string{"domain:view"}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetToken()
	}
	long, short := mint("long", 240*time.Hour), mint("short", 2*time.Minute)
	decide := func(tok string) (bool, sigilv1.DenyReason, codes.Code) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := client.CheckPermission(ctx, &sigilv1.CheckPermissionRequest{Token: tok, Permission: "domain:view", OrgId: "org-a"})
		return resp.GetAllowed(), resp.GetReason(), status.Code(err)
	}
	want := func(what, tok string, allowed bool, reason sigilv1.DenyReason) {
		t.Helper()
		got, r, code := decide(tok)
		if code != codes.OK || got != allowed || r != reason {
			t.Fatalf("%s: allowed %v %v (%v), want allowed %v %v", what, got, r, code, allowed, reason)
		}
	}
	waitServing(true)
	want("fresh, unstepped: long", long, true, sigilv1.DenyReason_DENY_REASON_UNSPECIFIED)
	want("fresh, unstepped: short", short, true, sigilv1.DenyReason_DENY_REASON_UNSPECIFIED)

	// Fresh, the wall clock four minutes ahead: still fresh; the 2-minute
	// token is past its expiry by more than the leeway.
	undo := wall.step(4 * time.Minute)
	time.Sleep(2 * maxStaleness) // freshness must outlast the step
	if !serving() {
		t.Fatal("a forward wall-clock step made a fresh authorizer stale")
	}
	want("+4m: long", long, true, sigilv1.DenyReason_DENY_REASON_UNSPECIFIED)
	want("+4m: short", short, false, sigilv1.DenyReason_DENY_REASON_EXPIRED)
	// Four minutes behind: the tokens' issue times are ahead, beyond the
	// leeway.
	wall.set(-4 * time.Minute)
	want("-4m: long", long, false, sigilv1.DenyReason_DENY_REASON_NOT_YET_VALID)
	// Within the leeway either way: still valid.
	wall.set(20 * time.Second)
	want("+20s: short", short, true, sigilv1.DenyReason_DENY_REASON_UNSPECIFIED)
	undo()

	// Stale: the link is paused beyond --max-staleness. Stepping the wall
	// clock back or forward by an hour must not make it Ready.
	proxy.Pause()
	waitServing(false)
	for _, d := range []time.Duration{-time.Hour, time.Hour, 0} {
		wall.set(d)
		for range 10 {
			if serving() {
				t.Fatalf("wall clock stepped %v: a stale authorizer is SERVING", d)
			}
			if _, _, code := decide(long); code != codes.Unavailable {
				t.Fatalf("wall clock stepped %v: a stale authorizer answered (%v)", d, code)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	proxy.Resume()
	waitServing(true)
	want("recovered: long", long, true, sigilv1.DenyReason_DENY_REASON_UNSPECIFIED)
}
