package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

func testCompact(t *testing.T, open Opener) {
	ctx := context.Background()
	s := openTest(t, open) // key k1 at revision 1
	l := &eventLog{t: t, s: s}
	a := l.create("a", time.Hour)          // 2
	b := l.create("b", 10*time.Hour)       // 3
	l.revoke(a)                            // 4
	k2 := l.addKey("k2")                   // 5
	revB := l.revoke(b)                    // 6: unexpired at t0+2h: the prefix ends here
	act := l.setKey("k2", store.KeyActive) // 7: kept (after the prefix)
	c := l.create("c", time.Hour)          // 8
	l.revoke(c)                            // 9: expired at t0+2h, dropped though after the prefix
	if s.Revision() != 9 || revB != 6 || k2 != 5 || act != 7 {
		t.Fatalf("setup at revision %d", s.Revision())
	}

	now := t0.Add(2 * time.Hour)
	floor, err := s.Compact(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	if floor != k2 {
		t.Fatalf("floor %d, want %d (the newest key event dropped)", floor, k2)
	}
	for _, after := range []uint64{0, 1, 4} {
		if _, err := s.EventsAfter(ctx, after, 0); !errors.Is(err, store.ErrCompacted) {
			t.Errorf("EventsAfter(%d) after compaction: %v, want ErrCompacted", after, err)
		}
	}
	evs, err := s.EventsAfter(ctx, floor, 0)
	if err != nil || !slices.Equal(revisions(evs), []uint64{6, 7}) {
		t.Errorf("EventsAfter(floor) = %v, %v", revisions(evs), err)
	}
	// A follower behind only on token events keeps streaming.
	if evs, err := s.EventsAfter(ctx, 8, 0); err != nil || len(evs) != 0 {
		t.Errorf("EventsAfter(8) = %v, %v", revisions(evs), err)
	}

	snap, err := s.Snapshot(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Revoked) != 1 || snap.Revoked[0].TokenID != b.ID || !snap.Revoked[0].ExpiresAt.Equal(b.ExpireTime) {
		t.Errorf("snapshot revoked %+v, want only %s", snap.Revoked, b.ID)
	}

	// Compacting again changes nothing; then once b has expired, everything
	// goes and the floor reaches the last key event.
	if again, err := s.Compact(ctx, now); err != nil || again != floor {
		t.Errorf("second Compact = %d, %v; want %d", again, err, floor)
	}
	later := t0.Add(11 * time.Hour)
	floor, err = s.Compact(ctx, later)
	if err != nil || floor != act {
		t.Fatalf("Compact(later) = %d, %v; want %d", floor, err, act)
	}
	if evs, err := s.EventsAfter(ctx, floor, 0); err != nil || len(evs) != 0 {
		t.Errorf("EventsAfter(floor) after compacting everything = %v, %v", revisions(evs), err)
	}
	if snap, err := s.Snapshot(ctx, later); err != nil || len(snap.Revoked) != 0 || snap.Revision != 9 || len(snap.Keys) != 2 {
		t.Errorf("snapshot %+v, %v", snap, err)
	}
	// The log goes on from the same counter.
	d := l.create("d", 20*time.Hour)
	rev := l.revoke(d)
	if rev != 11 {
		t.Errorf("revision after compaction %d, want 11", rev)
	}
	evs, err = s.EventsAfter(ctx, floor, 0)
	if err != nil || !slices.Equal(revisions(evs), []uint64{11}) {
		t.Errorf("EventsAfter(floor) = %v, %v", revisions(evs), err)
	}
	// A compaction never lowers the floor.
	if f, err := s.Compact(ctx, t0); err != nil || f != floor {
		t.Errorf("Compact(earlier) = %d, %v; want %d", f, err, floor)
	}
}

// testCompactAndDigests: compaction drops the digests below the floor and
// keeps those at and above it unchanged; a snapshot carries the digest at
// its revision; the chain goes on after compaction.
func testCompactAndDigests(t *testing.T, open Opener) {
	ctx := context.Background()
	s := openTest(t, open)
	for i := range 6 {
		ttl := 400 * 24 * time.Hour
		if i%2 == 0 {
			ttl = 8 * 24 * time.Hour
		}
		tk := tok("org", fmt.Sprint("n", i), "u", ttl)
		mustCreate(t, s, tk)
		if _, _, _, err := s.RevokeToken(ctx, tk.ID, auditFor(store.AuditTokenRevoked, t0)); err != nil {
			t.Fatal(err)
		}
	}
	addTestKey(t, s, "k2")
	head := s.Revision()
	before := map[uint64][]byte{}
	seen := map[string]uint64{}
	for r := uint64(0); r <= head; r++ {
		before[r] = mustDigest(t, s, r)
		if prev, ok := seen[string(before[r])]; ok {
			t.Fatalf("digests at %d and %d are equal", prev, r)
		}
		seen[string(before[r])] = r
	}
	snap, err := s.Snapshot(ctx, t0)
	if err != nil || snap.Revision != head || !bytes.Equal(snap.Digest, before[head]) || snap.Epoch != s.Epoch() {
		t.Fatalf("snapshot at %d with digest %x, %v; want %d", snap.Revision, snap.Digest, err, head)
	}
	floor, err := s.Compact(ctx, t0.Add(30*24*time.Hour))
	if err != nil || floor == 0 {
		t.Fatalf("Compact = %d, %v; the test needs the floor to rise", floor, err)
	}
	if _, err := s.DigestAt(ctx, floor-1); !errors.Is(err, store.ErrCompacted) {
		t.Fatalf("DigestAt below the floor: %v, want ErrCompacted", err)
	}
	for r := floor; r <= head; r++ {
		if got := mustDigest(t, s, r); !bytes.Equal(got, before[r]) {
			t.Fatalf("digest at %d changed by compaction", r)
		}
	}
	if _, err := s.DigestAt(ctx, head+1); !errors.Is(err, store.ErrCompacted) {
		t.Fatalf("DigestAt ahead of the store: %v, want ErrCompacted", err)
	}
	rev := mustCreate(t, s, tok("org", "after", "u", time.Hour))
	if d := mustDigest(t, s, rev); rev != head+1 || len(d) != store.DigestSize || bytes.Equal(d, before[head]) {
		t.Fatalf("after compaction: revision %d, digest %x", rev, d)
	}
}

// testCascadeTree revokes the root of a tree of cfg.TreeSize descendants
// (a ternary tree with a chain under its last node): each descendant is
// revoked before its parent, with its own event and audit record, at
// consecutive revisions ending with the root's, and a token cannot be
// minted through any of them afterwards.
func testCascadeTree(t *testing.T, cfg Config) {
	ctx := context.Background()
	s := openTest(t, cfg.Open)
	size := cfg.TreeSize
	root := tok("o", "root", "u", time.Hour)
	nodes := []store.Token{root}
	chain := size / 5
	for i := 1; i <= size; i++ {
		parent := nodes[i-1]
		if i <= size-chain {
			parent = nodes[(i-1)/3]
		}
		nodes = append(nodes, childOf(parent, fmt.Sprint("n", i)))
	}
	for _, n := range nodes {
		mustCreate(t, s, n)
	}
	before := s.Revision()
	_, rev, n, err := s.RevokeToken(ctx, root.ID, auditFor(store.AuditTokenRevoked, t0))
	if err != nil || n != int64(size) || rev != before+uint64(size)+1 {
		t.Fatalf("RevokeToken(root) = %d, %d descendants, %v; want %d, %d", rev, n, err, before+uint64(size)+1, size)
	}
	if s.Revision() < rev {
		t.Fatalf("Revision() = %d after a revocation at %d", s.Revision(), rev)
	}
	recs := checkRevokedAfter(t, s, "o", before, nodes)
	if len(recs) != size+1 {
		t.Fatalf("%d audit records, want %d", len(recs), size+1)
	}
	revAt := map[string]uint64{}
	for _, x := range nodes {
		revAt[x.ID] = get(t, s, x.ID).RevokeRev
	}
	for _, x := range nodes[1:] {
		if revAt[x.ID] >= revAt[x.ParentID] {
			t.Fatalf("token %s revoked at %d, not before its parent (%d)", x.ID, revAt[x.ID], revAt[x.ParentID])
		}
	}
	c := childOf(nodes[size], "late")
	if _, err := s.CreateToken(ctx, c, auditFor(store.AuditTokenCreated, t0)); !errors.Is(err, store.ErrNotActive) {
		t.Fatalf("minting through a revoked descendant: %v, want ErrNotActive", err)
	}
	// A bulk revocation of as many finds nothing left.
	if count, _, err := s.RevokeTokens(ctx, "o", "", auditFor(store.AuditTokensRevoked, t0)); err != nil || count != 0 {
		t.Fatalf("RevokeTokens after the cascade = %d, %v", count, err)
	}
}

// testConcurrentWriters: writers racing on one store never lose a write,
// never share a revision, and never both take a name.
func testConcurrentWriters(t *testing.T, open Opener) {
	ctx := context.Background()
	s := openTest(t, open)
	const writers, each = 8, 10
	before := s.Revision()
	var (
		mu    sync.Mutex
		revs  = map[uint64]bool{}
		taken int
		wg    sync.WaitGroup
	)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				// Every writer also races for the shared name "same".
				name := fmt.Sprint("w", w, "-", i)
				if i == 0 {
					name = "same"
				}
				rev, err := s.CreateToken(ctx, tok("o", name, "u", time.Hour), auditFor(store.AuditTokenCreated, t0))
				mu.Lock()
				switch {
				case err == nil && revs[rev]:
					t.Errorf("revision %d handed out twice", rev)
				case err == nil:
					revs[rev] = true
					if name == "same" {
						taken++
					}
				case errors.Is(err, store.ErrNameTaken) && name == "same":
				default:
					t.Errorf("CreateToken(%s): %v", name, err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	want := writers*(each-1) + 1
	if taken != 1 || len(revs) != want || s.Revision() != before+uint64(want) {
		t.Fatalf("name taken %d times, %d creations, revision %d; want 1, %d, %d", taken, len(revs), s.Revision(), want, before+uint64(want))
	}
	for r := before + 1; r <= s.Revision(); r++ {
		if !revs[r] {
			t.Fatalf("revision %d is missing: revisions have a gap", r)
		}
	}
}
