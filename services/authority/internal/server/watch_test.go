package server

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"google.golang.org/protobuf/proto"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/pkg/scope"
)

// follower applies a revocation stream the way an authorizer does and
// checks the protocol on the way.
type follower struct {
	t        *testing.T
	epoch    string
	applied  uint64
	revoked  map[string]bool
	keys     map[string]sigilv1.SigningKeyState
	inSnap   bool
	snapRev  uint64
	messages int
	// digest is the history digest at digestRev, from the last snapshot
	// end or checkpoint: what a resume sends back.
	digest    []byte
	digestRev uint64
}

func newFollower(t *testing.T) *follower {
	return &follower{t: t, revoked: map[string]bool{}, keys: map[string]sigilv1.SigningKeyState{}}
}

func (f *follower) live(rev uint64) {
	f.t.Helper()
	if f.inSnap {
		f.t.Fatalf("live event %d inside a snapshot", rev)
	}
	if rev != 0 && rev <= f.applied {
		f.t.Fatalf("event revision %d not after applied %d (duplicate or out of order)", rev, f.applied)
	}
	f.applied = rev
}

// apply applies one message and returns it.
func (f *follower) apply(m *sigilv1.WatchRevocationsResponse) {
	f.t.Helper()
	f.messages++
	switch m.GetEvent().(type) {
	case *sigilv1.WatchRevocationsResponse_TokenRevoked, *sigilv1.WatchRevocationsResponse_KeyAdded, *sigilv1.WatchRevocationsResponse_KeyRevoked:
		// Every live event names the revision the stream vouched for before
		// it: what this follower applied, when it saw the stream from its
		// start (a resumed follower made afresh knows nothing before).
		if m.PreviousRevision == nil {
			f.t.Fatal("live event without previous_revision")
		}
		if (f.epoch != "" || f.digestRev != 0) && m.GetPreviousRevision() != f.applied {
			f.t.Fatalf("live event with previous_revision %d, follower applied %d", m.GetPreviousRevision(), f.applied)
		}
	}
	switch ev := m.GetEvent().(type) {
	case *sigilv1.WatchRevocationsResponse_Catalog:
		// The first message of every stream; catalogFirst checks its
		// contents.
		if f.inSnap {
			f.t.Fatal("catalog inside a snapshot")
		}
	case *sigilv1.WatchRevocationsResponse_SnapshotChunk:
		c := ev.SnapshotChunk
		if !f.inSnap {
			f.inSnap, f.snapRev = true, c.GetRevision()
			f.revoked, f.keys = map[string]bool{}, map[string]sigilv1.SigningKeyState{}
		}
		if c.GetRevision() != f.snapRev || len(c.GetRevokedTokens()) > SnapshotChunkSize {
			f.t.Fatalf("bad chunk: rev %d (snapshot %d), %d tokens", c.GetRevision(), f.snapRev, len(c.GetRevokedTokens()))
		}
		for _, r := range c.GetRevokedTokens() {
			f.revoked[r.GetTokenId()] = true
		}
		for _, k := range c.GetKeys() {
			f.keys[k.GetKeyId()] = k.GetState()
		}
	case *sigilv1.WatchRevocationsResponse_SnapshotEnd:
		if !f.inSnap || ev.SnapshotEnd.GetRevision() != f.snapRev || ev.SnapshotEnd.GetEpoch() == "" {
			f.t.Fatalf("bad snapshot end %v", ev.SnapshotEnd)
		}
		f.inSnap, f.epoch, f.applied = false, ev.SnapshotEnd.GetEpoch(), f.snapRev
		f.digest, f.digestRev = ev.SnapshotEnd.GetDigest(), f.snapRev
	case *sigilv1.WatchRevocationsResponse_TokenRevoked:
		f.live(ev.TokenRevoked.GetRevision())
		if ev.TokenRevoked.GetExpiresAt() == nil {
			f.t.Fatal("token_revoked without expiry")
		}
		f.revoked[ev.TokenRevoked.GetTokenId()] = true
	case *sigilv1.WatchRevocationsResponse_KeyAdded:
		f.live(ev.KeyAdded.GetRevision())
		if len(ev.KeyAdded.GetKey().GetPublicKey()) != 32 {
			f.t.Fatal("key without public key")
		}
		f.keys[ev.KeyAdded.GetKey().GetKeyId()] = ev.KeyAdded.GetKey().GetState()
	case *sigilv1.WatchRevocationsResponse_KeyRevoked:
		f.live(ev.KeyRevoked.GetRevision())
		f.keys[ev.KeyRevoked.GetKeyId()] = sigilv1.SigningKeyState_SIGNING_KEY_STATE_REVOKED
	case *sigilv1.WatchRevocationsResponse_Checkpoint:
		if f.inSnap {
			f.t.Fatal("checkpoint inside a snapshot")
		}
		if ev.Checkpoint.GetRevision() < f.applied {
			f.t.Fatalf("checkpoint %d behind applied event %d", ev.Checkpoint.GetRevision(), f.applied)
		}
		f.applied = ev.Checkpoint.GetRevision()
		f.digest, f.digestRev = ev.Checkpoint.GetDigest(), f.applied
	default:
		f.t.Fatalf("unknown message %v", m)
	}
}

