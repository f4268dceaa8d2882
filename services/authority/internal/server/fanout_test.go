package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// Callers asking for the same key while its load runs share that one load
// and its very result.
func TestSharedMapOneLoadPerKey(t *testing.T) {
	var m sharedMap[int, *int]
	var loads atomic.Int32
	inLoad, release := make(chan struct{}), make(chan struct{})
	load := func() (*int, error) {
		n := int(loads.Add(1))
		if n == 1 {
			close(inLoad)
			<-release
		}
		return &n, nil
	}
	always := func(uint64) bool { return true }
	zero := func() uint64 { return 0 }

	const callers = 20
	got := make([]*int, callers)
	var wg sync.WaitGroup
	wg.Go(func() {
		v, err := m.get(context.Background(), 7, always, zero, load)
		if err != nil {
			t.Error(err)
		}
		got[0] = v
	})
	<-inLoad // the first caller holds the entry, its load unfinished
	for i := 1; i < callers; i++ {
		wg.Go(func() {
			v, err := m.get(context.Background(), 7, always, zero, load)
			if err != nil {
				t.Error(err)
			}
			got[i] = v
		})
	}
	close(release)
	wg.Wait()
	if n := loads.Load(); n != 1 {
		t.Fatalf("%d loads for one key, want 1", n)
	}
	for i, v := range got {
		if v != got[0] {
			t.Fatalf("caller %d got another result than caller 0", i)
		}
	}
	// Another key is loaded on its own.
	if v, _ := m.get(context.Background(), 8, always, zero, load); *v != 2 {
		t.Fatalf("key 8: load %d, want its own (2)", *v)
	}
}

// An entry that no longer serves the caller (fresh says no) is loaded
// again, with a new tag.
func TestSharedMapStaleEntryReloads(t *testing.T) {
	var m sharedMap[string, int]
	loads := 0
	load := func() (int, error) { loads++; return loads, nil }
	tag := uint64(5)
	newTag := func() uint64 { return tag }
	atLeast := func(rev uint64) func(uint64) bool { return func(t uint64) bool { return t >= rev } }
	ctx := context.Background()

	if v, _ := m.get(ctx, "k", atLeast(5), newTag, load); v != 1 {
		t.Fatalf("first get %d", v)
	}
	if v, _ := m.get(ctx, "k", atLeast(3), newTag, load); v != 1 {
		t.Fatalf("entry at 5 serves a caller needing 3: got %d, want the shared 1", v)
	}
	tag = 9
	if v, _ := m.get(ctx, "k", atLeast(6), newTag, load); v != 2 {
		t.Fatalf("entry at 5 served a caller needing 6: got %d, want a new load", v)
	}
	if v, _ := m.get(ctx, "k", atLeast(9), newTag, load); v != 2 {
		t.Fatalf("entry at 9 not reused: got %d", v)
	}
}

// A failed load is not handed to the callers that waited for it: each
// runs its own, and the next caller does not find the failure.
func TestSharedMapFailureNotShared(t *testing.T) {
	var m sharedMap[int, string]
	inLoad, release := make(chan struct{}), make(chan struct{})
	var loads atomic.Int32
	boom := errors.New("loader's stream ended")
	always := func(uint64) bool { return true }
	zero := func() uint64 { return 0 }

	var wg sync.WaitGroup
	var firstErr error
	wg.Go(func() {
		_, firstErr = m.get(context.Background(), 1, always, zero, func() (string, error) {
			loads.Add(1)
			close(inLoad)
			<-release
			return "", boom
		})
	})
	<-inLoad
	const waiters = 5
	got := make([]string, waiters)
	for i := range waiters {
		wg.Go(func() {
			v, err := m.get(context.Background(), 1, always, zero, func() (string, error) {
				loads.Add(1)
				return "own", nil
			})
			if err != nil {
				t.Error(err)
			}
			got[i] = v
		})
	}
	close(release)
	wg.Wait()
	if !errors.Is(firstErr, boom) {
		t.Fatalf("loader got %v", firstErr)
	}
	for i, v := range got {
		// A waiter that came after the failed entry was dropped shares a
		// good load; one that waited on it ran its own: "own" either way.
		if v != "own" {
			t.Fatalf("waiter %d got %q", i, v)
		}
	}
	if v, err := m.get(context.Background(), 1, always, zero, func() (string, error) { return "later", nil }); err != nil || (v != "own" && v != "later") {
		t.Fatalf("after the failure: %q %v", v, err)
	}
	if n := loads.Load(); n < 2 {
		t.Fatalf("%d loads: the failure was shared", n)
	}
}

