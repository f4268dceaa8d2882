package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// The retention tests join the suite from here, so that the list in
// storetest.go stays as it is.
func init() {
	Tests = append(Tests, []struct {
		Name string
		Fn   func(t *testing.T, cfg Config)
	}{
		{"RetentionPurgesDeadTokens", wrap(testRetentionPurgesDeadTokens)},
		{"RetentionKeepsTreesWhole", wrap(testRetentionKeepsTreesWhole)},
		{"RetentionInBatches", wrap(testRetentionInBatches)},
		{"AuditRetention", wrap(testAuditRetention)},
		{"KeyRetirement", wrap(testKeyRetirement)},
		{"RetentionRacesMinting", wrap(testRetentionRacesMinting)},
		{"RetentionPurgesLastUse", wrap(testRetentionPurgesLastUse)},
	}...)
}

const day = 24 * time.Hour

// retain applies r at now, or fails the test.
func retain(t *testing.T, s store.Store, now time.Time, r store.Retention) store.RetentionResult {
	t.Helper()
	res, err := s.(store.Retainer).ApplyRetention(context.Background(), now, r)
	if err != nil {
		t.Fatalf("ApplyRetention(%s): %v", now, err)
	}
	return res
}

// gone fails the test unless the token's record is gone.
func gone(t *testing.T, s store.Store, id string) {
	t.Helper()
	if tk, err := s.GetToken(context.Background(), id); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("token %s after the purge: %+v, %v; want ErrNotFound", id, tk, err)
	}
}

// listIDs returns the ids ListTokens lists for org (and creator), every
// page, in any state.
func listIDs(t *testing.T, s store.Store, org, creator string) []string {
	t.Helper()
	var ids []string
	page := ""
	for {
		ts, next, err := s.ListTokens(context.Background(), store.ListFilter{OrgID: org, CreatedBy: creator, PageSize: 2, PageToken: page, Now: t0})
		if err != nil {
			t.Fatalf("ListTokens(%s, %s): %v", org, creator, err)
		}
		for _, x := range ts {
			ids = append(ids, x.ID)
		}
		if next == "" {
			return ids
		}
		page = next
	}
}

