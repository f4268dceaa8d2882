package app

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/services/authorizer/internal/follower"
	"github.com/sigil-auth/sigil/services/authorizer/internal/follower/replicatest"
)

// TestCheckFailover: the authorizer in process with --authority A,B, two
// real authority replicas on one etcd. Checks run without pause while A,
// the stream's replica, is killed (-9): not one answers UNAVAILABLE (or
// anything but allowed), the failover is logged and counted, and a token
// revoked through B afterwards is denied, min_revision included.
func TestCheckFailover(t *testing.T) {
	c := replicatest.Start(t, 2)
	live, _ := c.Mint(0, "live")
	later, laterID := c.Mint(0, "later")
	z := runInProcess(t, Options{},
		"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
		"--authority", c.Addrs[0]+","+c.Addrs[1], "--authority-token-file", c.WatchTokenFile(),
		"--max-staleness", "5s", "--shutdown-timeout", "2s")
	t.Cleanup(func() {
		if err := z.stop(t, 10*time.Second); err != nil {
			t.Errorf("authorizer: %v", err)
		}
	})
	_, metricsAddr := listening(t, z.logs)
	z.waitServing(t, true)
	check := func(tok string, minRev uint64) (*sigilv1.CheckPermissionResponse, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return z.client.CheckPermission(ctx, &sigilv1.CheckPermissionRequest{Token: tok, Permission: "domain:view", OrgId: "org-a", MinRevision: minRev})
	}
	if r, err := check(live, 0); err != nil || !r.GetAllowed() {
		t.Fatalf("before the kill: %v, %v", r, err)
	}
	if !strings.Contains(z.logs.String(), `"replica":"`+c.Addrs[0]+`"`) {
		t.Fatalf("the stream did not open on A (%s); logs:\n%s", c.Addrs[0], z.logs.String())
	}

	var checks, unavailable, other atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				r, err := check(live, 0)
				checks.Add(1)
				switch {
				case status.Code(err) == codes.Unavailable:
					unavailable.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				case err != nil || !r.GetAllowed():
					other.Add(1)
					firstErr.CompareAndSwap(nil, status.Convert(err).Message()+" "+r.GetReason().String())
				}
			}
		})
	}
	c.Procs[0].Kill()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(z.logs.String(), follower.FailoverMessage) {
		if time.Now().After(deadline) {
			close(stop)
			wg.Wait()
			t.Fatalf("no failover logged within 10s; logs:\n%s", z.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond) // checks keep running on B, probes included
	close(stop)
	wg.Wait()
	if unavailable.Load() != 0 || other.Load() != 0 || checks.Load() < 50 {
		t.Fatalf("%d checks during the failover: %d UNAVAILABLE, %d not allowed (first: %v)", checks.Load(), unavailable.Load(), other.Load(), firstErr.Load())
	}
	if !strings.Contains(z.logs.String(), `"replica":"`+c.Addrs[1]+`","previous_replica":"`+c.Addrs[0]+`"`) {
		t.Fatalf("failover record does not name B after A; logs:\n%s", z.logs.String())
	}
	if n := metricValue(t, metricsAddr, "sigil_authorizer_failovers_total"); n != 1 {
		t.Fatalf("sigil_authorizer_failovers_total %v, want 1", n)
	}
	if n := metricValue(t, metricsAddr, "sigil_authorizer_failover_seconds_count"); n != 1 {
		t.Fatalf("sigil_authorizer_failover_seconds_count %v, want 1", n)
	}

	rev := c.Revoke(1, laterID)
	r, err := check(later, rev)
	if err != nil || r.GetAllowed() || r.GetReason() != sigilv1.DenyReason_DENY_REASON_REVOKED {
		t.Fatalf("token revoked through B, checked with min_revision %d: %v, %v", rev, r, err)
	}
	if r, err := check(live, 0); err != nil || !r.GetAllowed() {
		t.Fatalf("live token after the failover: %v, %v", r, err)
	}
}

// TestDNSAuthority: --authority dns:///localhost:PORT reaches the replica
// the name resolves to through gRPC's resolver (one balancing client): the
// authorizer serves, names the replica by its address, and denies a token
// revoked there.
func TestDNSAuthority(t *testing.T) {
	c := replicatest.Start(t, 1)
	tok, id := c.Mint(0, "t")
	_, port, _ := strings.Cut(c.Addrs[0], ":")
	z := runInProcess(t, Options{},
		"--listen", "127.0.0.1:0", "--metrics-listen", "",
		"--authority", "dns:///localhost:"+port, "--authority-token-file", c.WatchTokenFile(),
		"--max-staleness", "5s", "--shutdown-timeout", "2s")
	t.Cleanup(func() {
		if err := z.stop(t, 10*time.Second); err != nil {
			t.Errorf("authorizer: %v", err)
		}
	})
	z.waitServing(t, true)
	if !strings.Contains(z.logs.String(), `"replica":"`+c.Addrs[0]+`"`) {
		t.Fatalf("stream not named by the peer's address %s; logs:\n%s", c.Addrs[0], z.logs.String())
	}
	rev := c.Revoke(0, id)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := z.client.CheckPermission(ctx, &sigilv1.CheckPermissionRequest{Token: tok, Permission: "domain:view", OrgId: "org-a", MinRevision: rev})
	if err != nil || r.GetAllowed() || r.GetReason() != sigilv1.DenyReason_DENY_REASON_REVOKED {
		t.Fatalf("revoked token through dns:///: %v, %v", r, err)
	}
}
