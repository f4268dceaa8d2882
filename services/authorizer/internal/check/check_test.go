package check

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sigil-auth/sigil/pkg/grpcserver"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/services/authorizer/internal/decision"
)

func TestDenyReasonMappingIsOneToOne(t *testing.T) {
	seen := map[sigilv1.DenyReason]decision.Reason{}
	for _, r := range decision.Reasons() {
		d := DenyReason(r)
		if prev, dup := seen[d]; dup {
			t.Fatalf("%v and %v both map to %v", prev, r, d)
		}
		seen[d] = r
		if (d == sigilv1.DenyReason_DENY_REASON_UNSPECIFIED) != (r == decision.Allow) {
			t.Fatalf("%v maps to %v", r, d)
		}
	}
	if len(seen) != len(sigilv1.DenyReason_name) {
		t.Fatalf("%d reasons mapped, the API has %d", len(seen), len(sigilv1.DenyReason_name))
	}
}

// fakeFollower is a follower whose state the test sets; WaitFor returns
// when the revision is reached (see advance) or ctx ends, and records
// whether ctx had a deadline.
type fakeFollower struct {
	mu            sync.Mutex
	ready, synced bool
	rev           uint64
	changed       chan struct{}
	hadDeadline   bool
	waits         int
	entered       chan struct{} // receives once per WaitFor call
}

func newFake(ready, synced bool, rev uint64) *fakeFollower {
	return &fakeFollower{ready: ready, synced: synced, rev: rev, changed: make(chan struct{}), entered: make(chan struct{}, 8)}
}

func (f *fakeFollower) Ready() bool      { f.mu.Lock(); defer f.mu.Unlock(); return f.ready }
func (f *fakeFollower) Synced() bool     { f.mu.Lock(); defer f.mu.Unlock(); return f.synced }
func (f *fakeFollower) Revision() uint64 { f.mu.Lock(); defer f.mu.Unlock(); return f.rev }

func (f *fakeFollower) WaitFor(ctx context.Context, rev uint64) error {
	f.mu.Lock()
	_, f.hadDeadline = ctx.Deadline()
	f.waits++
	f.mu.Unlock()
	f.entered <- struct{}{}
	for {
		f.mu.Lock()
		reached, changed := f.rev >= rev, f.changed
		f.mu.Unlock()
		if reached {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// advance applies rev and sets readiness.
func (f *fakeFollower) advance(rev uint64, ready bool) {
	f.mu.Lock()
	f.rev, f.ready = rev, ready
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

func wantUnavailable(t *testing.T, err error, msg string) {
	t.Helper()
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), msg) {
		t.Fatalf("err = %v, want UNAVAILABLE containing %q", err, msg)
	}
}

func TestReady(t *testing.T) {
	if err := Ready(newFake(true, true, 1)); err != nil {
		t.Fatalf("ready follower: %v", err)
	}
	wantUnavailable(t, Ready(newFake(false, false, 0)), "not yet synced")
	wantUnavailable(t, Ready(newFake(false, true, 1)), "--max-staleness")
}

func TestAwait(t *testing.T) {
	ctx := context.Background()
	t.Run("not ready: no wait", func(t *testing.T) {
		f := newFake(false, true, 10)
		wantUnavailable(t, Await(ctx, f, 20, time.Hour, nil), "--max-staleness")
		if f.waits != 0 {
			t.Fatal("waited while not ready")
		}
	})
	t.Run("no min_revision: no wait", func(t *testing.T) {
		f := newFake(true, true, 10)
		if err := Await(ctx, f, 0, time.Hour, nil); err != nil {
			t.Fatal(err)
		}
		if f.waits != 0 {
			t.Fatal("waited without min_revision")
		}
	})
	t.Run("revision applied: still waits for the confirmation", func(t *testing.T) {
		// After a restore an applied number may be of the old history: the
		// follower's WaitFor (a probe sent after the call began) decides.
		f := newFake(true, true, 10)
		for _, rev := range []uint64{5, 10} {
			go func() { <-f.entered }()
			if err := Await(ctx, f, rev, time.Hour, nil); err != nil {
				t.Fatalf("min_revision %d: %v", rev, err)
			}
		}
		if f.waits != 2 {
			t.Fatalf("%d waits for two min_revision checks, want 2", f.waits)
		}
	})
	t.Run("deadline passes", func(t *testing.T) {
		f := newFake(true, true, 10)
		ctx, cancel := context.WithCancel(ctx)
		cancel()
		wantUnavailable(t, Await(ctx, f, 20, time.Hour, nil), "min_revision 20 not reached and confirmed by the authority before the deadline (applied revision 10)")
	})
	t.Run("no deadline: bounded by max wait", func(t *testing.T) {
		for _, maxWait := range []time.Duration{time.Millisecond, 0} {
			f := newFake(true, true, 10)
			done := make(chan error, 1)
			go func() { done <- Await(ctx, f, 20, maxWait, nil) }()
			if maxWait == 0 {
				// DefaultMaxWait applies: bring the revision once the wait
				// began, so the test does not wait it out.
				<-f.entered
				f.advance(20, true)
				if err := <-done; err != nil {
					t.Fatalf("revision arrived: %v", err)
				}
			} else {
				wantUnavailable(t, <-done, "min_revision 20 not reached")
			}
			f.mu.Lock()
			had := f.hadDeadline
			f.mu.Unlock()
			if !had {
				t.Fatalf("max wait %v: the wait had no deadline", maxWait)
			}
		}
	})
	t.Run("stale after the wait", func(t *testing.T) {
		f := newFake(true, true, 10)
		done := make(chan error, 1)
		go func() { done <- Await(ctx, f, 20, time.Hour, nil) }()
		<-f.entered
		f.advance(20, false)
		wantUnavailable(t, <-done, "--max-staleness")
	})
}

func TestParkedWaitsAreBounded(t *testing.T) {
	limits := grpcserver.NewLimits(nil)
	p := NewParking(2, limits)
	f := newFake(true, true, 10)
	// The timeout only guards a wait that should have been refused.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Two waits park (below the bound).
	done := make(chan error, 2)
	for range 2 {
		go func() { done <- Await(ctx, f, 20, time.Hour, p) }()
		<-f.entered
	}
	// The third is refused at once, and counted.
	err := Await(ctx, f, 20, time.Hour, p)
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("third wait: %v, want RESOURCE_EXHAUSTED", err)
	}
	if n := limits.Count(grpcserver.LimitParkedWaits); n != 1 {
		t.Fatalf("parked_waits refusals = %d, want 1", n)
	}
	// A call without min_revision takes no slot.
	if err := Await(ctx, f, 0, time.Hour, p); err != nil {
		t.Fatalf("no wait needed: %v", err)
	}
	// One whose revision is applied still waits for a confirmation: it
	// needs a slot too.
	if err := Await(ctx, f, 5, time.Hour, p); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("applied min_revision with every slot taken: %v, want RESOURCE_EXHAUSTED", err)
	}
	// The parked waits end: their slots are free again.
	f.advance(20, true)
	for range 2 {
		if err := <-done; err != nil {
			t.Fatalf("parked wait: %v", err)
		}
	}
	go func() { done <- Await(ctx, f, 30, time.Hour, p) }()
	<-f.entered
	f.advance(30, true)
	if err := <-done; err != nil {
		t.Fatalf("wait after slots freed: %v", err)
	}
	if n := limits.Count(grpcserver.LimitParkedWaits); n != 2 {
		t.Fatalf("parked_waits refusals = %d after slots freed, want 2", n)
	}
}
