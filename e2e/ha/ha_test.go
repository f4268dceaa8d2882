package ha

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sigil-auth/sigil/internal/etcdcluster"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

// staleness is the authorizers' --max-staleness in TestHA: longer than any
// step of the test during which they must keep answering.
const staleness = 30 * time.Second

// TestHA runs the system of three etcd members, two authority replicas
// and authorizers through member kills, quorum loss and return, a replica
// kill under authorizers that follow both replicas, and a restart of
// everything, checking the ledger of acknowledged mutations after each.
// The subtests run in order on one system; each leaves it whole.
func TestHA(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three etcd members, two authorities and authorizers")
	}
	s := newSystem(t, 2)
	a, b := s.replicas[0], s.replicas[1]
	az1, err := s.addAuthorizer("authorizer-1", a.addr, staleness)
	if err != nil {
		t.Fatal(err)
	}
	az2, err := s.addAuthorizer("authorizer-2", b.addr, staleness)
	if err != nil {
		t.Fatal(err)
	}
	l := newLedger()
	both := func() ([]*replica, []*authorizer) { return s.replicas, []*authorizer{az1, az2} }

	ld := startLoad(s, l, 2, both)
	defer ld.halt()
	waitMints(t, l, 20)
	var killed []*etcdcluster.Member

	t.Run("etcd_member_killed", func(t *testing.T) {
		// The leader: the harder case (an election under load).
		m := leader(t, s.etcd)
		m.Kill()
		killed = append(killed, m)
		t.Logf("killed etcd leader %s", m.Name)
		// Writes go on through both replicas: the load acknowledges more
		// mints; whatever was not acknowledged answered UNAVAILABLE (the
		// load records anything else as a violation).
		waitMints(t, l, 30)
		ld.halt()
		report(t, l, "one etcd member down")
		s.verify(t, l, s.replicas, []*authorizer{az1, az2})
	})
	if len(killed) == 0 {
		t.FailNow()
	}

	t.Run("quorum_lost", func(t *testing.T) {
		var second *etcdcluster.Member
		for _, m := range s.etcd.Members {
			if m.Running() {
				second = m
				break
			}
		}
		second.Kill()
		killed = append(killed, second)
		t.Logf("killed etcd member %s: one of three left", second.Name)
		mints, revs, _ := l.snapshot()
		// Within the staleness bound the authorizers answer from what they
		// hold (everything acknowledged, checked just before): every
		// acknowledged revocation is still denied, and nothing is
		// UNAVAILABLE. Without min_revision: a check with one waits for a
		// confirmation from the authority, which needs the quorum.
		n := 0
		var live string
		for id := range mints {
			if _, ok := revs[id]; !ok {
				live = id
				continue
			}
			for _, az := range []*authorizer{az1, az2} {
				resp, err := call(context.Background(), 10*time.Second, func(ctx context.Context) (*sigilv1.CheckPermissionResponse, error) {
					return az.authz.CheckPermission(ctx, &sigilv1.CheckPermissionRequest{Token: mints[id].token, Permission: "domain:view"})
				})
				if err != nil {
					t.Errorf("%s without etcd quorum, within the staleness bound: %v", az.name, err)
				} else if resp.GetAllowed() || resp.GetReason() != sigilv1.DenyReason_DENY_REASON_REVOKED {
					t.Errorf("%s without etcd quorum: revoked %s allowed %v, reason %v", az.name, id, resp.GetAllowed(), resp.GetReason())
				}
			}
			if n++; n == 20 {
				break
			}
		}
		// Writes, and reads (linearizable), through either replica answer
		// UNAVAILABLE, saying why (all at once: each waits for the store's
		// request timeout).
		var wg sync.WaitGroup
		for _, r := range s.replicas {
			wg.Add(3)
			go func() {
				defer wg.Done()
				_, err := call(s.opCtx, 30*time.Second, func(ctx context.Context) (*sigilv1.GetTokenResponse, error) {
					return r.mgmt.GetToken(ctx, &sigilv1.GetTokenRequest{TokenId: live})
				})
				wantUnavailable(t, "read via "+r.name, err)
			}()
			go func() {
				defer wg.Done()
				_, err := call(s.opCtx, 30*time.Second, func(ctx context.Context) (*sigilv1.CreateTokenResponse, error) {
					return r.mgmt.CreateToken(ctx, mintRequest("no-quorum-"+r.name))
				})
				wantUnavailable(t, "mint via "+r.name, err)
			}()
			go func() {
				defer wg.Done()
				_, err := call(s.opCtx, 30*time.Second, func(ctx context.Context) (*sigilv1.RevokeTokenResponse, error) {
					return r.mgmt.RevokeToken(ctx, &sigilv1.RevokeTokenRequest{TokenId: live})
				})
				wantUnavailable(t, "revoke via "+r.name, err)
			}()
		}
		wg.Wait()
	})

	t.Run("members_return", func(t *testing.T) {
		for _, m := range killed {
			m.Restart()
		}
		killed = nil
		if err := s.etcd.WaitHealthy(time.Minute); err != nil {
			t.Fatal(err)
		}
		for _, r := range s.replicas {
			waitWritable(t, s, r)
		}
		ld := startLoad(s, l, 2, both)
		defer ld.halt()
		waitMints(t, l, 20)
		ld.halt()
		report(t, l, "members returned")
		// Converged: both replicas hold every acknowledged mutation, both
		// authorizers deny every acknowledged revocation.
		s.verify(t, l, s.replicas, []*authorizer{az1, az2})
	})

	// Needs authorizer failover: --authority with several addresses.
	t.Run("replica_failover", func(t *testing.T) {
		var fs []*authorizer
		for i := range 2 {
			f, err := s.addAuthorizer(fmt.Sprintf("authorizer-ab-%d", i+1), a.addr+","+b.addr, staleness)
			if err != nil {
				t.Fatalf("authorizer with --authority %s,%s (authorizer failover): %v", a.addr, b.addr, err)
			}
			fs = append(fs, f)
		}
		ld := startLoad(s, l, 2, func() ([]*replica, []*authorizer) { return s.replicas, fs })
		defer ld.halt()
		waitMints(t, l, 20)
		a.kill()
		t.Logf("killed %s", a.name)
		defer func() {
			if err := s.startReplica(a); err != nil {
				t.Fatal(err)
			}
		}()
		// Mints through a fail (UNAVAILABLE), through b go on; the
		// authorizers resume on b and never answer UNAVAILABLE.
		waitMints(t, l, 30)
		ld.halt()
		report(t, l, "replica killed")
		s.verify(t, l, []*replica{b}, fs)
	})

	t.Run("restart_everything", func(t *testing.T) {
		_, _, maxRev := l.snapshot()
		for _, az := range s.authorizers {
			az.kill()
		}
		for _, r := range s.replicas {
			r.kill()
		}
		for _, m := range s.etcd.Members {
			m.Kill()
		}
		for _, m := range s.etcd.Members {
			m.Restart()
		}
		if err := s.etcd.WaitHealthy(time.Minute); err != nil {
			t.Fatal(err)
		}
		for _, r := range s.replicas {
			if err := s.startReplica(r); err != nil {
				t.Fatal(err)
			}
		}
		for _, az := range s.authorizers {
			if err := s.startAuthorizer(az); err != nil {
				t.Fatal(err)
			}
		}
		s.verify(t, l, s.replicas, s.authorizers)
		// Revisions never went backwards: a new revocation comes after
		// every acknowledged one.
		mints, revs, _ := l.snapshot()
		for id := range mints {
			if _, ok := revs[id]; ok {
				continue
			}
			rr, err := call(s.opCtx, 15*time.Second, func(ctx context.Context) (*sigilv1.RevokeTokenResponse, error) {
				return b.mgmt.RevokeToken(ctx, &sigilv1.RevokeTokenRequest{TokenId: id})
			})
			if err != nil {
				t.Fatalf("revoke after the restart: %v", err)
			}
			if rr.GetRevision() <= maxRev {
				t.Errorf("revocation after the restart at revision %d, at or below the acknowledged %d", rr.GetRevision(), maxRev)
			}
			break
		}
	})
}

