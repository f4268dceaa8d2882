package follower

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/pkg/token"
	"github.com/sigil-auth/sigil/services/authorizer/internal/authoritytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

type harness struct {
	f     *Follower
	fake  *authoritytest.Fake
	clock *authoritytest.Clock // wall clock: token times, the authority's time
	mono  atomic.Int64         // monotonic source, nanoseconds since start
	// tick makes every reading of the monotonic source 1ns later than the
	// one before, as a real clock moves between two events; off, it moves
	// only when the test says.
	tick atomic.Bool
}

// advance moves both clocks by d, as time passing does.
func (h *harness) advance(d time.Duration) {
	h.clock.Add(d)
	h.mono.Add(int64(d))
}

// start serves a fake authority and runs a follower against it; every
// stream the follower opens is a session of h.fake.
func start(t *testing.T) *harness { t.Helper(); return startWith(t, nil) }

// startWith is start with the options changed by opt (nil: none).
func startWith(t *testing.T, opt func(*Options)) *harness {
	t.Helper()
	h := &harness{clock: authoritytest.NewClock(t0)}
	var conn *grpc.ClientConn
	h.fake, conn = authoritytest.Start(t)
	opts := Options{
		Client:     sigilv1.NewTokenAuthorityServiceClient(conn),
		Credential: func() (string, error) { return "watch-secret", nil },
		Now:        h.clock.Now,
		Elapsed: func() time.Duration {
			if h.tick.Load() {
				return time.Duration(h.mono.Add(1))
			}
			return time.Duration(h.mono.Load())
		},
		MaxStaleness: 30 * time.Second,
		Retention:    time.Minute,
		BackoffBase:  5 * time.Millisecond,
		BackoffMax:   20 * time.Millisecond,
	}
	if opt != nil {
		opt(&opts)
	}
	h.f = New(opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = h.f.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return h
}

// next returns the next stream the follower opens.
func (h *harness) next(t *testing.T) *authoritytest.Session { return h.fake.Next(t) }

// waitRev waits until the follower applied rev.
func (h *harness) waitRev(t *testing.T, rev uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.f.WaitApplied(ctx, rev); err != nil {
		t.Fatalf("revision %d not applied (at %d): %v", rev, h.f.Revision(), err)
	}
}

// waitFor polls cond; used only where no revision marks the change.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func pubKey(t *testing.T) []byte {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func tid(t *testing.T) token.ID {
	t.Helper()
	id, err := token.NewID()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// The stream message builders are the fake authority's own.
var (
	key          = authoritytest.Key
	revokedTok   = authoritytest.Revoked
	chunk        = authoritytest.Chunk
	snapEnd      = authoritytest.SnapshotEnd
	evRevoked    = authoritytest.TokenRevoked
	evKeyAdded   = authoritytest.KeyAdded
	evKeyRevoked = authoritytest.KeyRevoked
)

// checkpoint is a checkpoint at rev carrying the authority time t0.
func checkpoint(rev uint64) *sigilv1.WatchRevocationsResponse {
	return authoritytest.Checkpoint(rev, t0)
}

const active = sigilv1.SigningKeyState_SIGNING_KEY_STATE_ACTIVE

func isRevoked(f *Follower, id token.ID) bool {
	_, _, _, rev, _ := f.Inspect("", id)
	return rev
}

func keyState(f *Follower, id string) (known, revoked bool) {
	_, revoked, known = f.Lookup(id)
	return known, revoked
}

// syncBasic brings a fresh follower to epoch e1, revision 10, with key k1
// and revoked token t1.
func syncBasic(t *testing.T, h *harness) (*authoritytest.Session, token.ID) {
	t.Helper()
	s := h.next(t)
	if s.Req.GetAfterRevision() != 0 || s.Req.GetEpoch() != "" {
		t.Fatalf("first request = %v, want after_revision 0 and no epoch", s.Req)
	}
	if s.Auth != "Bearer watch-secret" {
		t.Fatalf("authorization = %q, want the watch credential as a bearer token", s.Auth)
	}
	if h.f.Ready() || h.f.Synced() {
		t.Fatal("ready before any snapshot")
	}
	t1 := tid(t)
	s.Send(t, chunk("e1", 10, []*sigilv1.SigningKey{key("k1", active, pubKey(t))}, revokedTok(0, t1, t0.Add(time.Hour))))
	s.Send(t, snapEnd("e1", 10))
	h.waitRev(t, 10)
	waitFor(t, "synced", h.f.Synced)
	return s, t1
}

func TestSnapshotThenGapFreeEvents(t *testing.T) {
	h := start(t)
	s := h.next(t)
	t1, t2, t3, t4 := tid(t), tid(t), tid(t), tid(t)
	k1, k2 := pubKey(t), pubKey(t)
	s.Send(t,
		chunk("e1", 10, []*sigilv1.SigningKey{key("k1", active, k1)}, revokedTok(0, t1, t0.Add(time.Hour))),
		chunk("e1", 10, []*sigilv1.SigningKey{key("old", sigilv1.SigningKeyState_SIGNING_KEY_STATE_VERIFY_ONLY, pubKey(t)), key("bad", sigilv1.SigningKeyState_SIGNING_KEY_STATE_REVOKED, pubKey(t))}, revokedTok(0, t2, t0.Add(time.Hour))),
	)
	if h.f.Synced() {
		t.Fatal("synced before the snapshot end")
	}
	s.Send(t, snapEnd("e1", 10))
	h.waitRev(t, 10)
	if !h.f.Synced() || !h.f.Ready() || h.f.Epoch() != "e1" {
		t.Fatalf("after snapshot: synced=%v ready=%v epoch=%q", h.f.Synced(), h.f.Ready(), h.f.Epoch())
	}
	for id, want := range map[string][2]bool{"k1": {true, false}, "old": {true, false}, "bad": {true, true}, "k2": {false, false}} {
		if known, revoked := keyState(h.f, id); known != want[0] || revoked != want[1] {
			t.Errorf("key %s: known=%v revoked=%v, want %v", id, known, revoked, want)
		}
	}
	if !isRevoked(h.f, t1) || !isRevoked(h.f, t2) || isRevoked(h.f, t3) {
		t.Fatal("snapshot revocations not applied")
	}

	// Live events with gaps between revisions (token creations are not
	// streamed), and a duplicate.
	s.Send(t,
		evRevoked(12, t3, t0.Add(time.Hour)),
		evKeyAdded(13, key("k2", sigilv1.SigningKeyState_SIGNING_KEY_STATE_PENDING, k2)),
		evKeyRevoked(15, "k1"),
		evRevoked(12, t4, t0.Add(time.Hour)), // duplicate revision: ignored
		checkpoint(20),
	)
	h.waitRev(t, 20)
	if !isRevoked(h.f, t3) {
		t.Error("t3 not revoked")
	}
	if isRevoked(h.f, t4) {
		t.Error("an event at an applied revision was applied")
	}
	if known, revoked := keyState(h.f, "k1"); !known || !revoked {
		t.Errorf("k1 known=%v revoked=%v, want revoked", known, revoked)
	}
	if known, revoked := keyState(h.f, "k2"); !known || revoked {
		t.Errorf("pending k2 known=%v revoked=%v, want usable", known, revoked)
	}
	if pub, _, _ := h.f.Lookup("k2"); string(pub) != string(k2) {
		t.Error("k2 public key differs")
	}
	st := h.f.Stats()
	if st.Events != 3 || st.Duplicates != 1 || st.Snapshots != 1 || st.Checkpoints != 1 {
		t.Errorf("stats = %+v", st)
	}
	// A later key_added cannot bring a revoked key back.
	s.Send(t, evKeyAdded(21, key("k1", active, k1)), checkpoint(21))
	h.waitRev(t, 21)
	if _, revoked := keyState(h.f, "k1"); !revoked {
		t.Error("a revoked key came back")
	}
}

func TestResumeFromAppliedRevision(t *testing.T) {
	h := start(t)
	s, t1 := syncBasic(t, h)
	t2 := tid(t)
	s.Send(t, evRevoked(14, t2, t0.Add(time.Hour)), checkpoint(14))
	h.waitRev(t, 14)
	waitFor(t, "digest at 14", func() bool { _, r := h.f.Digest(); return r == 14 })
	s.End(status.Error(codes.Unavailable, "authority restarting"))

	s2 := h.next(t)
	if s2.Req.GetAfterRevision() != 14 || s2.Req.GetEpoch() != "e1" || !bytes.Equal(s2.Req.GetAfterDigest(), authoritytest.Digest("", 14)) {
		t.Fatalf("resume request = %v, want after_revision 14 epoch e1 and the digest at 14", s2.Req)
	}
	// Resumed streams start with live events; the state is kept.
	t3 := tid(t)
	s2.Send(t, evRevoked(15, t3, t0.Add(time.Hour)))
	h.waitRev(t, 15)
	for _, id := range []token.ID{t1, t2, t3} {
		if !isRevoked(h.f, id) {
			t.Errorf("%v lost across the reconnect", id)
		}
	}
	if got := h.f.Stats().Reconnects; got != 1 {
		t.Errorf("reconnects = %d, want 1", got)
	}
}

func TestResnapshotReplacesState(t *testing.T) {
	for _, tc := range []struct {
		name  string
		epoch string
		rev   uint64
	}{
		{"revision compacted, same epoch", "e1", 50},
		{"epoch changed (restored store)", "e2", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t)
			s, t1 := syncBasic(t, h)
			s.End(status.Error(codes.Unavailable, "gone"))
			s2 := h.next(t)
			if s2.Req.GetAfterRevision() != 10 || s2.Req.GetEpoch() != "e1" {
				t.Fatalf("resume request = %v", s2.Req)
			}
			t9 := tid(t)
			s2.Send(t,
				chunk(tc.epoch, tc.rev, []*sigilv1.SigningKey{key("k9", active, pubKey(t))}, revokedTok(0, t9, t0.Add(time.Hour))),
				snapEnd(tc.epoch, tc.rev),
			)
			waitFor(t, "new snapshot", func() bool { return h.f.Stats().Snapshots == 2 })
			if h.f.Epoch() != tc.epoch || h.f.Revision() != tc.rev {
				t.Fatalf("epoch %q revision %d, want %q %d", h.f.Epoch(), h.f.Revision(), tc.epoch, tc.rev)
			}
			if isRevoked(h.f, t1) || !isRevoked(h.f, t9) {
				t.Error("revoked set not replaced")
			}
			if known, _ := keyState(h.f, "k1"); known {
				t.Error("old key survived the new snapshot")
			}
			if known, _ := keyState(h.f, "k9"); !known {
				t.Error("new key missing")
			}
		})
	}
}