// A waiter whose context ends stops waiting for another's load.
func TestSharedMapWaiterCancelled(t *testing.T) {
	var m sharedMap[int, int]
	inLoad, release := make(chan struct{}), make(chan struct{})
	always := func(uint64) bool { return true }
	zero := func() uint64 { return 0 }
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = m.get(context.Background(), 1, always, zero, func() (int, error) {
			close(inLoad)
			<-release
			return 1, nil
		})
	}()
	<-inLoad
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.get(ctx, 1, always, zero, func() (int, error) { return 2, nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v", err)
	}
	close(release)
	<-done
}

// A map starts over past its bound rather than grow: maxShared by
// default, maxSharedReads for the store reads.
func TestSharedMapBounded(t *testing.T) {
	always := func(uint64) bool { return true }
	zero := func() uint64 { return 0 }
	var m sharedMap[int, int]
	for i := range 3 * maxShared {
		v, err := m.get(context.Background(), i, always, zero, func() (int, error) { return i, nil })
		if err != nil || v != i {
			t.Fatalf("key %d: %d %v", i, v, err)
		}
		if len(m.m) > maxShared {
			t.Fatalf("%d entries, bound %d", len(m.m), maxShared)
		}
	}
	reads := &newFanout().reads
	for i := range 3 * maxSharedReads {
		if _, err := reads.get(context.Background(), uint64(i), always, zero, func() ([]store.Event, error) { return nil, nil }); err != nil {
			t.Fatal(err)
		}
		if len(reads.m) > maxSharedReads {
			t.Fatalf("%d shared reads, bound %d", len(reads.m), maxSharedReads)
		}
	}
}

// streamed and eventToProto agree on which events have a stream message.
func TestStreamedMatchesEventToProto(t *testing.T) {
	evs := []store.Event{
		{Kind: store.EventTokenRevoked, Revision: 1, TokenID: "t"},
		{Kind: store.EventKeyAdded, Revision: 2},
		{Kind: store.EventKeyAdded, Revision: 3, Key: &store.Key{ID: "k", Public: make([]byte, 32)}},
		{Kind: store.EventKeyRevoked, Revision: 4, KeyID: "k"},
	}
	for k := range 16 { // every kind, and some that do not exist
		evs = append(evs, store.Event{Kind: store.EventKind(k), Revision: 10, Key: &store.Key{ID: "k", Public: make([]byte, 32)}})
	}
	for _, ev := range evs {
		if got, want := streamed(ev), eventToProto(ev) != nil; got != want {
			t.Errorf("kind %v (key %v): streamed %v, eventToProto non-nil %v", ev.Kind, ev.Key != nil, got, want)
		}
	}
}

// A stream without a grpc-go transport (no wire format known) encodes its
// own messages: nothing is shared that it could not decode.
func TestWireFormatUnknown(t *testing.T) {
	if _, ok := wireFormat(context.Background()); ok {
		t.Fatal("wire format known without a transport stream")
	}
}

