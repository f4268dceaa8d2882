package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// childOf returns a token minted through parent: same organization and
// creator, as manage mints them.
func childOf(parent Token, name string) Token {
	c := tok(parent.OrgID, name, parent.CreatedBy, time.Hour)
	c.ParentID = parent.ID
	return c
}

// get reads a token or fails the test.
func get(t *testing.T, s *Bolt, id string) Token {
	t.Helper()
	tk, err := s.GetToken(context.Background(), id)
	if err != nil {
		t.Fatalf("GetToken(%s): %v", id, err)
	}
	return tk
}

// checkRevokedAfter checks the revocations committed after revision before:
// exactly the tokens want (by id), one EventTokenRevoked and one audit
// record each at the token's revocation revision, each token revoked before
// its parent when both are in want. It returns the audit records by token id.
func checkRevokedAfter(t *testing.T, s *Bolt, org string, before uint64, want []Token) map[string]AuditRecord {
	t.Helper()
	ctx := context.Background()
	byID := map[string]Token{}
	for _, w := range want {
		tk := get(t, s, w.ID)
		if tk.RevokeRev <= before {
			t.Fatalf("token %s (%s): revoked at %d, want after %d", tk.Name, tk.ID, tk.RevokeRev, before)
		}
		byID[tk.ID] = tk
	}
	var evs []Event
	for after := before; ; {
		page, err := s.EventsAfter(ctx, after, MaxEventLimit)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		evs = append(evs, page...)
		after = page[len(page)-1].Revision
	}
	if len(evs) != len(want) {
		t.Fatalf("%d events after %d, want %d revocations", len(evs), before, len(want))
	}
	for i, ev := range evs {
		tk, ok := byID[ev.TokenID]
		if ev.Kind != EventTokenRevoked || !ok || ev.Revision != tk.RevokeRev || ev.Revision != before+uint64(i)+1 {
			t.Fatalf("event %d: %+v; want a dense revocation of a token of the tree", i, ev)
		}
	}
	for _, tk := range byID {
		if p, ok := byID[tk.ParentID]; ok && tk.RevokeRev >= p.RevokeRev {
			t.Errorf("token %s revoked at %d, not before its parent %s (at %d)", tk.Name, tk.RevokeRev, p.Name, p.RevokeRev)
		}
	}
	out := map[string]AuditRecord{}
	for after := before; ; {
		recs, err := listAuditAfter(ctx, s, org, after, MaxPageSize)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			return out
		}
		for _, r := range recs {
			if _, dup := out[r.TokenID]; dup {
				t.Fatalf("two audit records of token %q", r.TokenID)
			}
			out[r.TokenID] = r
		}
		after = recs[len(recs)-1].Revision
	}
}

