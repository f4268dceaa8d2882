package follower

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sigil-auth/sigil/internal/faultproxy"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/services/authorizer/internal/authoritytest"
)

// A link that delays every byte beyond --max-staleness keeps delivering
// checkpoints (late), yet the follower must not count as fresh: its probes
// are answered too late to vouch for anything. Real TCP through the fault
// proxy, the real monotonic clock.
func TestDelayedLinkIsNotFresh(t *testing.T) {
	fake, addr := authoritytest.StartTCP(t)
	proxy, err := faultproxy.New(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	conn, err := grpc.NewClient(proxy.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	const maxStaleness = 300 * time.Millisecond
	f := New(Options{
		Client: sigilv1.NewTokenAuthorityServiceClient(conn), MaxStaleness: maxStaleness,
		ProbeInterval: 50 * time.Millisecond, IdleTimeout: 5 * time.Second,
		BackoffBase: 5 * time.Millisecond, BackoffMax: 20 * time.Millisecond,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = f.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	s := fake.Next(t)
	s.Send(t, chunk("e1", 10, nil), snapEnd("e1", 10))
	waitFor(t, "ready", f.Ready)

	// Every byte now takes 3× the staleness bound; checkpoints go on every
	// 50ms, so one arrives far more often than the bound.
	proxy.Delay(3 * maxStaleness)
	stop := make(chan struct{})
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for rev := uint64(11); ; rev++ {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			s.Send(t, checkpoint(rev))
		}
	}()
	waitFor(t, "not ready under the delay", func() bool { return !f.Ready() })
	// Checkpoints keep arriving while it stays not ready.
	before := f.Stats().Checkpoints
	for f.Stats().Checkpoints < before+10 {
		if f.Ready() {
			t.Fatal("ready while every byte is delayed beyond the staleness bound")
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	<-sent
	proxy.Resume()
	waitFor(t, "ready once the link is prompt again", f.Ready)
}

// A probe answered "not in history" (the authority was restored from a
// backup) ends the stream at once: the follower asks again and is not
// fresh until the new snapshot.
func TestProbeNotInHistoryReconnects(t *testing.T) {
	h := start(t)
	s, _ := syncBasic(t, h)
	if !h.f.Ready() {
		t.Fatal("not ready after the snapshot")
	}
	h.fake.SetConfirm(func(*sigilv1.ConfirmHistoryRequest) (*sigilv1.ConfirmHistoryResponse, error) {
		return &sigilv1.ConfirmHistoryResponse{InHistory: false, Revision: 7}, nil
	})
	h.f.RequestProbe()
	s2 := h.next(t)
	if h.f.Ready() {
		t.Fatal("ready on a state the authority's history does not hold")
	}
	if h.f.Stats().Diverged == 0 {
		t.Fatal("divergence not counted")
	}
	_ = s
	h.fake.SetConfirm(nil)
	s2.Send(t, chunk("e1", 7, nil), snapEnd("e1", 7))
	waitFor(t, "ready on the new snapshot", h.f.Ready)
	if h.f.Revision() != 7 {
		t.Fatalf("revision %d, want the restored 7", h.f.Revision())
	}
}

// The restore window: the follower applied revision 20 of the old history;
// the restored authority is at 12 and acknowledges a revocation at 13. A
// check with min_revision 13, begun after that, must not be answered from
// the old state (20 ≥ 13 "already applied"): it waits for a probe sent
// after it began, which finds the state out of history, and is answered
// only on the restored history's snapshot, which holds the revocation.
func TestMinRevisionAcrossRestore(t *testing.T) {
	h := start(t)
	h.tick.Store(true)
	s := h.next(t)
	s.Send(t, chunk("e1", 20, nil), snapEnd("e1", 20))
	waitFor(t, "ready", h.f.Ready)

	restored := authoritytest.Digest("restored", 13)
	h.fake.SetConfirm(func(req *sigilv1.ConfirmHistoryRequest) (*sigilv1.ConfirmHistoryResponse, error) {
		return &sigilv1.ConfirmHistoryResponse{InHistory: false, Revision: 13}, nil
	})
	got := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go func() { got <- h.f.WaitFor(ctx, 13) }()

	s2 := h.next(t) // the probe found the state out of history: reconnected
	select {
	case err := <-got:
		t.Fatalf("min_revision 13 answered (%v) from the old history's revision %d", err, h.f.Revision())
	default:
	}
	h.fake.SetConfirm(nil)
	gone := tid(t)
	s2.Send(t, chunk("e1", 13, nil, revokedTok(0, gone, t0.Add(time.Hour))), authoritytest.SnapshotEndDigest("e1", 13, restored))
	if err := <-got; err != nil {
		t.Fatalf("min_revision 13 after the restored snapshot: %v", err)
	}
	if !isRevoked(h.f, gone) || h.f.Revision() != 13 {
		t.Fatalf("answered at revision %d without the restored history's revocation", h.f.Revision())
	}
}

// A min_revision already applied still waits for a probe sent after the
// call began; concurrent calls share probes.
func TestWaitForNeedsAFreshProbe(t *testing.T) {
	h := start(t)
	h.tick.Store(true)
	syncBasic(t, h)
	block := make(chan struct{})
	h.fake.SetConfirm(func(*sigilv1.ConfirmHistoryRequest) (*sigilv1.ConfirmHistoryResponse, error) {
		<-block
		return &sigilv1.ConfirmHistoryResponse{InHistory: true, Revision: 10}, nil
	})
	const n = 20
	got := make(chan error, n)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for range n {
		go func() { got <- h.f.WaitFor(ctx, 10) }()
	}
	waitFor(t, "a probe sent", func() bool { return len(h.fake.Probes()) > 0 })
	select {
	case err := <-got:
		t.Fatalf("min_revision 10 answered (%v) before any probe sent after the call was answered", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(block)
	for range n {
		if err := <-got; err != nil {
			t.Fatal(err)
		}
	}
	// One probe in flight when the calls came, at most one more after it
	// for all of them, plus the periodic ones meanwhile.
	if p := len(h.fake.Probes()); p > 4 {
		t.Fatalf("%d probes for %d concurrent calls, want them coalesced", p, n)
	}
}

// A live event that does not follow the applied revision (previous_revision
// differs: a message was lost) is not applied; the stream is dropped and
// resumed from the last digest.
func TestLiveEventGapReconnects(t *testing.T) {
	h := start(t)
	s, _ := syncBasic(t, h)
	ok := evRevoked(12, tid(t), t0.Add(time.Hour))
	prev := uint64(10)
	ok.PreviousRevision = &prev
	s.Send(t, ok)
	h.waitRev(t, 12)
	lost := tid(t)
	gap := evRevoked(15, lost, t0.Add(time.Hour))
	prev2 := uint64(13) // 13 was sent and lost
	gap.PreviousRevision = &prev2
	s.Send(t, gap)
	s2 := h.next(t)
	if isRevoked(h.f, lost) || h.f.Stats().Gaps != 1 {
		t.Fatalf("event after a gap applied (gaps %d)", h.f.Stats().Gaps)
	}
	if s2.Req.GetAfterRevision() != 10 {
		t.Fatalf("resume after %d, want 10 (the last digest)", s2.Req.GetAfterRevision())
	}
}