// leader returns the etcd leader, waiting for one up to 30 s.
func leader(t *testing.T, c *etcdcluster.Cluster) *etcdcluster.Member {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		m, err := c.Leader(ctx)
		cancel()
		if err == nil {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitMints waits until the ledger holds n more acknowledged mints than
// now, failing after a minute.
func waitMints(t *testing.T, l *ledger, n int) {
	t.Helper()
	count := func() int {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.minted)
	}
	want := count() + n
	deadline := time.Now().Add(time.Minute)
	for count() < want {
		if time.Now().After(deadline) {
			t.Fatalf("%d acknowledged mints after a minute, want %d", count(), want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitWritable waits up to 30 s until a mint through r is acknowledged.
func waitWritable(t *testing.T, s *system, r *replica) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		_, err := call(s.opCtx, 10*time.Second, func(ctx context.Context) (*sigilv1.CreateTokenResponse, error) {
			return r.mgmt.CreateToken(ctx, mintRequest(fmt.Sprintf("writable-%s-%d-%d", r.name, time.Now().UnixNano(), i)))
		})
		if err == nil {
			return
		}
		if status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
			t.Fatalf("%s not writable after the members returned: %v", r.name, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// wantUnavailable fails t unless err is UNAVAILABLE with a message naming
// the cause.
func wantUnavailable(t *testing.T, what string, err error) {
	t.Helper()
	if status.Code(err) != codes.Unavailable {
		t.Errorf("%s without quorum: %v, want UNAVAILABLE", what, err)
		return
	}
	if msg := status.Convert(err).Message(); !strings.Contains(msg, "no quorum") {
		t.Errorf("%s without quorum: message %q does not name the cause", what, msg)
	}
	t.Logf("%s without quorum: %v", what, err)
}