// revokeWithoutCascade revokes a token as the store did before the cascade
// existed: a file from then may hold live descendants of a revoked token.
func revokeWithoutCascade(t *testing.T, s *Bolt, id string) uint64 {
	t.Helper()
	rev, err := s.mutate(context.Background(), func(w *writer) error {
		tk, createRev, err := getToken(w.kv, id)
		if err != nil {
			return err
		}
		a := auditFor(AuditTokenRevoked, t0)
		if _, err := revokeToken(w, tk, createRev, &a); err != nil {
			return err
		}
		fillAudit(&a, &tk)
		return w.audit(a)
	})
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

// TestRevokeAgainRevokesLegacyDescendants: a token revoked before the
// cascade existed left its child live (CheckFile reports it). Revoking it
// again keeps its original revocation but revokes the child, and returns the
// child's revision (the latest of the tree); a third time writes nothing
// and still returns that revision.
func TestRevokeAgainRevokesLegacyDescendants(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	p := tok("o", "p", "u", time.Hour)
	mustCreate(t, s, p)
	c := childOf(p, "c")
	mustCreate(t, s, c)
	pRev := revokeWithoutCascade(t, s, p.ID)
	if err := s.db.View(func(tx *bolt.Tx) error { return checkInvariants(boltKV{tx}) }); err == nil || !strings.Contains(err.Error(), "unrevoked when its parent") {
		t.Fatalf("checkInvariants with a live child of a revoked token: %v", err)
	}
	got, rev, n, err := s.RevokeToken(ctx, p.ID, auditFor(AuditTokenRevoked, t0.Add(time.Hour)))
	if err != nil || n != 1 || got.RevokeRev != pRev || rev != pRev+1 || s.Revision() != rev {
		t.Fatalf("revoke again: token at %d, revision %d, %d descendants, %v; want %d, %d, 1", got.RevokeRev, rev, n, err, pRev, pRev+1)
	}
	if gc := get(t, s, c.ID); gc.RevokeRev != rev || gc.RevokeReason != CascadeReason(p.ID, "test") {
		t.Fatalf("child: revoked at %d (%q)", gc.RevokeRev, gc.RevokeReason)
	}
	_, rev3, n3, err := s.RevokeToken(ctx, p.ID, auditFor(AuditTokenRevoked, t0.Add(time.Hour)))
	if err != nil || n3 != 0 || rev3 != rev || s.Revision() != rev {
		t.Fatalf("third revoke: %d, %d descendants, %v; want %d, 0, nothing written", rev3, n3, err, rev)
	}
}

// TestParentIndexInvariants: checkInvariants notices a token missing from
// the parent index, an index entry naming no token, and one filing a token
// under a token that is not its parent.
func TestParentIndexInvariants(t *testing.T) {
	s := openTest(t)
	p := tok("o", "p", "u", time.Hour)
	mustCreate(t, s, p)
	c := childOf(p, "c")
	mustCreate(t, s, c)
	if err := s.db.View(func(tx *bolt.Tx) error { return checkInvariants(boltKV{tx}) }); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		do   func(b *bolt.Bucket) error
		want string
	}{
		{"missing", func(b *bolt.Bucket) error { return b.Delete(childKey(p.ID, c.ID)) },
			"not in the parent index"},
		{"dangling", func(b *bolt.Bucket) error { return b.Put(childKey(p.ID, newID()), nil) },
			"parent index: token"},
		{"wrong parent", func(b *bolt.Bucket) error { return b.Put(childKey(c.ID, p.ID), nil) },
			"its record under"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.db.Update(func(tx *bolt.Tx) error {
				b := tx.Bucket(bucketTokensByParent)
				if err := tc.do(b); err != nil {
					return err
				}
				if err := checkInvariants(boltKV{tx}); err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("checkInvariants: %v, want %q", err, tc.want)
				}
				return errors.New("roll back")
			})
			if err == nil || err.Error() != "roll back" {
				t.Fatal(err)
			}
		})
	}
}

// TestOpenAddsParentIndex: a file made before the parent index existed
// gets it, filled from the tokens' records, when opened, and then cascades.
func TestOpenAddsParentIndex(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sigil.db")
	s, err := Open(path, Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	addTestKey(t, s, testKeyID)
	p := tok("o", "p", "u", time.Hour)
	mustCreate(t, s, p)
	c := childOf(p, "c")
	mustCreate(t, s, c)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketTokensByParent) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	s = openBare(t, path)
	if _, _, n, err := s.RevokeToken(ctx, p.ID, auditFor(AuditTokenRevoked, t0)); err != nil || n != 1 {
		t.Fatalf("revoke after reopen: %d descendants, %v; want 1", n, err)
	}
}