// Streams at different positions get each their own previous_revision for
// the same event, and streams in step get the same shared message: one
// stream whose last checkpoint follows a token creation (not streamed),
// one resumed from before it.
func TestWatchSharedEventPreviousRevisionPerStream(t *testing.T) {
	e := newEnv(t, envOpts{checkpoint: time.Hour})
	ctx, cancel := context.WithCancel(withCred(watchToken))
	defer cancel()

	// a and b follow from a snapshot, in step.
	fa, fb := newFollower(t), newFollower(t)
	sa, sb := e.watch(ctx, 0, ""), e.watch(ctx, 0, "")
	recvUntil(t, sa, fa, func() bool { return fa.epoch != "" })
	recvUntil(t, sb, fb, func() bool { return fb.epoch != "" })
	r0, d0 := fa.digestRev, fa.digest

	id := e.mint("org-1", "x", "alice").GetInfo().GetTokenId() // r0+1: not streamed
	created := e.st.Revision()
	recvUntil(t, sa, fa, func() bool { return fa.applied >= created })
	recvUntil(t, sb, fb, func() bool { return fb.applied >= created })
	rev := e.revoke(id)

	// c resumes after r0: for it the event follows r0.
	fc := newFollower(t)
	fc.epoch, fc.digest, fc.digestRev, fc.applied = e.st.Epoch(), d0, r0, r0
	sc := e.resume(ctx, r0, e.st.Epoch(), d0)
	e.catalogFirst(sc)

	event := func(s watchClient, f *follower) *sigilv1.WatchRevocationsResponse {
		t.Helper()
		for {
			m, err := s.Recv()
			if err != nil {
				t.Fatal(err)
			}
			f.apply(m) // checks previous_revision against what f applied
			if m.GetTokenRevoked() != nil {
				return m
			}
		}
	}
	ma, mb, mc := event(sa, fa), event(sb, fb), event(sc, fc)
	for name, m := range map[string]*sigilv1.WatchRevocationsResponse{"a": ma, "b": mb, "c": mc} {
		if m.GetTokenRevoked().GetRevision() != rev || m.GetTokenRevoked().GetTokenId() != id {
			t.Fatalf("stream %s: event %v, want %s at %d", name, m, id, rev)
		}
	}
	if ma.GetPreviousRevision() != created || mb.GetPreviousRevision() != created {
		t.Fatalf("streams in step: previous_revision %d and %d, want %d", ma.GetPreviousRevision(), mb.GetPreviousRevision(), created)
	}
	if mc.GetPreviousRevision() != r0 {
		t.Fatalf("resumed stream: previous_revision %d, want %d (its own position)", mc.GetPreviousRevision(), r0)
	}
	// Every checkpoint carries the store's digest at its revision.
	recvUntilCheckpoint(t, e, fa, sa, rev)
	recvUntilCheckpoint(t, e, fb, sb, rev)
	recvUntilCheckpoint(t, e, fc, sc, rev)
}

// recvUntilCheckpoint reads until f has a checkpoint at rev or later and
// checks its digest against the store's.
func recvUntilCheckpoint(t *testing.T, e *env, f *follower, s watchClient, rev uint64) {
	t.Helper()
	recvUntil(t, s, f, func() bool { return f.digestRev >= rev })
	want, err := e.st.DigestAt(context.Background(), f.digestRev)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(f.digest, want) {
		t.Fatalf("checkpoint at %d: digest %x, store %x", f.digestRev, f.digest, want)
	}
}

// Many streams in step all get every event, each exactly once and in
// order, with checkpoints carrying the right digest: what they share is
// the same for all and not changed by any.
func TestWatchManyStreamsShareEvents(t *testing.T) {
	e := newEnv(t, envOpts{checkpoint: time.Hour})
	ctx, cancel := context.WithCancel(withCred(watchToken))
	defer cancel()
	const streams, revocations = 16, 20
	ids := make([]string, revocations)
	for i := range ids {
		ids[i] = e.mint("org-1", fmt.Sprint("t", i), "alice").GetInfo().GetTokenId()
	}
	fs := make([]*follower, streams)
	ss := make([]watchClient, streams)
	for i := range ss {
		fs[i], ss[i] = newFollower(t), e.watch(ctx, 0, "")
		recvUntil(t, ss[i], fs[i], func() bool { return fs[i].epoch != "" })
	}
	var last uint64
	for _, id := range ids {
		last = e.revoke(id)
	}
	for i := range ss {
		recvUntilCheckpoint(t, e, fs[i], ss[i], last)
		for _, id := range ids {
			if !fs[i].revoked[id] {
				t.Fatalf("stream %d missed %s", i, id)
			}
		}
	}
}