type watchClient = grpc.ServerStreamingClient[sigilv1.WatchRevocationsResponse]

// catalogFirst reads a stream's first message, which must be the permission
// catalog, the same as ListPermissions answers.
func (e *env) catalogFirst(s watchClient) {
	e.t.Helper()
	m, err := s.Recv()
	if err != nil {
		e.t.Fatalf("first message: %v", err)
	}
	c := m.GetCatalog()
	if c == nil {
		e.t.Fatalf("first message %v, want the permission catalog", m)
	}
	want, err := e.client.ListPermissions(op(), &sigilv1.ListPermissionsRequest{})
	if err != nil {
		e.t.Fatal(err)
	}
	if len(want.GetPermissions()) == 0 || !proto.Equal(c, &sigilv1.PermissionCatalog{Permissions: want.GetPermissions()}) {
		e.t.Fatalf("streamed catalog %v, ListPermissions %v", c, want.GetPermissions())
	}
}

func (e *env) watch(ctx context.Context, after uint64, epoch string) watchClient {
	e.t.Helper()
	if ctx == nil {
		ctx = withCred(watchToken)
	}
	s, err := e.client.WatchRevocations(ctx, &sigilv1.WatchRevocationsRequest{AfterRevision: after, Epoch: epoch})
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// resume opens a stream resuming after `after`, whose digest is digest.
func (e *env) resume(ctx context.Context, after uint64, epoch string, digest []byte) watchClient {
	e.t.Helper()
	s, err := e.client.WatchRevocations(ctx, &sigilv1.WatchRevocationsRequest{AfterRevision: after, Epoch: epoch, AfterDigest: digest})
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// recvUntil applies messages until cond holds.
func recvUntil(t *testing.T, s watchClient, f *follower, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached on the stream")
		}
		m, err := s.Recv()
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		f.apply(m)
	}
}

func (e *env) revoke(id string) uint64 {
	e.t.Helper()
	r, err := e.client.RevokeToken(op(), &sigilv1.RevokeTokenRequest{TokenId: id})
	if err != nil {
		e.t.Fatal(err)
	}
	return r.GetRevision()
}