// TestCascadeRetryIsIdempotent runs the cascade's transaction function
// twice, the first run rolled back, as a group commit or db.Batch does when
// another function of the batch fails: the second run writes the cascade
// exactly once.
func TestCascadeRetryIsIdempotent(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	a := tok("o", "a", "u", time.Hour)
	b := childOf(a, "b")
	c := childOf(b, "c")
	for _, x := range []Token{a, b, c} {
		mustCreate(t, s, x)
	}
	errRollback := errors.New("another function of the batch failed")
	s.commit = func(fn func(*bolt.Tx) error) error {
		if err := s.db.Update(func(tx *bolt.Tx) error {
			if err := fn(tx); err != nil {
				return err
			}
			return errRollback
		}); !errors.Is(err, errRollback) {
			return err
		}
		return s.db.Update(fn)
	}
	before, runs := s.Revision(), s.txRuns.Load()
	_, rev, n, err := s.RevokeToken(ctx, a.ID, auditFor(AuditTokenRevoked, t0))
	if err != nil || n != 2 || rev != before+3 || s.txRuns.Load()-runs != 2 {
		t.Fatalf("RevokeToken = %d, %d descendants, %v after %d runs; want %d, 2, 2 runs", rev, n, err, s.txRuns.Load()-runs, before+3)
	}
	recs := checkRevokedAfter(t, s, "o", before, []Token{a, b, c})
	if len(recs) != 3 {
		t.Fatalf("%d audit records, want 3", len(recs))
	}
}

// cascadeTreeSize is the number of descendants of TestCascadeLargeTree's
// root; -short uses fewer.
func cascadeTreeSize() int {
	if testing.Short() {
		return 2_000
	}
	return 10_000
}

// insertTree stores root and size descendants, a ternary tree with a chain
// of size/5 tokens under its last node, in one transaction (token by token,
// the fsyncs would take the time), and returns them root first.
func insertTree(tb testing.TB, s *Bolt, org string, size int) []Token {
	tb.Helper()
	root := tok(org, "root", "u", time.Hour)
	nodes := make([]Token, 0, size+1)
	nodes = append(nodes, root)
	chain := size / 5
	for i := 1; i <= size; i++ {
		parent := nodes[i-1] // the chain
		if i <= size-chain {
			parent = nodes[(i-1)/3] // the ternary tree
		}
		nodes = append(nodes, childOf(parent, fmt.Sprint("n", i)))
	}
	if _, err := s.mutate(context.Background(), func(w *writer) error {
		for i := range nodes {
			if err := insertToken(w, &nodes[i], t0, ""); err != nil {
				return err
			}
			if err := w.audit(auditFor(AuditTokenCreated, t0)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		tb.Fatal(err)
	}
	return nodes
}

// BenchmarkRevokeCascade10k revokes the root of a 10,000-descendant tree
// (a fresh tree per iteration; building it is not timed).
func BenchmarkRevokeCascade10k(b *testing.B) {
	s := openTest(b)
	ctx := context.Background()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		nodes := insertTree(b, s, fmt.Sprint("org", i), 10_000)
		b.StartTimer()
		if _, _, n, err := s.RevokeToken(ctx, nodes[0].ID, auditFor(AuditTokenRevoked, t0)); err != nil || n != 10_000 {
			b.Fatalf("%d descendants, %v", n, err)
		}
	}
}

// TestCascadeLargeTree revokes the root of a tree of cascadeTreeSize
// descendants: a ternary tree and a long chain. Every descendant is revoked
// in the one transaction, before its parent, with its own event and audit
// record; the file's invariants hold (openTest's cleanup).
func TestCascadeLargeTree(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	size := cascadeTreeSize()
	nodes := insertTree(t, s, "o", size)
	root := nodes[0]
	before := s.Revision()
	_, rev, n, err := s.RevokeToken(ctx, root.ID, auditFor(AuditTokenRevoked, t0))
	if err != nil || n != int64(size) || rev != before+uint64(size)+1 {
		t.Fatalf("RevokeToken(root) = %d, %d descendants, %v; want %d, %d", rev, n, err, before+uint64(size)+1, size)
	}
	recs := checkRevokedAfter(t, s, "o", before, nodes)
	if len(recs) != size+1 {
		t.Fatalf("%d audit records, want %d", len(recs), size+1)
	}
	revs := make([]uint64, 0, len(recs))
	for _, r := range recs {
		revs = append(revs, r.Revision)
	}
	slices.Sort(revs)
	if revs[0] != before+1 || revs[len(revs)-1] != rev {
		t.Fatalf("audit records at %d..%d, want %d..%d", revs[0], revs[len(revs)-1], before+1, rev)
	}
}