// testRetentionPurgesDeadTokens: tokens dead (revoked or expired) longer
// than the retention go with their index entries and free their names;
// nothing goes before; the history (revision, digests, events) and the
// audit log are untouched, and a revoked token that has not expired stays
// denied through the snapshot and the stream.
func testRetentionPurgesDeadTokens(t *testing.T, open Opener) {
	ctx := context.Background()
	s := openTest(t, open)
	live := tok("o", "live", "u", 400*day)
	expired := tok("o", "expired", "u", day)     // dead from t0+1d
	revoked := tok("o", "revoked", "v", 200*day) // dead from its revocation at t0
	lateRevoke := tok("o", "late", "u", 2*day)   // revoked after it expired: dead from t0+2d
	createRev := map[string]uint64{}
	for _, x := range []store.Token{live, expired, revoked, lateRevoke} {
		createRev[x.ID] = mustCreate(t, s, x)
	}
	if _, _, _, err := s.RevokeToken(ctx, revoked.ID, auditFor(store.AuditTokenRevoked, t0)); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := s.RevokeToken(ctx, lateRevoke.ID, auditFor(store.AuditTokenRevoked, t0.Add(3*day))); err != nil {
		t.Fatal(err)
	}
	rev := s.Revision()
	digests := map[uint64][]byte{}
	for r := uint64(1); r <= rev; r++ {
		digests[r] = mustDigest(t, s, r)
	}
	events, err := s.EventsAfter(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	audit, _, err := s.ListAudit(ctx, store.AuditFilter{OrgID: "o"})
	if err != nil {
		t.Fatal(err)
	}
	r := store.Retention{Tokens: 10 * day}

	// Not yet: the first to go (revoked at t0) is dead for exactly the
	// retention, not longer.
	if res := retain(t, s, t0.Add(10*day), r); res.Tokens != 0 || len(res.Keys) != 0 {
		t.Fatalf("purged before the retention: %+v", res)
	}
	if got := listIDs(t, s, "o", ""); len(got) != 4 {
		t.Fatalf("listed %d tokens before the retention, want 4", len(got))
	}
	// revoked (dead at t0) and expired (dead at t0+1d) go; lateRevoke
	// (dead at t0+2d, its expiry before its revocation) not yet.
	if res := retain(t, s, t0.Add(11*day+time.Second), r); res.Tokens != 2 || res.Floor != createRev[revoked.ID] {
		t.Fatalf("at t0+11d: %+v, want 2 tokens purged and the floor at %d", res, createRev[revoked.ID])
	}
	gone(t, s, revoked.ID)
	gone(t, s, expired.ID)
	get(t, s, lateRevoke.ID)
	floor := createRev[lateRevoke.ID]
	if res := retain(t, s, t0.Add(12*day+time.Second), r); res.Tokens != 1 || res.Floor != floor {
		t.Fatalf("at t0+12d: %+v, want 1 token purged and the floor at %d", res, floor)
	}
	gone(t, s, lateRevoke.ID)
	if got := get(t, s, live.ID); got.Name != "live" || got.RevokeRev != 0 {
		t.Fatalf("live token after the purge: %+v", got)
	}
	if got := listIDs(t, s, "o", ""); !slices.Equal(got, []string{live.ID}) {
		t.Errorf("ListTokens after the purge = %v, want only %s", got, live.ID)
	}
	if got := listIDs(t, s, "o", "v"); len(got) != 0 {
		t.Errorf("ListTokens(creator v) after the purge = %v, want none", got)
	}
	// Again: nothing more.
	if res := retain(t, s, t0.Add(12*day+time.Second), r); res.Tokens != 0 {
		t.Errorf("second run purged %d", res.Tokens)
	}

	// No revision, no event: the digests at and above the floor (the
	// newest purged token's creation) are unchanged, those below are gone,
	// and the stream goes on from the floor; no audit change.
	if s.Revision() != rev {
		t.Fatalf("revision %d after the purge, want %d", s.Revision(), rev)
	}
	for r := uint64(1); r <= rev; r++ {
		got, err := s.DigestAt(ctx, r)
		switch {
		case r < floor && !errors.Is(err, store.ErrCompacted):
			t.Errorf("DigestAt(%d) below the floor %d: %v, want ErrCompacted", r, floor, err)
		case r >= floor && (err != nil || !bytes.Equal(got, digests[r])):
			t.Errorf("DigestAt(%d) changed by the purge (%v)", r, err)
		}
	}
	if _, err := s.EventsAfter(ctx, floor-1, 0); !errors.Is(err, store.ErrCompacted) {
		t.Errorf("EventsAfter below the floor: %v, want ErrCompacted", err)
	}
	var want []store.Event
	for _, ev := range events {
		if ev.Revision > floor {
			want = append(want, ev)
		}
	}
	if again, err := s.EventsAfter(ctx, floor, 0); err != nil || !reflect.DeepEqual(again, want) {
		t.Errorf("events after the floor: %v, %v; want %v", revisions(again), err, revisions(want))
	}
	if again, _, err := s.ListAudit(ctx, store.AuditFilter{OrgID: "o"}); err != nil || !reflect.DeepEqual(again, audit) {
		t.Errorf("audit records after the purge differ: %v", err)
	}
	// The revoked token has not expired: followers still get it.
	snap, err := s.Snapshot(ctx, t0.Add(12*day))
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Revoked) != 1 || snap.Revoked[0].TokenID != revoked.ID {
		t.Errorf("snapshot revoked %+v, want the purged but unexpired %s", snap.Revoked, revoked.ID)
	}
	// Revoking it by what the token says finds it revoked already.
	if _, already, err := s.RevokeUnrecorded(ctx, revoked, auditFor(store.AuditTokenRevoked, t0.Add(12*day))); err != nil || !already {
		t.Errorf("RevokeUnrecorded of a purged revoked token: already %v, %v", already, err)
	}
	// Their names are free (they were already, being dead).
	for _, x := range []store.Token{expired, revoked, lateRevoke} {
		again := tok("o", x.Name, "u", 400*day)
		if _, err := s.CreateToken(ctx, again, auditFor(store.AuditTokenCreated, t0.Add(12*day))); err != nil {
			t.Errorf("name %q after the purge: %v", x.Name, err)
		}
	}
	if _, err := s.CreateToken(ctx, tok("o", "live", "u", day), auditFor(store.AuditTokenCreated, t0.Add(12*day))); !errors.Is(err, store.ErrNameTaken) {
		t.Errorf("live token's name after the purge: %v, want ErrNameTaken", err)
	}
	if _, err := s.(store.Retainer).ApplyRetention(ctx, t0, store.Retention{Tokens: -time.Second}); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("negative retention: %v, want ErrInvalid", err)
	}
}

