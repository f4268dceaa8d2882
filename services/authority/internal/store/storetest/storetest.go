// Package storetest is the conformance suite of store.Store: every
// behaviour the authority relies on, run against each backend (bbolt and
// etcd) by that backend's tests with Run. A backend's own matters (file
// locking, group commit, schema, corruption for bbolt) stay in its tests.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// Opener returns a new, empty store. It registers the cleanup that closes
// the store and checks the backend's invariants (indexes agree with
// records), so that every test ends with that check.
type Opener func(t *testing.T) store.Store

// Config describes a backend to Run.
type Config struct {
	Open Opener
	// TreeSize is the number of descendants TestCascadeTree revokes at
	// once; a backend with bounded transactions (etcd) must get more than
	// fit in one.
	TreeSize int
	// Reopen closes s and opens the same store again, as a restarted
	// authority would.
	Reopen func(t *testing.T, s store.Store) store.Store
}

// Tests lists the conformance tests by name.
var Tests = []struct {
	Name string
	Fn   func(t *testing.T, cfg Config)
}{
	{"ListAudit", wrap(testListAudit)},
	{"AddKey", wrap(testAddKey)},
	{"SetKeyState", wrap(testSetKeyState)},
	{"RevokeKey", wrap(testRevokeKey)},
	{"ListKeys", wrap(testListKeys)},
	{"CreateToken", wrap(testCreateToken)},
	{"CreateTokenMovesKeyLastExpiry", wrap(testCreateTokenMovesKeyLastExpiry)},
	{"GetToken", wrap(testGetToken)},
	{"RevokeToken", wrap(testRevokeToken)},
	{"RevokeTokens", wrap(testRevokeTokens)},
	{"RotateToken", wrap(testRotateToken)},
	{"ListTokensPaging", wrap(testListTokensPaging)},
	{"ListTokensBadPageToken", wrap(testListTokensBadPageToken)},
	{"RevokeTokenCascades", wrap(testRevokeTokenCascades)},
	{"RevokeTokensCascades", wrap(testRevokeTokensCascades)},
	{"RotateTokenCascades", wrap(testRotateTokenCascades)},
	{"CreateTokenParentMustBeLive", wrap(testCreateTokenParentMustBeLive)},
	{"CascadeTree", testCascadeTree},
	{"ReopenKeepsEverything", testReopenKeepsEverything},
	{"EventsAfter", wrap(testEventsAfter)},
	{"Snapshot", wrap(testSnapshot)},
	{"Compact", wrap(testCompact)},
	{"CompactAndDigests", wrap(testCompactAndDigests)},
	{"CutKey", wrap(testCutKey)},
	{"RevokeUnrecorded", wrap(testRevokeUnrecorded)},
	{"CloseIsIdempotentAndLaterCallsFail", wrap(testCloseIsIdempotentAndLaterCallsFail)},
	{"ChangedIsClosedByCommit", wrap(testChangedIsClosedByCommit)},
	{"RevisionsStrictlyIncrease", wrap(testRevisionsStrictlyIncrease)},
	{"CancelledContext", wrap(testCancelledContext)},
	{"ConcurrentWriters", wrap(testConcurrentWriters)},
	{"RecordTokenUse", testRecordTokenUse},
	{"ListTokensUseFilters", wrap(testListTokensUseFilters)},
	{"SnapshotEach", wrap(testSnapshotEach)},
	{"SnapshotEachConsistent", wrap(testSnapshotEachConsistent)},
	{"SnapshotEachStops", wrap(testSnapshotEachStops)},
}

func wrap(fn func(t *testing.T, open Opener)) func(t *testing.T, cfg Config) {
	return func(t *testing.T, cfg Config) { fn(t, cfg.Open) }
}

// Run runs every conformance test against the backend cfg opens, each as
// a subtest.
func Run(t *testing.T, cfg Config) {
	for _, tc := range Tests {
		t.Run(tc.Name, func(t *testing.T) { tc.Fn(t, cfg) })
	}
}

// t0 is the tests' "now".
var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

const testKeyID = "k1"

// openTest opens a store and adds the signing key testKeyID.
func openTest(t *testing.T, open Opener) store.Store {
	t.Helper()
	s := open(t)
	addTestKey(t, s, testKeyID)
	return s
}

