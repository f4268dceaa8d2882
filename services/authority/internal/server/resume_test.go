package server

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// TestResumeDecision is the resume decision table: a follower resumes only
// from a revision of the very history it applied; everything else is a
// snapshot.
func TestResumeDecision(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	origPath := filepath.Join(dir, "orig.db")
	open := func(path string) *store.Bolt {
		s, err := store.Open(path, store.Options{Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	n := 0
	mint := func(s *store.Bolt, revoke bool) {
		t.Helper()
		n++
		now := time.Now()
		tk := store.Token{
			ID: hex32(n), OrgID: "org", Name: "t" + hex32(n), CreatedBy: "u", KeyID: "k",
			Grants:     []scope.Grant{{Permissions: []string{"domain:view"}}},
			CreateTime: now, ExpireTime: now.Add(30 * day),
		}
		if _, err := s.CreateToken(ctx, tk, store.AuditRecord{Time: now, Actor: "operator", Action: store.AuditTokenCreated}); err != nil {
			t.Fatal(err)
		}
		if revoke {
			if _, _, _, err := s.RevokeToken(ctx, tk.ID, store.AuditRecord{Time: now, Actor: "operator", Action: store.AuditTokenRevoked}); err != nil {
				t.Fatal(err)
			}
		}
	}
	digest := func(s *store.Bolt, rev uint64) []byte {
		t.Helper()
		d, err := s.DigestAt(ctx, rev)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}

	orig := open(origPath)
	if _, err := orig.AddKey(ctx, store.Key{ID: "k", State: store.KeyActive, Public: make([]byte, 32), SealedPrivate: []byte("x"), CreateTime: time.Now(), ActivateTime: time.Now()},
		store.AuditRecord{Time: time.Now(), Actor: "operator", Action: store.AuditKeyRotated}); err != nil {
		t.Fatal(err)
	}
	mint(orig, true)
	backupRev := orig.Revision()
	backupDigest := digest(orig, backupRev)
	// The backup: a copy of the file at backupRev.
	if err := orig.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(origPath)
	if err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(dir, "restored.db")
	if err := os.WriteFile(copyPath, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	orig = open(origPath)
	// The original goes on (the follower applies this), then the copy is
	// restored and takes other events up to the same revision and beyond.
	mint(orig, true)
	mint(orig, true)
	followerRev := orig.Revision()
	followerDigest := digest(orig, followerRev)
	restored := open(copyPath)
	mint(restored, true)
	mint(restored, false)
	mint(restored, false)
	if restored.Revision() != followerRev {
		t.Fatalf("restored revision %d, want %d (same numbers, other events)", restored.Revision(), followerRev)
	}
	mint(restored, true) // and past it

	req := func(after uint64, epoch string, d []byte) *sigilv1.WatchRevocationsRequest {
		return &sigilv1.WatchRevocationsRequest{AfterRevision: after, Epoch: epoch, AfterDigest: d}
	}
	epoch := orig.Epoch()
	if restored.Epoch() != epoch {
		t.Fatal("a copy has another epoch")
	}
	for _, c := range []struct {
		name string
		st   store.Store
		req  *sigilv1.WatchRevocationsRequest
		want bool
	}{
		{"same history", orig, req(followerRev, epoch, followerDigest), true},
		{"same history, older revision", orig, req(backupRev, epoch, backupDigest), true},
		{"restored copy, same revision, other events", restored, req(followerRev, epoch, followerDigest), false},
		{"restored copy, revision it shares", restored, req(backupRev, epoch, backupDigest), true},
		{"missing digest (older follower)", orig, req(followerRev, epoch, nil), false},
		{"short digest", orig, req(followerRev, epoch, followerDigest[:16]), false},
		{"ahead of the store", orig, req(followerRev+5, epoch, followerDigest), false},
		{"ahead of a restored store", restored, req(restored.Revision()+1, epoch, followerDigest), false},
		{"other epoch", orig, req(followerRev, "00000000000000000000000000000000", followerDigest), false},
		{"revision 0", orig, req(0, epoch, backupDigest), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := canResume(ctx, c.st, c.req)
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Fatalf("canResume = %v, want %v", got, c.want)
			}
		})
	}
}

func hex32(n int) string {
	const digits = "0123456789abcdef"
	b := []byte("00000000000000000000000000000000")
	for i := len(b) - 1; n > 0; i-- {
		b[i] = digits[n%16]
		n /= 16
	}
	return string(b)
}

// An older follower that sends no digest gets a snapshot, even when it is
// at the store's revision in the store's epoch.
func TestWatchNoDigestGetsSnapshot(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.mint("org-1", "a", "alice")
	ctx, cancel := context.WithCancel(withCred(watchToken))
	defer cancel()
	s := e.watch(ctx, e.st.Revision(), e.st.Epoch())
	e.catalogFirst(s)
	m, err := s.Recv()
	if err != nil || m.GetSnapshotChunk() == nil {
		t.Fatalf("first message %v %v, want a snapshot", m, err)
	}
	f := newFollower(t)
	f.apply(m)
	recvUntil(t, s, f, func() bool { return f.epoch != "" })
	want, err := e.st.DigestAt(ctx, f.applied)
	if err != nil || string(f.digest) != string(want) || f.digestRev != f.applied {
		t.Fatalf("snapshot end digest at %d does not match the store's (%v)", f.digestRev, err)
	}
}

// ConfirmHistory answers by canResume's rule with the store's current
// revision, to the watch credential and the operator only, and names the
// field of a malformed request.
func TestConfirmHistory(t *testing.T) {
	e := newEnv(t, envOpts{})
	tok := e.mint("org-1", "a", "alice")
	if _, err := e.client.RevokeToken(op(), &sigilv1.RevokeTokenRequest{TokenId: tok.GetInfo().GetTokenId()}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	mid := e.st.Revision()
	d, err := e.st.DigestAt(ctx, mid)
	if err != nil {
		t.Fatal(err)
	}
	e.mint("org-1", "b", "alice")
	head := e.st.Revision()
	epoch := e.st.Epoch()
	other := append([]byte(nil), d...)
	other[0] ^= 1
	for _, c := range []struct {
		name string
		cred string
		req  *sigilv1.ConfirmHistoryRequest
		want bool
	}{
		{"in history, watch credential", watchToken, &sigilv1.ConfirmHistoryRequest{Epoch: epoch, Revision: mid, Digest: d}, true},
		{"in history, operator", opToken, &sigilv1.ConfirmHistoryRequest{Epoch: epoch, Revision: mid, Digest: d}, true},
		{"other digest", watchToken, &sigilv1.ConfirmHistoryRequest{Epoch: epoch, Revision: mid, Digest: other}, false},
		{"ahead of the store", watchToken, &sigilv1.ConfirmHistoryRequest{Epoch: epoch, Revision: head + 1, Digest: d}, false},
		{"other epoch", watchToken, &sigilv1.ConfirmHistoryRequest{Epoch: "00000000000000000000000000000000", Revision: mid, Digest: d}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, err := e.client.ConfirmHistory(withCred(c.cred), c.req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetInHistory() != c.want || resp.GetRevision() != head {
				t.Fatalf("in_history %v revision %d, want %v %d", resp.GetInHistory(), resp.GetRevision(), c.want, head)
			}
		})
	}
	t.Run("a PAT is denied", func(t *testing.T) {
		_, err := e.client.ConfirmHistory(withCred(e.manager("org-1", "m", "alice")), &sigilv1.ConfirmHistoryRequest{Epoch: epoch, Revision: mid, Digest: d})
		wantCode(t, err, codes.PermissionDenied, "")
	})
	t.Run("anonymous", func(t *testing.T) {
		_, err := e.client.ConfirmHistory(ctx, &sigilv1.ConfirmHistoryRequest{Epoch: epoch, Revision: mid, Digest: d})
		wantCode(t, err, codes.Unauthenticated, "")
	})
	for field, req := range map[string]*sigilv1.ConfirmHistoryRequest{
		"epoch":    {Revision: mid, Digest: d},
		"revision": {Epoch: epoch, Digest: d},
		"digest":   {Epoch: epoch, Revision: mid, Digest: d[:16]},
	} {
		t.Run("invalid "+field, func(t *testing.T) {
			_, err := e.client.ConfirmHistory(withCred(watchToken), req)
			wantCode(t, err, codes.InvalidArgument, field)
		})
	}
}