// testRetentionKeepsTreesWhole: a dead token goes only with all its
// descendants; one with a descendant still kept stays, so the parent index
// never names a missing token. A revoked tree goes whole.
func testRetentionKeepsTreesWhole(t *testing.T, open Opener) {
	ctx := context.Background()
	s := openTest(t, open)
	// A tree expired at t0+1h except one grandchild that lives long.
	root := tok("o", "root", "u", time.Hour)
	child := childOf(root, "child")
	longGrand := childOf(child, "long")
	longGrand.ExpireTime = t0.Add(100 * day)
	shortGrand := childOf(child, "short")
	sibling := childOf(root, "sibling")
	// A revoked tree: revoked at t0 through its root.
	rroot := tok("o", "rroot", "u", 50*day)
	rchild := childOf(rroot, "rchild")
	rchild.ExpireTime = t0.Add(50 * day)
	rgrand := childOf(rchild, "rgrand")
	rgrand.ExpireTime = t0.Add(50 * day)
	for _, x := range []store.Token{root, child, longGrand, shortGrand, sibling, rroot, rchild, rgrand} {
		mustCreate(t, s, x)
	}
	if _, _, n, err := s.RevokeToken(ctx, rroot.ID, auditFor(store.AuditTokenRevoked, t0)); err != nil || n != 2 {
		t.Fatalf("revoke the tree: %d, %v", n, err)
	}
	res := retain(t, s, t0.Add(2*day), store.Retention{Tokens: day})
	// shortGrand, sibling and the revoked tree go; root and child stay
	// above longGrand.
	if res.Tokens != 5 {
		t.Errorf("purged %d, want 5", res.Tokens)
	}
	for _, x := range []store.Token{shortGrand, sibling, rroot, rchild, rgrand} {
		gone(t, s, x.ID)
	}
	for _, x := range []store.Token{root, child, longGrand} {
		get(t, s, x.ID)
	}
	// The cascade still walks the kept tree.
	_, _, n, err := s.RevokeToken(ctx, root.ID, auditFor(store.AuditTokenRevoked, t0.Add(2*day)))
	if err != nil || n != 2 {
		t.Fatalf("revoking the kept root: %d descendants, %v; want 2", n, err)
	}
	if got := get(t, s, longGrand.ID); got.RevokeRev == 0 {
		t.Error("the long-lived grandchild was not reached by the cascade")
	}
	// Once the grandchild is dead long enough, the rest goes.
	if res := retain(t, s, t0.Add(100*day+2*day), store.Retention{Tokens: day}); res.Tokens != 3 {
		t.Errorf("second purge: %d, want 3", res.Tokens)
	}
	if got := listIDs(t, s, "o", ""); len(got) != 0 {
		t.Errorf("tokens left: %v", got)
	}
}

// testRetentionInBatches: more dead tokens than one transaction takes (on
// either backend) all go, with a live one among them kept.
func testRetentionInBatches(t *testing.T, open Opener) {
	s := openTest(t, open)
	const n = 300
	var live store.Token
	for i := range n {
		x := tok("o", fmt.Sprint("t", i), fmt.Sprint("u", i%3), time.Hour)
		if i == n/2 {
			x.ExpireTime = t0.Add(30 * day)
			live = x
		}
		mustCreate(t, s, x)
	}
	if res := retain(t, s, t0.Add(2*day), store.Retention{Tokens: day}); res.Tokens != n-1 {
		t.Fatalf("purged %d, want %d", res.Tokens, n-1)
	}
	if got := listIDs(t, s, "o", ""); !slices.Equal(got, []string{live.ID}) {
		t.Errorf("left %v, want %s", got, live.ID)
	}
}