func addTestKey(t testing.TB, s store.Store, id string) uint64 {
	t.Helper()
	rev, err := s.AddKey(context.Background(), store.Key{
		ID: id, State: store.KeyActive, Public: bytes.Repeat([]byte{7}, 32),
		SealedPrivate: []byte("sealed-" + id), CreateTime: t0.Add(-time.Hour), ActivateTime: t0.Add(-time.Hour),
	}, store.AuditRecord{Time: t0, Actor: "operator", Action: store.AuditKeyRotated})
	if err != nil {
		t.Fatalf("AddKey(%s): %v", id, err)
	}
	return rev
}

var idSeq atomic.Uint64

// newID returns a fresh token id.
func newID() string { return fmt.Sprintf("%032x", idSeq.Add(1)) }

// tok returns a token made at t0 that lives for ttl.
func tok(org, name, creator string, ttl time.Duration) store.Token {
	return store.Token{
		ID: newID(), OrgID: org, Name: name, Description: "for " + name,
		Grants:    []scope.Grant{{Permissions: []string{"domain:view"}}, {Permissions: []string{"domain:renew"}, Resources: []string{"domains/example.com"}}},
		CreatedBy: creator, KeyID: testKeyID, CreateTime: t0, ExpireTime: t0.Add(ttl),
	}
}

func auditFor(action store.AuditAction, at time.Time) store.AuditRecord {
	return store.AuditRecord{Time: at, Actor: "operator", Action: action, Reason: "test"}
}

// mustCreate stores t and returns its revision.
func mustCreate(t testing.TB, s store.Store, tk store.Token) uint64 {
	t.Helper()
	rev, err := s.CreateToken(context.Background(), tk, auditFor(store.AuditTokenCreated, tk.CreateTime))
	if err != nil {
		t.Fatalf("CreateToken(%s %q): %v", tk.OrgID, tk.Name, err)
	}
	return rev
}

// pageSize is the page size the store applies to a requested size.
func pageSize(n int) int {
	switch {
	case n <= 0:
		return store.DefaultPageSize
	case n > store.MaxPageSize:
		return store.MaxPageSize
	}
	return n
}

// testReopenKeepsEverything: a store closed and opened again (an authority
// restarted) has the same epoch, revision, digests, tokens, keys and
// revocations, and its revisions go on from where they were.
func testReopenKeepsEverything(t *testing.T, cfg Config) {
	ctx := context.Background()
	s := openTest(t, cfg.Open)
	a, b := tok("o", "a", "u", time.Hour), tok("o", "b", "u", time.Hour)
	mustCreate(t, s, a)
	mustCreate(t, s, b)
	if _, _, _, err := s.RevokeToken(ctx, a.ID, auditFor(store.AuditTokenRevoked, t0)); err != nil {
		t.Fatal(err)
	}
	epoch, rev := s.Epoch(), s.Revision()
	digest := mustDigest(t, s, rev)
	snap, err := s.Snapshot(ctx, t0)
	if err != nil {
		t.Fatal(err)
	}
	s = cfg.Reopen(t, s)
	if s.Epoch() != epoch || s.Revision() != rev {
		t.Fatalf("reopened at epoch %s revision %d, want %s %d", s.Epoch(), s.Revision(), epoch, rev)
	}
	if got := mustDigest(t, s, rev); !bytes.Equal(got, digest) {
		t.Fatal("digest at the head changed across reopen")
	}
	again, err := s.Snapshot(ctx, t0)
	if err != nil || !reflect.DeepEqual(again, snap) {
		t.Fatalf("snapshot after reopen %+v, %v; want %+v", again, err, snap)
	}
	if got := get(t, s, a.ID); got.RevokeRev == 0 {
		t.Fatal("revocation lost across reopen")
	}
	if got := get(t, s, b.ID); got.RevokeRev != 0 || got.Name != "b" {
		t.Fatalf("token b after reopen: %+v", got)
	}
	if next := mustCreate(t, s, tok("o", "c", "u", time.Hour)); next != rev+1 {
		t.Fatalf("first write after reopen at revision %d, want %d", next, rev+1)
	}
	if _, err := s.CreateToken(ctx, tok("o", "b", "u", time.Hour), auditFor(store.AuditTokenCreated, t0)); !errors.Is(err, store.ErrNameTaken) {
		t.Fatalf("name index lost across reopen: %v", err)
	}
}
