package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// recomputeChain checks every stored digest from the chain's first entry
// to the head against the events: digest(n) = H(digest(n-1) ‖ n ‖ event n).
// It returns the number of links checked.
func recomputeChain(t *testing.T, s *Bolt) int {
	t.Helper()
	n := 0
	if err := s.db.View(func(tx *bolt.Tx) error {
		ds, evs := tx.Bucket(bucketDigests), tx.Bucket(bucketEvents)
		c := ds.Cursor()
		k, prev := c.First()
		if k == nil {
			return errors.New("no digest at all")
		}
		for k, v := c.Next(); k != nil; k, v = c.Next() {
			rev := binary.BigEndian.Uint64(k)
			ev := evs.Get(k)
			if ev == nil {
				// Compact may drop the event; the digest stays.
				prev = v
				continue
			}
			if want := chainDigest(prev, rev, ev); !bytes.Equal(v, want) {
				t.Errorf("digest at %d does not follow from the one before and event %d", rev, rev)
			}
			prev = v
			n++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func mustDigest(t *testing.T, s *Bolt, rev uint64) []byte {
	t.Helper()
	d, err := s.DigestAt(context.Background(), rev)
	if err != nil {
		t.Fatalf("DigestAt(%d): %v", rev, err)
	}
	if len(d) != DigestSize {
		t.Fatalf("DigestAt(%d) has %d bytes", rev, len(d))
	}
	return d
}

func TestDigestChainAcrossReopenAndCompaction(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sigil.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	addTestKey(t, s, testKeyID)
	var short []string
	for i := range 6 {
		ttl := 400 * 24 * time.Hour
		if i%2 == 0 {
			ttl = 8 * 24 * time.Hour
		}
		tk := tok("org", "n"+string(rune('a'+i)), "u", ttl)
		mustCreate(t, s, tk)
		if _, _, _, err := s.RevokeToken(ctx, tk.ID, auditFor(AuditTokenRevoked, t0)); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			short = append(short, tk.ID)
		}
	}
	rev := s.Revision()
	before := map[uint64][]byte{}
	for r := uint64(0); r <= rev; r++ {
		before[r] = mustDigest(t, s, r)
	}
	if n := recomputeChain(t, s); n != int(rev) {
		t.Fatalf("checked %d links, want %d", n, rev)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Reopen: the same digests, and the chain goes on from the head.
	s = openBare(t, path)
	for r, d := range before {
		if got := mustDigest(t, s, r); !bytes.Equal(got, d) {
			t.Fatalf("digest at %d changed across reopen", r)
		}
	}
	addTestKey(t, s, "k2")
	if n := recomputeChain(t, s); n != int(rev)+1 {
		t.Fatalf("checked %d links after reopen, want %d", n, rev+1)
	}

	// Compaction: a floor above 0 (the first key event goes) drops the
	// digests below it and keeps the head's.
	head := s.Revision()
	headDigest := mustDigest(t, s, head)
	floor, err := s.Compact(ctx, t0.Add(30*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if floor == 0 {
		t.Fatal("compaction floor stayed 0; the test needs it to rise")
	}
	if _, err := s.DigestAt(ctx, floor-1); !errors.Is(err, ErrCompacted) {
		t.Fatalf("DigestAt below the floor: %v, want ErrCompacted", err)
	}
	if got := mustDigest(t, s, floor); !bytes.Equal(got, before[floor]) {
		t.Fatal("digest at the floor changed")
	}
	if got := mustDigest(t, s, head); !bytes.Equal(got, headDigest) {
		t.Fatal("head digest changed by compaction")
	}
	if _, err := s.DigestAt(ctx, head+1); !errors.Is(err, ErrCompacted) {
		t.Fatalf("DigestAt ahead of the store: %v, want ErrCompacted", err)
	}
	// The chain goes on after compaction from the same head.
	tk := tok("org", "after", "u", 400*24*time.Hour)
	mustCreate(t, s, tk)
	recomputeChain(t, s)
	_ = short
}

func TestDigestDiffersAcrossHistories(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	orig := filepath.Join(dir, "orig.db")
	s, err := Open(orig, Options{})
	if err != nil {
		t.Fatal(err)
	}
	addTestKey(t, s, testKeyID)
	mustCreate(t, s, tok("org", "a", "u", 30*24*time.Hour))
	at := s.Revision()
	atDigest := mustDigest(t, s, at)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(orig)
	if err != nil {
		t.Fatal(err)
	}
	cp := filepath.Join(dir, "copy.db")
	if err := os.WriteFile(cp, raw, 0o600); err != nil {
		t.Fatal(err)
	}

	a, b := openBare(t, orig), openBare(t, cp)
	if a.Epoch() != b.Epoch() {
		t.Fatal("a copy has another epoch")
	}
	// The common prefix has the same digest in both.
	if !bytes.Equal(mustDigest(t, a, at), mustDigest(t, b, at)) || !bytes.Equal(mustDigest(t, b, at), atDigest) {
		t.Fatal("a copy disagrees on the digest of the history it shares")
	}
	// The same revision numbers reached by different events differ.
	tk := tok("org", "b", "u", 30*24*time.Hour)
	mustCreate(t, a, tk)
	if _, _, _, err := a.RevokeToken(ctx, tk.ID, auditFor(AuditTokenRevoked, t0)); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, b, tok("org", "c", "u", 30*24*time.Hour))
	mustCreate(t, b, tok("org", "d", "u", 30*24*time.Hour))
	if a.Revision() != b.Revision() {
		t.Fatalf("revisions %d and %d; the test needs them equal", a.Revision(), b.Revision())
	}
	for r := at + 1; r <= a.Revision(); r++ {
		if bytes.Equal(mustDigest(t, a, r), mustDigest(t, b, r)) {
			t.Fatalf("different histories share the digest at %d", r)
		}
	}

	// Two new files never share a digest, even at revision 0.
	x, y := openBare(t, filepath.Join(dir, "x.db")), openBare(t, filepath.Join(dir, "y.db"))
	if bytes.Equal(mustDigest(t, x, 0), mustDigest(t, y, 0)) {
		t.Fatal("two new files share the digest at revision 0")
	}
}

// A file without digests (written before they existed, or by an older
// build after them) is reseeded at its last revision; older revisions have
// no digest and so cannot be resumed from.
func TestDigestReseedsFileWithoutChain(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sigil.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	addTestKey(t, s, testKeyID)
	mustCreate(t, s, tok("org", "a", "u", 30*24*time.Hour))
	rev := s.Revision()
	old := mustDigest(t, s, rev)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketDigests) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s = openBare(t, path)
	d := mustDigest(t, s, rev)
	if bytes.Equal(d, old) {
		t.Fatal("the reseeded chain has the old head digest")
	}
	if _, err := s.DigestAt(ctx, rev-1); !errors.Is(err, ErrCompacted) {
		t.Fatalf("DigestAt before the chain's start: %v, want ErrCompacted", err)
	}
	mustCreate(t, s, tok("org", "b", "u", 30*24*time.Hour))
	if n := recomputeChain(t, s); n != 1 {
		t.Fatalf("checked %d links, want 1", n)
	}
}

// Group-committed mutations chain one after the other in one transaction.
func TestDigestChainUnderGroupCommit(t *testing.T) {
	s := openTest(t)
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			mustCreate(t, s, tok("org", "n"+string(rune('A'+i)), "u", 30*24*time.Hour))
		})
	}
	wg.Wait()
	if n := recomputeChain(t, s); n != int(s.Revision()) {
		t.Fatalf("checked %d links, want %d", n, s.Revision())
	}
}
