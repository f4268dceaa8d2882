package server

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/sigil-auth/sigil/pkg/grpcserver"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

func TestOversizedGrantsAreInvalidArgument(t *testing.T) {
	e := newEnv(t, envOpts{})
	// Every grant is valid, and there are no more than scope.MaxGrants, but
	// together they do not fit in a token of token.MaxLen bytes.
	var grants []*sigilv1.Grant
	for i := range scope.MaxGrants {
		var res []string
		for j := range 4 {
			res = append(res, fmt.Sprintf("domains/%s-%d-%d.example.com", strings.Repeat("x", 20), i, j))
		}
		grants = append(grants, grant([]string{"domain:view", "domain:renew"}, res...))
	}
	revBefore := e.st.Revision()
	_, err := e.client.CreateToken(op(), &sigilv1.CreateTokenRequest{
		OrgId: "org-1", Name: "huge", Grants: grants, Expiry: ttl(30 * day), CreatedBy: "alice",
	})
	wantCode(t, err, codes.InvalidArgument, "grants")
	// Nothing was stored, nothing was logged at ERROR.
	if rev := e.st.Revision(); rev != revBefore {
		t.Fatalf("store revision moved from %d to %d", revBefore, rev)
	}
	list, err := e.client.ListTokens(op(), &sigilv1.ListTokensRequest{OrgId: "org-1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetTokens()) != 0 {
		t.Fatalf("%d tokens stored", len(list.GetTokens()))
	}
	if strings.Contains(e.logs.String(), `"level":"ERROR"`) {
		t.Fatalf("a client's mistake logged at ERROR:\n%s", e.logs.String())
	}
	// A grant set that fits still mints.
	e.mint("org-1", "fits", "alice", grants[:4]...)
}

func TestWatchStreamsPerCredential(t *testing.T) {
	limits := grpcserver.NewLimits(nil)
	e := newEnv(t, envOpts{maxWatch: 2, limits: limits})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	open := func(cred string) (watchClient, error) {
		s, err := e.client.WatchRevocations(withCredCtx(ctx, cred), &sigilv1.WatchRevocationsRequest{})
		if err != nil {
			return nil, err
		}
		_, err = s.Recv() // the first message: the stream holds its slot
		return s, err
	}
	for range 2 {
		if _, err := open(watchToken); err != nil {
			t.Fatalf("stream within the bound: %v", err)
		}
	}
	if _, err := open(watchToken); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("stream beyond the bound: %v, want RESOURCE_EXHAUSTED", err)
	}
	if n := limits.Count(grpcserver.LimitWatchStream); n != 1 {
		t.Fatalf("watch_streams refusals = %d, want 1", n)
	}
	// Another credential has its own slots.
	if _, err := open(opToken); err != nil {
		t.Fatalf("operator stream: %v", err)
	}
	// Closing a stream frees its slot.
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	s, err := e.client.WatchRevocations(withCredCtx(ctx2, watchToken), &sigilv1.WatchRevocationsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = s.Recv()
	cancel() // ends the two first streams and the operator's
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx3, cancel3 := context.WithCancel(context.Background())
		s, err := e.client.WatchRevocations(withCredCtx(ctx3, watchToken), &sigilv1.WatchRevocationsRequest{})
		if err == nil {
			_, err = s.Recv()
		}
		cancel3()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot not freed after streams closed: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := limits.Count(grpcserver.LimitWatchStream); n < 1 {
		t.Fatalf("watch_streams refusals = %d", n)
	}
}

func withCredCtx(ctx context.Context, cred string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+cred)
}

// watchGoroutines counts the goroutines running a revocation stream of this
// package: handlers and their senders.
func watchGoroutines() int {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "internal/server.(*watch)") || strings.Contains(g, "internal/server.(*Server).WatchRevocations") {
			n++
		}
	}
	return n
}