// A stream whose consumer does not read holds no other stream back: the
// others get every event while it is stuck (its send timeout is far away).
func TestWatchSlowStreamDoesNotHoldOthers(t *testing.T) {
	if testing.Short() {
		t.Skip("mints thousands of tokens")
	}
	e := newEnv(t, envOpts{sendTimeout: time.Hour, checkpoint: time.Hour})
	// Enough revoked tokens that the snapshot overflows the windows of a
	// client that never reads (as in TestWatchSlowConsumerCutOff).
	const n = 3000
	mintParallel(t, e, "org-1", n)
	if _, err := e.client.RevokeTokens(op(), &sigilv1.RevokeTokensRequest{OrgId: "org-1"}); err != nil {
		t.Fatal(err)
	}
	conn := e.fixedWindowConn(t)
	ctx, cancel := context.WithCancel(withCred(watchToken))
	defer cancel()
	if _, err := sigilv1.NewTokenAuthorityServiceClient(conn).WatchRevocations(ctx, &sigilv1.WatchRevocationsRequest{}); err != nil {
		t.Fatal(err)
	}
	// The stuck stream is past its snapshot's first messages: wait until it
	// is registered, then keep it stuck while the others go on.
	for e.srv.behind(1) == 0 {
		time.Sleep(time.Millisecond)
	}

	f := newFollower(t)
	s := e.watch(ctx, 0, "")
	recvUntil(t, s, f, func() bool { return f.epoch != "" })
	for i := range 10 {
		id := e.mint("org-2", fmt.Sprint("live", i), "bob").GetInfo().GetTokenId()
		e.revoke(id)
		recvUntil(t, s, f, func() bool { return f.revoked[id] })
	}
	if strings.Contains(e.logs.String(), "consumer too slow") {
		t.Fatal("the stuck stream was cut off: the test did not keep it stuck")
	}
}