func TestWatchSnapshotThenLive(t *testing.T) {
	e := newEnv(t, envOpts{checkpoint: 50 * time.Millisecond})
	var ids []string
	for i := range 4 {
		ids = append(ids, e.mint("org-1", fmt.Sprint("t", i), "alice").GetInfo().GetTokenId())
	}
	e.revoke(ids[0])
	e.revoke(ids[1])
	ctx, cancel := context.WithCancel(withCred(watchToken))
	defer cancel()
	s := e.watch(ctx, 0, "")
	f := newFollower(t)
	e.catalogFirst(s)
	first, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if first.GetSnapshotChunk() == nil {
		t.Fatalf("first message %v, want a snapshot chunk", first)
	}
	f.apply(first)
	recvUntil(t, s, f, func() bool { return f.epoch != "" })
	if !f.revoked[ids[0]] || !f.revoked[ids[1]] || f.revoked[ids[2]] || len(f.keys) != 1 {
		t.Fatalf("snapshot: revoked %v keys %v", f.revoked, f.keys)
	}
	if f.epoch != e.st.Epoch() {
		t.Fatalf("epoch %q, store %q", f.epoch, e.st.Epoch())
	}
	r3 := e.revoke(ids[2])
	recvUntil(t, s, f, func() bool { return f.revoked[ids[2]] && f.applied >= r3 })
	// Key events: rotation announces a pending key at once.
	k, err := e.client.RotateSigningKey(op(), &sigilv1.RotateSigningKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	recvUntil(t, s, f, func() bool { return f.keys[k.GetKeyId()] == sigilv1.SigningKeyState_SIGNING_KEY_STATE_PENDING })
	if _, err := e.client.RevokeSigningKey(op(), &sigilv1.RevokeSigningKeyRequest{KeyId: k.GetKeyId()}); err != nil {
		t.Fatal(err)
	}
	recvUntil(t, s, f, func() bool { return f.keys[k.GetKeyId()] == sigilv1.SigningKeyState_SIGNING_KEY_STATE_REVOKED })
	// Concurrent revocations arrive in order, none missing or repeated
	// (follower.live fails on a duplicate or a step back).
	var wg sync.WaitGroup
	for i := range 20 {
		id := e.mint("org-1", fmt.Sprint("c", i), "bob").GetInfo().GetTokenId()
		ids = append(ids, id)
		wg.Add(1)
		go func() { defer wg.Done(); e.revoke(id) }()
	}
	wg.Wait()
	last := e.st.Revision()
	recvUntil(t, s, f, func() bool { return f.applied >= last })
	for _, id := range ids {
		if id != ids[3] && !f.revoked[id] {
			t.Fatalf("revocation of %s missed", id)
		}
	}
	if f.revoked[ids[3]] {
		t.Fatal("live token reported revoked")
	}
}

func TestWatchResume(t *testing.T) {
	e := newEnv(t, envOpts{checkpoint: 50 * time.Millisecond})
	a := e.mint("org-1", "a", "alice").GetInfo().GetTokenId()
	ctx, cancel := context.WithCancel(withCred(watchToken))
	s := e.watch(ctx, 0, "")
	f := newFollower(t)
	recvUntil(t, s, f, func() bool { return f.epoch != "" })
	e.revoke(a)
	recvUntil(t, s, f, func() bool { return f.revoked[a] })
	cancel()

	// Changes while disconnected.
	var missed []string
	for i := range 5 {
		id := e.mint("org-1", fmt.Sprint("m", i), "alice").GetInfo().GetTokenId()
		missed = append(missed, id)
		e.revoke(id)
	}
	ctx2, cancel2 := context.WithCancel(withCred(watchToken))
	defer cancel2()
	// Resume from the last revision whose digest the follower knows; the
	// events after it come again.
	f.applied = f.digestRev
	s2 := e.resume(ctx2, f.digestRev, f.epoch, f.digest)
	e.catalogFirst(s2)
	first, err := s2.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if first.GetSnapshotChunk() != nil || first.GetSnapshotEnd() != nil {
		t.Fatalf("resume started with a snapshot: %v", first)
	}
	f.apply(first)
	last := e.st.Revision()
	recvUntil(t, s2, f, func() bool { return f.applied >= last })
	for _, id := range missed {
		if !f.revoked[id] {
			t.Fatalf("missed revocation %s after resume", id)
		}
	}

	t.Run("nothing new: checkpoint first", func(t *testing.T) {
		ctx, cancel := context.WithCancel(withCred(watchToken))
		defer cancel()
		d, err := e.st.DigestAt(ctx, e.st.Revision())
		if err != nil {
			t.Fatal(err)
		}
		s := e.resume(ctx, e.st.Revision(), e.st.Epoch(), d)
		e.catalogFirst(s)
		m, err := s.Recv()
		if err != nil || m.GetCheckpoint() == nil || m.GetCheckpoint().GetRevision() != e.st.Revision() {
			t.Fatalf("first message %v %v", m, err)
		}
	})
	t.Run("other epoch: snapshot", func(t *testing.T) {
		ctx, cancel := context.WithCancel(withCred(watchToken))
		defer cancel()
		s := e.watch(ctx, f.applied, "some-other-epoch")
		e.catalogFirst(s)
		m, err := s.Recv()
		if err != nil || m.GetSnapshotChunk() == nil {
			t.Fatalf("first message %v %v, want a snapshot", m, err)
		}
	})
	t.Run("ahead of the store: snapshot", func(t *testing.T) {
		ctx, cancel := context.WithCancel(withCred(watchToken))
		defer cancel()
		s := e.watch(ctx, e.st.Revision()+100, e.st.Epoch())
		e.catalogFirst(s)
		m, err := s.Recv()
		if err != nil || m.GetSnapshotChunk() == nil {
			t.Fatalf("first message %v %v, want a snapshot", m, err)
		}
	})
}

func TestWatchSnapshotAfterCompaction(t *testing.T) {
	e := newEnv(t, envOpts{})
	a := e.mint("org-1", "a", "alice").GetInfo().GetTokenId()
	before := e.st.Revision()
	e.revoke(a)
	// A key event after the follower's revision: once the revocations
	// around it are compacted, only a snapshot brings the follower up to date.
	k, err := e.client.RotateSigningKey(op(), &sigilv1.RotateSigningKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	b := e.mint("org-1", "b", "alice").GetInfo().GetTokenId()
	e.revoke(b)
	live := e.mint("org-1", "live", "alice").GetInfo().GetTokenId()
	// Far in the future both tokens have expired: compaction drops their
	// revocations and the key event.
	floor, err := e.st.Compact(context.Background(), time.Now().Add(400*day))
	if err != nil || floor <= before {
		t.Fatalf("compact: floor %d (follower at %d), %v", floor, before, err)
	}
	ctx, cancel := context.WithCancel(withCred(watchToken))
	defer cancel()
	s := e.watch(ctx, before, e.st.Epoch())
	f := newFollower(t)
	e.catalogFirst(s)
	m, err := s.Recv()
	if err != nil || m.GetSnapshotChunk() == nil {
		t.Fatalf("first message %v %v, want a snapshot after compaction", m, err)
	}
	f.apply(m)
	recvUntil(t, s, f, func() bool { return f.epoch != "" })
	if f.keys[k.GetKeyId()] != sigilv1.SigningKeyState_SIGNING_KEY_STATE_PENDING || f.revoked[live] {
		t.Fatalf("snapshot: keys %v revoked %v", f.keys, f.revoked)
	}
	// Live events continue after the snapshot.
	e.revoke(live)
	recvUntil(t, s, f, func() bool { return f.revoked[live] })
	_ = b
}

func TestWatchAuth(t *testing.T) {
	e := newEnv(t, envOpts{})
	pat := e.manager("org-1", "m", "alice")
	tests := []struct {
		name string
		ctx  context.Context
		code codes.Code
	}{
		{name: "anonymous", ctx: context.Background(), code: codes.Unauthenticated},
		{name: "bad credential", ctx: withCred("sigil_watch_wrong-wrong-wrong"), code: codes.Unauthenticated},
		{name: "PAT", ctx: withCred(pat), code: codes.PermissionDenied},
		{name: "watch", ctx: withCred(watchToken), code: codes.OK},
		{name: "operator", ctx: op(), code: codes.OK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(tc.ctx)
			defer cancel()
			s := e.watch(ctx, 0, "")
			_, err := s.Recv()
			wantCode(t, err, tc.code, "")
		})
	}
	t.Run("watch token cannot manage", func(t *testing.T) {
		_, err := e.client.CreateToken(withCred(watchToken), &sigilv1.CreateTokenRequest{OrgId: "o", Name: "n", CreatedBy: "x",
			Grants: []*sigilv1.Grant{grant([]string{"domain:view"})}, Expiry: ttl(8 * day)})
		wantCode(t, err, codes.PermissionDenied, "")
	})
	t.Run("dev allows anonymous only", func(t *testing.T) {
		d := newEnv(t, envOpts{dev: true})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		s := d.watch(ctx, 0, "")
		if _, err := s.Recv(); err != nil {
			t.Fatalf("dev anonymous: %v", err)
		}
		ctx2, cancel2 := context.WithCancel(withCred("sigil_watch_wrong-wrong-wrong"))
		defer cancel2()
		s2 := d.watch(ctx2, 0, "")
		_, err := s2.Recv()
		wantCode(t, err, codes.Unauthenticated, "")
	})
}

func TestWatchEndsOnShutdown(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx, cancel := context.WithCancel(withCred(watchToken))
	defer cancel()
	s := e.watch(ctx, 0, "")
	f := newFollower(t)
	recvUntil(t, s, f, func() bool { return f.epoch != "" })
	done := make(chan struct{})
	go func() { e.srv.Shutdown(); e.gs.Shutdown(5 * time.Second); close(done) }()
	for {
		m, err := s.Recv()
		if err != nil {
			wantCode(t, err, codes.Unavailable, "")
			break
		}
		f.apply(m)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("server did not stop")
	}
}

func TestWatchSlowConsumerCutOff(t *testing.T) {
	if testing.Short() {
		t.Skip("mints thousands of tokens")
	}
	e := newEnv(t, envOpts{sendTimeout: 500 * time.Millisecond})
	// Enough revoked tokens that the snapshot overflows the HTTP/2 windows
	// of a client that never reads.
	const n = 3000
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 32 {
				_, err := e.client.CreateToken(op(), &sigilv1.CreateTokenRequest{OrgId: "org-1", Name: fmt.Sprint("t", i), CreatedBy: "alice",
					Grants: []*sigilv1.Grant{grant([]string{"domain:view"})}, Expiry: ttl(30 * day)})
				if err != nil {
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

	// A separate connection with fixed 64 KiB windows (no BDP growth) whose
	// stream is never read.
	conn := e.fixedWindowConn(t)
	slow, err := sigilv1.NewTokenAuthorityServiceClient(conn).WatchRevocations(withCred(watchToken), &sigilv1.WatchRevocationsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// Writers are not slowed: mints complete while the stream is stuck.
	for i := range 50 {
		if _, err := e.client.CreateToken(op(), &sigilv1.CreateTokenRequest{OrgId: "org-2", Name: fmt.Sprint("during", i), CreatedBy: "bob",
			Grants: []*sigilv1.Grant{grant([]string{"domain:view"})}, Expiry: ttl(30 * day)}); err != nil {
			t.Fatal(err)
		}
	}
	waitCutOff(t, e, 20*time.Second)
	// Reading now drains what was buffered, then the error.
	for {
		if _, err = slow.Recv(); err != nil {
			break
		}
	}
	wantCode(t, err, codes.ResourceExhausted, "")
	// Mints still work after the cut-off.
	e.mint("org-2", "after", "bob")
}

// Every stream, snapshot or resume, starts with the server's catalog:
// built-in and catalog-file permissions, as ListPermissions lists them.
func TestWatchSendsCatalogFirst(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.yaml")
	file := "products:\n  - name: dns\n    actions:\n      - name: view\n        description: see zones\n      - name: edit\n        description: change zones\n        implies: [dns:view]\n"
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	cat, err := scope.LoadCatalogFile(path)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, envOpts{checkpoint: 50 * time.Millisecond, catalog: cat})
	ctx, cancel := context.WithCancel(withCred(watchToken))
	defer cancel()
	s := e.watch(ctx, 0, "")
	m, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var edit *sigilv1.Permission
	for _, p := range m.GetCatalog().GetPermissions() {
		if p.GetName() == "dns:edit" {
			edit = p
		}
	}
	if edit == nil || edit.GetProduct() != "dns" || !slices.Equal(edit.GetImplies(), []string{"dns:view"}) || edit.GetDescription() != "change zones" {
		t.Fatalf("first message %v: want the catalog with dns:edit implying dns:view", m)
	}
	f := newFollower(t)
	recvUntil(t, s, f, func() bool { return f.epoch != "" })
	cancel()

	// A resume gets it first too, before its first checkpoint.
	ctx2, cancel2 := context.WithCancel(withCred(watchToken))
	defer cancel2()
	s2 := e.resume(ctx2, f.digestRev, f.epoch, f.digest)
	e.catalogFirst(s2)
	m, err = s2.Recv()
	if err != nil || m.GetCheckpoint() == nil {
		t.Fatalf("resume: second message %v %v, want a checkpoint", m, err)
	}
}