// TestSlowConsumerReleasesEverything cuts off a stream whose client never
// reads and never leaves: the stream's goroutines end at once, without the
// client disconnecting.
func TestSlowConsumerReleasesEverything(t *testing.T) {
	if testing.Short() {
		t.Skip("mints thousands of tokens")
	}
	e := newEnv(t, envOpts{sendTimeout: 300 * time.Millisecond})
	const n = 3000
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 32 {
				if _, err := e.client.CreateToken(op(), &sigilv1.CreateTokenRequest{OrgId: "org-1", Name: fmt.Sprint("t", i), CreatedBy: "alice",
					Grants: []*sigilv1.Grant{grant([]string{"domain:view"})}, Expiry: ttl(30 * day)}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if _, err := e.client.RevokeTokens(op(), &sigilv1.RevokeTokensRequest{OrgId: "org-1"}); err != nil {
		t.Fatal(err)
	}
	if g := watchGoroutines(); g != 0 {
		t.Fatalf("%d stream goroutines before any stream", g)
	}
	conn := e.fixedWindowConn(t)
	// Never read; the connection stays open until the end of the test.
	if _, err := sigilv1.NewTokenAuthorityServiceClient(conn).WatchRevocations(withCred(watchToken), &sigilv1.WatchRevocationsRequest{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(e.logs.String(), "consumer too slow") {
		if time.Now().After(deadline) {
			t.Fatal("slow consumer never cut off")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for g := watchGoroutines(); g != 0; g = watchGoroutines() {
		if time.Now().After(deadline) {
			t.Fatalf("%d stream goroutines left after the cut-off, client still connected", g)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s := conn.GetState().String(); s != "READY" {
		t.Fatalf("client connection %s: the test needs it open", s)
	}
}

// streamSnapshot streams a snapshot of e's store through the shared cache
// and returns the messages sent, the revision and the digest.
func streamSnapshot(t *testing.T, e *env, cutoff time.Time) ([]*sigilv1.WatchRevocationsResponse, uint64, []byte) {
	t.Helper()
	var msgs []*sigilv1.WatchRevocationsResponse
	rev, digest, err := e.srv.snapshots.stream(context.Background(), e.st, cutoff, func(m *sigilv1.WatchRevocationsResponse) error {
		msgs = append(msgs, m)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) < 2 || msgs[len(msgs)-1].GetSnapshotEnd().GetRevision() != rev {
		t.Fatalf("%d messages, last %v: want chunks then the end at revision %d", len(msgs), msgs[len(msgs)-1], rev)
	}
	return msgs, rev, digest
}

// TestSnapshotShared: streams that start at one revision share one copy of
// a small snapshot; a commit makes the next stream read a new one.
func TestSnapshotShared(t *testing.T) {
	e := newEnv(t, envOpts{})
	id := e.mint("org-1", "a", "alice").GetInfo().GetTokenId()
	e.revoke(id)
	cutoff := e.clock.now()
	a, revA, digestA := streamSnapshot(t, e, cutoff)
	b, revB, digestB := streamSnapshot(t, e, cutoff)
	if revA != revB || a[0] != b[0] || !bytes.Equal(digestA, digestB) || len(digestA) != store.DigestSize {
		t.Fatalf("two snapshots at revision %d/%d not shared", revA, revB)
	}
	if n := len(a[0].GetSnapshotChunk().GetRevokedTokens()); n != 1 {
		t.Fatalf("%d revoked tokens in the snapshot, want 1", n)
	}
	e.revoke(e.mint("org-1", "b", "alice").GetInfo().GetTokenId())
	c, revC, digestC := streamSnapshot(t, e, cutoff)
	if revC <= revA || bytes.Equal(digestC, digestA) || len(c[0].GetSnapshotChunk().GetRevokedTokens()) != 2 {
		t.Fatalf("after a revocation: revision %d (was %d), %d revoked", revC, revA, len(c[0].GetSnapshotChunk().GetRevokedTokens()))
	}
}

// TestLargeSnapshotNotKept: a snapshot of more revoked tokens than the
// cache keeps is streamed from the store to every stream, never kept
// whole; one within the bound is kept.
func TestLargeSnapshotNotKept(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.srv.snapshots.maxTokens = 2
	for _, name := range []string{"a", "b"} {
		e.revoke(e.mint("org-1", name, "alice").GetInfo().GetTokenId())
	}
	cutoff := e.clock.now()
	a, _, _ := streamSnapshot(t, e, cutoff)
	b, _, _ := streamSnapshot(t, e, cutoff)
	if a[0] != b[0] || len(e.srv.snapshots.msgs) != 2 {
		t.Fatalf("a snapshot of 2 tokens (the bound) not kept: %d messages kept", len(e.srv.snapshots.msgs))
	}
	e.revoke(e.mint("org-1", "c", "alice").GetInfo().GetTokenId())
	c, revC, _ := streamSnapshot(t, e, cutoff)
	d, revD, _ := streamSnapshot(t, e, cutoff)
	if revC != revD || c[0] == d[0] {
		t.Fatalf("a snapshot of 3 tokens (above the bound) shared: revisions %d/%d", revC, revD)
	}
	if e.srv.snapshots.msgs != nil {
		t.Fatalf("a snapshot of 3 tokens (above the bound) kept: %d messages", len(e.srv.snapshots.msgs))
	}
	for _, msgs := range [][]*sigilv1.WatchRevocationsResponse{c, d} {
		if n := len(msgs[0].GetSnapshotChunk().GetRevokedTokens()); n != 3 || len(msgs[0].GetSnapshotChunk().GetKeys()) == 0 {
			t.Fatalf("streamed snapshot: %d revoked tokens, %d keys in the first chunk; want 3 and the keys", n, len(msgs[0].GetSnapshotChunk().GetKeys()))
		}
	}
}