// probesFail makes the fake authority's ConfirmHistory fail, so that
// nothing confirms the follower's state; probesAnswer restores it.
func probesFail(h *harness) {
	h.fake.SetConfirm(func(*sigilv1.ConfirmHistoryRequest) (*sigilv1.ConfirmHistoryResponse, error) {
		return nil, status.Error(codes.Unavailable, "down")
	})
}

func TestStalenessAndRecovery(t *testing.T) {
	h := start(t)
	probesFail(h)
	s, _ := syncBasic(t, h)
	if !h.f.Ready() {
		t.Fatal("not ready after the snapshot")
	}
	h.advance(30 * time.Second)
	if !h.f.Ready() {
		t.Fatal("not ready at exactly max staleness")
	}
	h.advance(time.Second)
	if h.f.Ready() {
		t.Fatal("ready after max staleness without a message")
	}
	if d, ok := h.f.Staleness(); !ok || d != 31*time.Second {
		t.Fatalf("staleness = %v, %v", d, ok)
	}
	// A message on the stream does not make it fresh (it may have been
	// delayed for any time); an answered probe does.
	s.Send(t, checkpoint(11))
	h.waitRev(t, 11)
	if h.f.Ready() {
		t.Fatal("a checkpoint's arrival made a stale follower fresh")
	}
	h.fake.SetConfirm(nil)
	h.f.RequestProbe()
	waitFor(t, "ready again", h.f.Ready)
}