// Streams of different wire formats (gzip and none) never get each
// other's encoding: both decode the same event.
func TestWatchSharedEncodingPerWireFormat(t *testing.T) {
	e := newEnv(t, envOpts{checkpoint: time.Hour})
	ctx, cancel := context.WithCancel(withCred(watchToken))
	defer cancel()
	conn, err := grpc.NewClient("passthrough:///bufnet", grpc.WithContextDialer(e.dialer()),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.UseCompressor(gzip.Name)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	id := e.mint("org-1", "x", "alice").GetInfo().GetTokenId()
	fp, fz := newFollower(t), newFollower(t)
	sp := e.watch(ctx, 0, "")
	sz, err := sigilv1.NewTokenAuthorityServiceClient(conn).WatchRevocations(ctx, &sigilv1.WatchRevocationsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	recvUntil(t, sp, fp, func() bool { return fp.epoch != "" })
	recvUntil(t, sz, fz, func() bool { return fz.epoch != "" })
	// Both in step: whichever stream encodes an event first, the other
	// must not get its encoding. Several rounds, so that either order
	// occurs.
	for i := range 10 {
		if i > 0 {
			id = e.mint("org-1", fmt.Sprint("y", i), "alice").GetInfo().GetTokenId()
		}
		rev := e.revoke(id)
		recvUntilCheckpoint(t, e, fp, sp, rev)
		recvUntilCheckpoint(t, e, fz, sz, rev)
		if !fp.revoked[id] || !fz.revoked[id] {
			t.Fatalf("round %d: event missing", i)
		}
	}
}

// A consumer that stops reading during live events (not a snapshot) is
// cut off too, with a batch of several pages: a live batch has the send
// timeout for each of its messages.
func TestWatchSlowConsumerCutOffLive(t *testing.T) {
	if testing.Short() {
		t.Skip("mints thousands of tokens")
	}
	e := newEnv(t, envOpts{sendTimeout: 500 * time.Millisecond, checkpoint: time.Hour})
	// Live tokens only: the snapshot is small and gets through.
	const n = 5000
	mintParallel(t, e, "org-1", n)
	conn := e.fixedWindowConn(t)
	slow, err := sigilv1.NewTokenAuthorityServiceClient(conn).WatchRevocations(withCred(watchToken), &sigilv1.WatchRevocationsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// Through its snapshot: its checkpoint at the store's revision sent.
	rev := e.st.Revision()
	deadline := time.Now().Add(30 * time.Second)
	for e.srv.behind(rev) != 0 || e.srv.streamCount() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("stream never through its snapshot")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Five thousand revocations in one commit: pages of a thousand events
	// (some 300 KiB), far more than the 64 KiB window of a consumer that
	// does not read and the 64 KiB grpc-go queues for it.
	if _, err := e.client.RevokeTokens(op(), &sigilv1.RevokeTokensRequest{OrgId: "org-1"}); err != nil {
		t.Fatal(err)
	}
	waitCutOff(t, e, time.Until(deadline))
	for {
		if _, err = slow.Recv(); err != nil {
			break
		}
	}
	if code := status.Code(err); code != codes.ResourceExhausted && code != codes.Unavailable {
		t.Fatalf("stream ended with %v, want RESOURCE_EXHAUSTED (or UNAVAILABLE: its connection closed)", err)
	}
}

// streamCount is the number of open revocation streams.
func (s *Server) streamCount() int {
	s.streamsMu.Lock()
	defer s.streamsMu.Unlock()
	return len(s.streams)
}

// A live batch that blocks with no change after it (nothing more to hand
// over to the sender) is cut off by the send timeout too. The first
// commit fills the consumer's 64 KiB window and part of the 64 KiB
// grpc-go queues for it without blocking (its checkpoint is sent); the
// second, less than a page, blocks, and nothing follows it.
func TestWatchSlowConsumerCutOffIdle(t *testing.T) {
	if testing.Short() {
		t.Skip("mints thousands of tokens")
	}
	e := newEnv(t, envOpts{sendTimeout: 500 * time.Millisecond, checkpoint: time.Hour})
	sample := e.mint("org-0", "sample", "alice").GetInfo()
	// What one live event takes of the window: the message and gRPC's
	// 5-byte prefix (previous_revision and revision as large as they get).
	size := proto.Size(&sigilv1.WatchRevocationsResponse{
		Event: &sigilv1.WatchRevocationsResponse_TokenRevoked{TokenRevoked: &sigilv1.TokenRevoked{
			Revision: 1 << 14, TokenId: sample.GetTokenId(), ExpiresAt: sample.GetExpireTime()}},
		PreviousRevision: proto.Uint64(1 << 14),
	}) + 5
	first := (96 << 10) / size // the window and half the queue
	// Less than a page, so that its checkpoint goes in the same batch and
	// nothing more is handed over.
	second := store.DefaultEventLimit - 1
	if second*size < 48<<10 {
		t.Fatalf("a page of %d events of %d bytes does not exceed the queue's rest", second, size)
	}
	mintParallel(t, e, "org-1", first)
	mintParallel(t, e, "org-2", second)

	conn := e.fixedWindowConn(t)
	slow, err := sigilv1.NewTokenAuthorityServiceClient(conn).WatchRevocations(withCred(watchToken), &sigilv1.WatchRevocationsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	through := func(rev uint64, what string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for e.srv.behind(rev) != 0 || e.srv.streamCount() == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("stream never through %s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	through(e.st.Revision(), "its snapshot")
	r, err := e.client.RevokeTokens(op(), &sigilv1.RevokeTokensRequest{OrgId: "org-1"})
	if err != nil {
		t.Fatal(err)
	}
	through(r.GetRevision(), "the first commit (sized not to block)")
	if _, err := e.client.RevokeTokens(op(), &sigilv1.RevokeTokensRequest{OrgId: "org-2"}); err != nil {
		t.Fatal(err)
	}
	waitCutOff(t, e, 30*time.Second)
	for {
		if _, err = slow.Recv(); err != nil {
			break
		}
	}
	if code := status.Code(err); code != codes.ResourceExhausted && code != codes.Unavailable {
		t.Fatalf("stream ended with %v, want RESOURCE_EXHAUSTED (or UNAVAILABLE: its connection closed)", err)
	}
}

// mintParallel mints n tokens of org from 16 callers, so that the group
// committer batches them.
func mintParallel(t *testing.T, e *env, org string, n int) {
	t.Helper()
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < n; i += 16 {
				if _, err := e.client.CreateToken(op(), &sigilv1.CreateTokenRequest{OrgId: org, Name: fmt.Sprint("t", i), CreatedBy: "alice",
					Grants: []*sigilv1.Grant{grant([]string{"domain:view"})}, Expiry: ttl(30 * day)}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
}

// waitCutOff waits until the authority has logged cutting off a slow
// consumer, failing t after within.
func waitCutOff(t *testing.T, e *env, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !strings.Contains(e.logs.String(), "consumer too slow") {
		if time.Now().After(deadline) {
			t.Fatal("slow consumer never cut off")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// fixedWindowConn returns a client connection to e with fixed 64 KiB
// flow-control windows (no BDP growth), so that a stream it never reads
// fills them and the authority's queue for it quickly; it is closed when
// the test ends.
func (e *env) fixedWindowConn(t *testing.T) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///bufnet", grpc.WithContextDialer(e.dialer()),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