// testAuditRetention: audit records older than the audit retention go in
// revision order with their index entries; paging (page tokens made before
// the purge included) stays right; the token retention leaves audit
// records alone.
func testAuditRetention(t *testing.T, open Opener) {
	ctx := context.Background()
	s := openTest(t, open) // key k1: a deployment-wide record at t0
	var revs []uint64
	for i := range 10 {
		x := tok("o", fmt.Sprint("t", i), "u", 400*day)
		rev, err := s.CreateToken(ctx, x, auditFor(store.AuditTokenCreated, t0.Add(time.Duration(i)*day)))
		if err != nil {
			t.Fatal(err)
		}
		revs = append(revs, rev)
		mustCreate(t, s, tok("o2", fmt.Sprint("t", i), "u", 400*day))
	}
	// A page token made before the purge, after the third record.
	_, page, err := s.ListAudit(ctx, store.AuditFilter{OrgID: "o", PageSize: 3})
	if err != nil || page == "" {
		t.Fatalf("first page: %q, %v", page, err)
	}
	// Keep forever by default.
	if res := retain(t, s, t0.Add(1000*day), store.Retention{Tokens: 2000 * day}); res.Audit != 0 {
		t.Fatalf("audit records deleted without an audit retention: %d", res.Audit)
	}
	// At t0+10d with 5.5 days: the records of t0..t0+4d go, in revision
	// order up to the first newer one (o's at t0+5d): the key's, 5 of "o"
	// and the 5 of "o2" between them. The 5 later ones of "o2", though
	// dated t0, stay until the records before them go.
	res := retain(t, s, t0.Add(10*day), store.Retention{Audit: 5*day + 12*time.Hour})
	if res.Audit != 1+5+5 || res.Tokens != 0 {
		t.Fatalf("deleted %+v, want 11 audit records and no token", res)
	}
	var got []uint64
	for p := ""; ; {
		recs, next, err := s.ListAudit(ctx, store.AuditFilter{OrgID: "o", PageSize: 2, PageToken: p})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range recs {
			got = append(got, a.Revision)
		}
		if next == "" {
			break
		}
		p = next
	}
	if !slices.Equal(got, revs[5:]) {
		t.Errorf("audit of o after the purge %v, want %v", got, revs[5:])
	}
	if recs, _, err := s.ListAudit(ctx, store.AuditFilter{OrgID: "o2"}); err != nil || len(recs) != 5 || recs[0].Revision < revs[5] {
		t.Errorf("audit of o2: %d records, %v; want the 5 after %d", len(recs), err, revs[5])
	}
	if recs, _, err := s.ListAudit(ctx, store.AuditFilter{}); err != nil || len(recs) != 0 {
		t.Errorf("deployment-wide audit: %d records, %v; want none", len(recs), err)
	}
	// The old page token goes on after its position: records past it.
	recs, _, err := s.ListAudit(ctx, store.AuditFilter{OrgID: "o", PageSize: 100, PageToken: page})
	if err != nil || len(recs) != 5 || recs[0].Revision != revs[5] {
		t.Errorf("old page token: %d records, %v", len(recs), err)
	}
	// The tokens are all there.
	if ids := listIDs(t, s, "o", ""); len(ids) != 10 {
		t.Errorf("%d tokens after the audit purge, want 10", len(ids))
	}
}

// testKeyRetirement: a verify-only or revoked key whose tokens are all
// gone, with nothing about it newer than the retention, is retired from the
// key list and the snapshot; a key with a kept token, the active key and a
// pending key stay; no revision is taken.
func testKeyRetirement(t *testing.T, open Opener) {
	ctx := context.Background()
	s := openTest(t, open) // k1, active
	addKeyAt := func(id string, st store.KeyState) {
		t.Helper()
		_, err := s.AddKey(ctx, store.Key{
			ID: id, State: store.KeyActive, Public: bytes.Repeat([]byte{9}, 32), SealedPrivate: []byte("sealed"),
			CreateTime: t0.Add(-time.Hour), ActivateTime: t0.Add(-time.Hour),
		}, auditFor(store.AuditKeyRotated, t0))
		if err != nil {
			t.Fatal(err)
		}
		mint := func(name string, ttl time.Duration) store.Token {
			x := tok("o", id+name, "u", ttl)
			x.KeyID = id
			mustCreate(t, s, x)
			return x
		}
		mint("a", day)
		if id == "kept" {
			mint("b", 100*day) // lives past the check below
		}
		switch st {
		case store.KeyRevoked:
			if _, err := s.RevokeKey(ctx, id, auditFor(store.AuditKeyRevoked, t0)); err != nil {
				t.Fatal(err)
			}
		case store.KeyActive:
		default:
			if _, err := s.SetKeyState(ctx, id, st); err != nil {
				t.Fatal(err)
			}
		}
	}
	addKeyAt("old", store.KeyVerifyOnly)     // retired
	addKeyAt("revoked", store.KeyRevoked)    // retired
	addKeyAt("kept", store.KeyVerifyOnly)    // a token lives on
	addKeyAt("pending", store.KeyPending)    // never retired
	addKeyAt(testKeyID+"x", store.KeyActive) // active: never retired
	rev := s.Revision()
	r := store.Retention{Tokens: 10 * day}

	if res := retain(t, s, t0.Add(10*day), r); len(res.Keys) != 0 {
		t.Fatalf("keys retired before the retention: %v", res.Keys)
	}
	res := retain(t, s, t0.Add(12*day), r)
	slices.Sort(res.Keys)
	if !slices.Equal(res.Keys, []string{"old", "revoked"}) {
		t.Fatalf("retired %v, want old and revoked", res.Keys)
	}
	ks, err := s.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, k := range ks {
		ids = append(ids, k.ID)
	}
	slices.Sort(ids)
	if want := []string{testKeyID, testKeyID + "x", "kept", "pending"}; !slices.Equal(ids, want) {
		t.Errorf("keys after retirement %v, want %v", ids, want)
	}
	snap, err := s.Snapshot(ctx, t0.Add(12*day))
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Keys) != 4 {
		t.Errorf("snapshot has %d keys, want 4", len(snap.Keys))
	}
	if s.Revision() != rev {
		t.Errorf("retirement took revision %d (was %d)", s.Revision(), rev)
	}
	// Once the last token of "kept" is dead long enough, it goes too.
	res = retain(t, s, t0.Add(111*day), r)
	if !slices.Equal(res.Keys, []string{"kept"}) {
		t.Errorf("retired %v, want kept", res.Keys)
	}
}