// TestStalenessIgnoresWallClockSteps steps the wall clock while the
// monotonic source runs on: staleness follows the monotonic source only. A
// wall clock stepped back one hour must not keep a stale follower Ready for
// that hour, and one stepped forward must not make a fresh follower stale.
func TestStalenessIgnoresWallClockSteps(t *testing.T) {
	h := start(t)
	probesFail(h)
	s, _ := syncBasic(t, h)
	if !h.f.Ready() {
		t.Fatal("not ready after the snapshot")
	}
	// Forward step of an hour, one real second later: still fresh.
	h.clock.Add(time.Hour)
	h.mono.Add(int64(time.Second))
	if !h.f.Ready() {
		t.Fatal("a forward wall-clock step made a fresh follower stale")
	}
	// Back by two hours (one behind the start) while 31 s really pass.
	h.clock.Add(-2 * time.Hour)
	h.mono.Add(int64(30 * time.Second))
	if h.f.Ready() {
		t.Fatal("a backward wall-clock step kept a stale follower ready")
	}
	if d, ok := h.f.Staleness(); !ok || d != 31*time.Second {
		t.Fatalf("staleness = %v, %v; want 31s", d, ok)
	}
	// An answered probe makes it fresh again, whatever the wall clock says.
	s.Send(t, checkpoint(11))
	h.waitRev(t, 11)
	h.fake.SetConfirm(nil)
	h.f.RequestProbe()
	waitFor(t, "ready again", h.f.Ready)
}

