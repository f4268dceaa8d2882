package follower

import (
	"reflect"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/pkg/token"
)

// revokedN returns n revoked-token entries of new ids, and the ids.
func revokedN(t *testing.T, n int) ([]*sigilv1.TokenRevoked, []token.ID) {
	t.Helper()
	entries := make([]*sigilv1.TokenRevoked, n)
	ids := make([]token.ID, n)
	for i := range n {
		ids[i] = tid(t)
		entries[i] = revokedTok(0, ids[i], t0.Add(time.Hour))
	}
	return entries, ids
}

// TestSnapshotSwitchesWhole: a new snapshot (its revoked set made for the
// size of the one it replaces) answers nothing until its end: while its
// chunks arrive, checks see the old state whole; after the end, the new
// one whole, whether it is smaller or larger than the old one.
func TestSnapshotSwitchesWhole(t *testing.T) {
	for _, tc := range []struct {
		name     string
		old, new int
	}{
		{"smaller than the last", 300, 3},
		{"as large as the last", 300, 300},
		{"larger than the last", 3, 300},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t)
			s := h.next(t)
			oldEntries, oldIDs := revokedN(t, tc.old)
			s.Send(t, chunk("e1", 10, []*sigilv1.SigningKey{key("k1", active, pubKey(t))}, oldEntries...), snapEnd("e1", 10))
			h.waitRev(t, 10)
			s.End(status.Error(codes.Unavailable, "gone"))

			s2 := h.next(t)
			newEntries, newIDs := revokedN(t, tc.new)
			half := tc.new / 2
			// A malformed entry after the first half marks when that
			// chunk has been applied to the snapshot being received.
			malformed := h.f.Stats().Malformed
			s2.Send(t, chunk("e2", 3, []*sigilv1.SigningKey{key("k2", active, pubKey(t))}, append(newEntries[:half:half], &sigilv1.TokenRevoked{TokenId: "not-an-id"})...))
			waitFor(t, "the first chunk applied", func() bool { return h.f.Stats().Malformed > malformed })
			if h.f.Epoch() != "e1" || h.f.Revision() != 10 || h.f.RevokedCount() != tc.old {
				t.Fatalf("half a snapshot in: epoch %q revision %d, %d revoked; want the old state (e1, 10, %d)", h.f.Epoch(), h.f.Revision(), h.f.RevokedCount(), tc.old)
			}
			for _, id := range oldIDs {
				if !isRevoked(h.f, id) {
					t.Fatal("half a snapshot in: a token of the old state no longer revoked")
				}
			}
			for _, id := range newIDs[:half] {
				if isRevoked(h.f, id) {
					t.Fatal("half a snapshot in: a token of the new snapshot already answered as revoked")
				}
			}
			if known, _ := keyState(h.f, "k2"); known {
				t.Fatal("half a snapshot in: its key already known")
			}

			s2.Send(t, chunk("e2", 3, nil, newEntries[half:]...), snapEnd("e2", 3))
			waitFor(t, "the new snapshot", func() bool { return h.f.Stats().Snapshots == 2 })
			if h.f.Epoch() != "e2" || h.f.Revision() != 3 || h.f.RevokedCount() != tc.new {
				t.Fatalf("after the end: epoch %q revision %d, %d revoked; want e2, 3, %d", h.f.Epoch(), h.f.Revision(), h.f.RevokedCount(), tc.new)
			}
			for _, id := range newIDs {
				if !isRevoked(h.f, id) {
					t.Fatal("after the end: a token of the new snapshot not revoked")
				}
			}
			for _, id := range oldIDs {
				if isRevoked(h.f, id) {
					t.Fatal("after the end: a token of the old state still revoked")
				}
			}
		})
	}
}

// TestNewPendingSizedFromState: a snapshot's revoked set is made for the
// size of the current one.
func TestNewPendingSizedFromState(t *testing.T) {
	f := New(Options{})
	if p := f.newPending("e1", 1); p.hint != 0 || len(p.revoked) != 0 || p.epoch != "e1" || p.revision != 1 {
		t.Fatalf("first snapshot: %+v, want an empty set with no size hint", p)
	}
	for i := range 40 {
		f.st.revoked[token.ID{byte(i + 1)}] = 1
	}
	if p := f.newPending("e1", 2); p.hint != 40 || len(p.revoked) != 0 || p.keys == nil {
		t.Fatalf("next snapshot: hint %d, %d revoked; want 40 and an empty set", p.hint, len(p.revoked))
	}
}

// TestFittedShrinksOnlyWhenSmall: a revoked set holding less than half of
// the size it was made for is copied into one made for its size; any
// other is kept as it is. The entries are the same either way.
func TestFittedShrinksOnlyWhenSmall(t *testing.T) {
	for _, tc := range []struct {
		n, hint int
		copied  bool
	}{
		{0, 0, false},
		{10, 0, false},
		{10, 20, false},
		{10, 21, false}, // 21/2 = 10
		{9, 20, true},
		{0, 1000, true},
		{3, 1000, true},
	} {
		m := make(map[token.ID]int64, tc.hint)
		for i := range tc.n {
			m[token.ID{byte(i + 1)}] = int64(i)
		}
		got := fitted(m, tc.hint)
		if copied := reflect.ValueOf(got).UnsafePointer() != reflect.ValueOf(m).UnsafePointer(); copied != tc.copied {
			t.Errorf("%d entries, hint %d: copied %v, want %v", tc.n, tc.hint, copied, tc.copied)
		}
		if !reflect.DeepEqual(got, m) {
			t.Errorf("%d entries, hint %d: entries changed", tc.n, tc.hint)
		}
	}
}