// testRetentionRacesMinting: the retention running while tokens are minted
// through dead (expired, unrevoked) parents never purges a parent that has
// gained a live child: each child minted is stored with its parent, and
// the store's invariants hold at the end (the opener's check).
func testRetentionRacesMinting(t *testing.T, open Opener) {
	ctx := context.Background()
	s := openTest(t, open)
	var parents []store.Token
	for i := range 40 {
		p := tok("o", fmt.Sprint("p", i), "u", time.Hour)
		mustCreate(t, s, p)
		parents = append(parents, p)
	}
	now := t0.Add(3 * day)
	var (
		wg       sync.WaitGroup
		children []store.Token
		errs     = make(chan error, 2)
	)
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := len(parents) - 1; i >= 0; i-- {
			c := childOf(parents[i], fmt.Sprint("c", i))
			c.CreateTime, c.ExpireTime = now, now.Add(30*day)
			_, err := s.CreateToken(ctx, c, auditFor(store.AuditTokenCreated, now))
			switch {
			case err == nil:
				children = append(children, c)
			case errors.Is(err, store.ErrInvalid): // the parent was purged first
			default:
				errs <- err
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		for range 5 {
			if _, err := s.(store.Retainer).ApplyRetention(ctx, now, store.Retention{Tokens: day}); err != nil {
				errs <- err
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	retain(t, s, now, store.Retention{Tokens: day})
	for _, c := range children {
		get(t, s, c.ID)
		get(t, s, c.ParentID)
	}
	if got := listIDs(t, s, "o", ""); len(got) != 2*len(children) {
		t.Errorf("%d tokens left for %d children and their parents", len(got), len(children))
	}
}

// testRetentionPurgesLastUse: a purged token's per-token state (its last
// use) goes with its record: a record stored again under the same id (as
// only a test does) has no last use.
func testRetentionPurgesLastUse(t *testing.T, open Opener) {
	ctx := context.Background()
	s := openTest(t, open)
	x := tok("o", "used", "u", day)
	mustCreate(t, s, x)
	if n, err := s.RecordTokenUse(ctx, []store.TokenUse{{TokenID: x.ID, Time: t0.Add(time.Hour)}}); err != nil || n != 1 {
		t.Fatalf("RecordTokenUse: %d, %v", n, err)
	}
	if got := get(t, s, x.ID); got.LastUseTime.IsZero() {
		t.Fatal("no last use recorded")
	}
	if res := retain(t, s, t0.Add(3*day), store.Retention{Tokens: day}); res.Tokens != 1 {
		t.Fatalf("purged %d, want 1", res.Tokens)
	}
	again := x
	again.CreateTime, again.ExpireTime = t0.Add(3*day), t0.Add(4*day)
	if _, err := s.CreateToken(ctx, again, auditFor(store.AuditTokenCreated, again.CreateTime)); err != nil {
		t.Fatal(err)
	}
	if got := get(t, s, x.ID); !got.LastUseTime.IsZero() {
		t.Errorf("last use %s survived the purge", got.LastUseTime)
	}
}