func TestMalformedMessagesNeverCrash(t *testing.T) {
	h := start(t)
	s, _ := syncBasic(t, h)
	known := pubKey(t)
	s.Send(t, evKeyAdded(11, key("k2", active, known)))
	h.waitRev(t, 11)
	malformedBefore := h.f.Stats().Malformed

	tExp := tid(t)
	s.Send(t,
		evKeyAdded(12, key("short", active, []byte("too short"))),                                     // wrong length: ignored
		evKeyAdded(13, key("k2", sigilv1.SigningKeyState_SIGNING_KEY_STATE_REVOKED, []byte{1, 2, 3})), // wrong length, but a revocation of a known key: honoured
		evKeyAdded(14, key("", active, pubKey(t))),                                                    // no id
		evKeyAdded(15, key("k3", sigilv1.SigningKeyState(99), pubKey(t))),                             // unknown state: not trusted
		evKeyAdded(16, nil),                 // no key at all
		&sigilv1.WatchRevocationsResponse{}, // unknown (or empty) event
		&sigilv1.WatchRevocationsResponse{Event: &sigilv1.WatchRevocationsResponse_TokenRevoked{TokenRevoked: &sigilv1.TokenRevoked{Revision: 17, TokenId: "not-an-id"}}},
		&sigilv1.WatchRevocationsResponse{Event: &sigilv1.WatchRevocationsResponse_TokenRevoked{TokenRevoked: &sigilv1.TokenRevoked{Revision: 18, TokenId: tExp.String()}}}, // no expiry: kept
		evKeyRevoked(19, "never-seen"),
		&sigilv1.WatchRevocationsResponse{Event: &sigilv1.WatchRevocationsResponse_Checkpoint{}},
		checkpoint(20),
	)
	h.waitRev(t, 20)
	if known, _ := keyState(h.f, "short"); known {
		t.Error("a key of the wrong length was accepted")
	}
	if _, revoked := keyState(h.f, "k2"); !revoked {
		t.Error("the revocation in a malformed key message was not honoured")
	}
	if known, _ := keyState(h.f, "k3"); known {
		t.Error("a key in an unknown state is trusted")
	}
	if known, _ := keyState(h.f, ""); known {
		t.Error("a key without id was accepted")
	}
	if !isRevoked(h.f, tExp) {
		t.Error("a revocation without expiry was dropped")
	}
	if got := h.f.Stats().Malformed - malformedBefore; got < 6 {
		t.Errorf("malformed count grew by %d, want at least 6", got)
	}
	if h.f.Stats().Reconnects != 0 || !h.f.Ready() {
		t.Error("malformed entries broke the stream")
	}
}

func TestProtocolViolationsReconnectAndKeepState(t *testing.T) {
	for _, tc := range []struct {
		name string
		msgs func(t *testing.T) []*sigilv1.WatchRevocationsResponse
	}{
		{"live event inside a snapshot", func(t *testing.T) []*sigilv1.WatchRevocationsResponse {
			return []*sigilv1.WatchRevocationsResponse{chunk("e1", 30, nil), evRevoked(31, tid(t), t0)}
		}},
		{"snapshot end of another revision", func(t *testing.T) []*sigilv1.WatchRevocationsResponse {
			return []*sigilv1.WatchRevocationsResponse{chunk("e1", 30, nil), snapEnd("e1", 31)}
		}},
		{"chunks of two snapshots", func(t *testing.T) []*sigilv1.WatchRevocationsResponse {
			return []*sigilv1.WatchRevocationsResponse{chunk("e1", 30, nil), chunk("e2", 30, nil)}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t)
			s, t1 := syncBasic(t, h)
			s.Send(t, tc.msgs(t)...)
			s2 := h.next(t) // the follower dropped the stream
			if s2.Req.GetAfterRevision() != 10 || s2.Req.GetEpoch() != "e1" {
				t.Fatalf("request after violation = %v", s2.Req)
			}
			if h.f.Revision() != 10 || !isRevoked(h.f, t1) {
				t.Fatal("a broken snapshot changed the state")
			}
		})
	}
}

func TestLiveEventBeforeFirstSnapshotIsRejected(t *testing.T) {
	h := start(t)
	s := h.next(t)
	s.Send(t, evRevoked(5, tid(t), t0))
	s2 := h.next(t)
	if s2.Req.GetAfterRevision() != 0 || h.f.Synced() {
		t.Fatalf("follower accepted live events without a snapshot: %v", s2.Req)
	}
}

func TestExpiredRevocationsArePruned(t *testing.T) {
	h := start(t)
	s := h.next(t)
	old, live := tid(t), tid(t)
	s.Send(t,
		chunk("e1", 10, nil, revokedTok(0, old, t0.Add(-2*time.Minute)), revokedTok(0, live, t0.Add(-30*time.Second))),
		snapEnd("e1", 10),
		checkpoint(11),
	)
	h.waitRev(t, 11)
	// Retention is one minute: "old" expired beyond it, "live" within it
	// (a verifier's leeway could still accept it).
	if isRevoked(h.f, old) {
		t.Error("a revocation expired beyond the retention was kept")
	}
	if !isRevoked(h.f, live) {
		t.Error("a revocation within the retention was dropped")
	}
}

func TestWaitFor(t *testing.T) {
	h := start(t)
	h.tick.Store(true) // probes sent after a call began read a later time
	s, _ := syncBasic(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := h.f.WaitFor(ctx, 11); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitFor unapplied revision = %v, want deadline exceeded", err)
	}
	got := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		got <- h.f.WaitFor(ctx, 12)
	}()
	s.Send(t, checkpoint(11), checkpoint(12))
	if err := <-got; err != nil {
		t.Fatalf("WaitFor = %v", err)
	}
	if err := h.f.WaitFor(context.Background(), 5); err != nil {
		t.Fatalf("WaitFor an applied revision = %v", err)
	}
}

func TestBackoffIsJitteredAndCapped(t *testing.T) {
	f := New(Options{BackoffBase: 100 * time.Millisecond, BackoffMax: 2 * time.Second})
	for attempt := range 20 {
		d := f.backoff(attempt)
		step := min(100*time.Millisecond<<min(attempt, 10), 2*time.Second)
		if d < step/2 || d > step {
			t.Fatalf("attempt %d: %v outside [%v, %v]", attempt, d, step/2, step)
		}
	}
}

func TestSafeCleansLogValues(t *testing.T) {
	if got := safe("a\nb\x00" + strings.Repeat("x", 100)); strings.ContainsAny(got, "\n\x00") || len(got) > 64 {
		t.Fatalf("safe = %q", got)
	}
}

func TestClockSkewIsMeasured(t *testing.T) {
	h := start(t)
	s, _ := syncBasic(t, h)
	if _, ok := h.f.ClockSkew(); ok {
		t.Fatal("skew known before any checkpoint")
	}
	cp := checkpoint(11)
	cp.GetCheckpoint().AuthorityTime = timestamppb.New(t0.Add(-45 * time.Second))
	s.Send(t, cp)
	h.waitRev(t, 11)
	if d, ok := h.f.ClockSkew(); !ok || d != 45*time.Second {
		t.Fatalf("skew = %v, %v; want 45s", d, ok)
	}
}
