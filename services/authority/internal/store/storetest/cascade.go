package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// childOf returns a token minted through parent: same organization and
// creator, as manage mints them.
func childOf(parent store.Token, name string) store.Token {
	c := tok(parent.OrgID, name, parent.CreatedBy, time.Hour)
	c.ParentID = parent.ID
	return c
}

// get reads a token or fails the test.
func get(t *testing.T, s store.Store, id string) store.Token {
	t.Helper()
	tk, err := s.GetToken(context.Background(), id)
	if err != nil {
		t.Fatalf("GetToken(%s): %v", id, err)
	}
	return tk
}

// checkRevokedAfter checks the revocations committed after revision before:
// exactly the tokens want (by id), one store.EventTokenRevoked and one audit
// record each at the token's revocation revision, each token revoked before
// its parent when both are in want. It returns the audit records by token id.
func checkRevokedAfter(t *testing.T, s store.Store, org string, before uint64, want []store.Token) map[string]store.AuditRecord {
	t.Helper()
	ctx := context.Background()
	byID := map[string]store.Token{}
	for _, w := range want {
		tk := get(t, s, w.ID)
		if tk.RevokeRev <= before {
			t.Fatalf("token %s (%s): revoked at %d, want after %d", tk.Name, tk.ID, tk.RevokeRev, before)
		}
		byID[tk.ID] = tk
	}
	var evs []store.Event
	for after := before; ; {
		page, err := s.EventsAfter(ctx, after, store.MaxEventLimit)
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
		if ev.Kind != store.EventTokenRevoked || !ok || ev.Revision != tk.RevokeRev || ev.Revision != before+uint64(i)+1 {
			t.Fatalf("event %d: %+v; want a dense revocation of a token of the tree", i, ev)
		}
	}
	for _, tk := range byID {
		if p, ok := byID[tk.ParentID]; ok && tk.RevokeRev >= p.RevokeRev {
			t.Errorf("token %s revoked at %d, not before its parent %s (at %d)", tk.Name, tk.RevokeRev, p.Name, p.RevokeRev)
		}
	}
	out := map[string]store.AuditRecord{}
	for after := before; ; {
		recs, err := listAuditAfter(ctx, s, org, after, store.MaxPageSize)
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

// TestRevokeTokenCascades revokes B in A→B→C→D, where B also has a fan-out
// E→{F, G}: B and its five descendants are revoked, each with its own event
// and audit record, deepest first and B last; A and an unrelated token are
// not. Revoking B again changes nothing; revoking A then revokes only A.
func testRevokeTokenCascades(t *testing.T, open Opener) {
	ctx := context.Background()
	s := openTest(t, open)
	a := tok("o", "a", "alice", time.Hour)
	b := childOf(a, "b")
	c := childOf(b, "c")
	d := childOf(c, "d")
	e := childOf(b, "e")
	f := childOf(e, "f")
	g := childOf(e, "g")
	other := tok("o", "other", "alice", time.Hour)
	for _, x := range []store.Token{a, b, c, d, e, f, g, other} {
		mustCreate(t, s, x)
	}
	before := s.Revision()
	at := t0.Add(time.Minute)
	got, rev, n, err := s.RevokeToken(ctx, b.ID, store.AuditRecord{Time: at, Actor: "token:" + a.ID, Action: store.AuditTokenRevoked, Reason: "leaked"})
	if err != nil {
		t.Fatal(err)
	}
	if n != 5 || got.ID != b.ID || got.RevokeRev != rev || rev != s.Revision() || rev != before+6 {
		t.Fatalf("RevokeToken(b) = %s at %d, %d descendants (store at %d); want b at %d, 5", got.Name, rev, n, s.Revision(), before+6)
	}
	recs := checkRevokedAfter(t, s, "o", before, []store.Token{b, c, d, e, f, g})
	for _, x := range []store.Token{c, d, e, f, g} {
		tk, r := get(t, s, x.ID), recs[x.ID]
		want := store.CascadeReason(b.ID, "leaked")
		if tk.RevokeReason != want || !tk.RevokeTime.Equal(at) {
			t.Errorf("%s: revoked %q at %v, want %q at %v", x.Name, tk.RevokeReason, tk.RevokeTime, want, at)
		}
		if r.Revision != tk.RevokeRev || r.Action != store.AuditTokenRevoked || r.Reason != want || r.Actor != "token:"+a.ID || r.Name != x.Name || r.OrgID != "o" {
			t.Errorf("%s: audit record %+v", x.Name, r)
		}
	}
	if r := recs[b.ID]; r.Revision != rev || r.Reason != "leaked" || r.Action != store.AuditTokenRevoked {
		t.Errorf("b: audit record %+v", r)
	}
	for _, x := range []store.Token{a, other} {
		if tk := get(t, s, x.ID); tk.RevokeRev != 0 {
			t.Errorf("%s revoked by the cascade", x.Name)
		}
	}

	t.Run("repeat", func(t *testing.T) {
		again, rev2, n2, err := s.RevokeToken(ctx, b.ID, store.AuditRecord{Time: at.Add(time.Hour), Action: store.AuditTokenRevoked, Reason: "again"})
		if err != nil || rev2 != rev || n2 != 0 || again.RevokeReason != "leaked" || s.Revision() != rev {
			t.Fatalf("repeat: %q at %d, %d descendants, %v (store at %d)", again.RevokeReason, rev2, n2, err, s.Revision())
		}
	})
	t.Run("ancestor", func(t *testing.T) {
		_, rev3, n3, err := s.RevokeToken(ctx, a.ID, auditFor(store.AuditTokenRevoked, at))
		if err != nil || n3 != 0 || rev3 != rev+1 {
			t.Fatalf("revoke a: at %d, %d descendants, %v; want %d, 0", rev3, n3, err, rev+1)
		}
	})
}

// TestRevokeTokensCascades revokes a creator's tokens: the cascade reaches
// a token of another creator minted through one of them (a PAT that rotates
// another creator's token becomes the new token's parent) and an expired,
// unrevoked descendant that the filter skips.
func testRevokeTokensCascades(t *testing.T, open Opener) {
	ctx := context.Background()
	s := openTest(t, open)
	admin := tok("o", "admin", "alice", time.Hour)
	mustCreate(t, s, admin)
	child := childOf(admin, "child")
	mustCreate(t, s, child)
	grand := childOf(child, "grand")
	mustCreate(t, s, grand)
	short := childOf(admin, "short")
	short.ExpireTime = t0.Add(time.Minute)
	mustCreate(t, s, short)
	bobs := tok("o", "bobs", "bob", time.Hour)
	mustCreate(t, s, bobs)
	bobsNext := tok("o", "bobs", "bob", time.Hour)
	bobsNext.ParentID = admin.ID // rotated by the admin
	if _, _, err := s.RotateToken(ctx, bobs.ID, bobsNext, auditFor(store.AuditTokenRotated, t0)); err != nil {
		t.Fatal(err)
	}
	bobsOwn := tok("o", "bobs-own", "bob", time.Hour)
	mustCreate(t, s, bobsOwn)
	other := tok("o2", "admin", "alice", time.Hour)
	mustCreate(t, s, other)

	before := s.Revision()
	at := t0.Add(2 * time.Minute) // short has expired
	n, rev, err := s.RevokeTokens(ctx, "o", "alice", store.AuditRecord{Time: at, Actor: "operator", Action: store.AuditTokensRevoked, Reason: "offboarding"})
	if err != nil || n != 5 || rev != before+5 || s.Revision() != rev {
		t.Fatalf("RevokeTokens = %d at %d, %v; want 5 at %d", n, rev, err, before+5)
	}
	recs := checkRevokedAfter(t, s, "o", before, []store.Token{admin, child, grand, short, bobsNext})
	for _, x := range []store.Token{short, bobsNext} {
		if r := recs[x.ID]; r.Reason != store.CascadeReason(admin.ID, "offboarding") || r.Action != store.AuditTokenRevoked || r.Revision != get(t, s, x.ID).RevokeRev {
			t.Errorf("%s: audit record %+v, want a cascade from admin", x.Name, r)
		}
	}
	// The bulk record, at the last revision, counts what the filter chose.
	if r, ok := recs[""]; !ok || r.Revision != rev || r.Count != 3 || r.Action != store.AuditTokensRevoked {
		t.Errorf("bulk audit record %+v, want Count 3 at %d", r, rev)
	}
	if len(recs) != 3 {
		t.Errorf("%d audit records (by token), want the bulk one and 2 cascades: %+v", len(recs), recs)
	}
	for _, x := range []store.Token{bobsOwn, other} {
		if get(t, s, x.ID).RevokeRev != 0 {
			t.Errorf("%s revoked", x.Name)
		}
	}

	t.Run("by organization", func(t *testing.T) {
		before := s.Revision()
		n, _, err := s.RevokeTokens(ctx, "o", "", auditFor(store.AuditTokensRevoked, at))
		if err != nil || n != 1 {
			t.Fatalf("RevokeTokens(o) = %d, %v; want 1 (bobs-own)", n, err)
		}
		checkRevokedAfter(t, s, "o", before, []store.Token{bobsOwn})
	})
}

// TestRotateTokenCascades rotates the root of A→B→C: B and C are revoked
// before A, the new token is not, and its parent may not be in the tree.
func testRotateTokenCascades(t *testing.T, open Opener) {
	ctx := context.Background()
	s := openTest(t, open)
	caller := tok("o", "caller", "alice", time.Hour)
	a := tok("o", "a", "alice", time.Hour)
	b := childOf(a, "b")
	c := childOf(b, "c")
	for _, x := range []store.Token{caller, a, b, c} {
		mustCreate(t, s, x)
	}

	t.Run("parent in the tree", func(t *testing.T) {
		for _, p := range []store.Token{a, b, c} {
			before := s.Revision()
			next := tok("o", "a", "alice", 2*time.Hour)
			next.ParentID = p.ID
			if _, _, err := s.RotateToken(ctx, a.ID, next, auditFor(store.AuditTokenRotated, t0)); !errors.Is(err, store.ErrInvalid) || s.Revision() != before {
				t.Fatalf("rotation with parent %s: %v (store at %d, was %d); want store.ErrInvalid, nothing written", p.Name, err, s.Revision(), before)
			}
		}
	})

	before := s.Revision()
	next := tok("o", "a", "alice", 2*time.Hour)
	next.ParentID = caller.ID
	rev, n, err := s.RotateToken(ctx, a.ID, next, store.AuditRecord{Time: t0, Actor: "token:" + caller.ID, Action: store.AuditTokenRotated, TokenID: a.ID, Reason: "rotated to " + next.ID})
	if err != nil || n != 2 || rev != before+4 || s.Revision() != rev {
		t.Fatalf("RotateToken = %d, %d descendants, %v; want %d, 2", rev, n, err, before+4)
	}
	if nt := get(t, s, next.ID); nt.RevokeRev != 0 || nt.ParentID != caller.ID {
		t.Fatalf("new token: %+v", nt)
	}
	if ga := get(t, s, a.ID); ga.RevokeRev != rev {
		t.Fatalf("old token revoked at %d, want %d (the last)", ga.RevokeRev, rev)
	}
	// EventsAfter skips the creation at before+1.
	recs := checkRevokedAfter(t, s, "o", before+1, []store.Token{a, b, c})
	if r := recs[c.ID]; r.Reason != store.CascadeReason(a.ID, "rotated to "+next.ID) {
		t.Errorf("c: audit record %+v", r)
	}
	if r := recs[a.ID]; r.Action != store.AuditTokenRotated || r.Revision != rev {
		t.Errorf("rotation audit record %+v", r)
	}
	// A rotation's new token is never in the old one's tree.
	// Revoking the old token again finds nothing left to revoke.
	if _, _, n, err := s.RevokeToken(ctx, a.ID, auditFor(store.AuditTokenRevoked, t0)); err != nil || n != 0 {
		t.Errorf("RevokeToken(old) again: %d descendants, %v; want 0", n, err)
	}
	if got := get(t, s, next.ID); got.RevokeRev != 0 {
		t.Errorf("the new token was revoked with the old one's tree")
	}
}

// TestCreateTokenParentMustBeLive: a parent that is unknown or revoked (in
// the window between the caller's authentication and the write) is
// refused, and nothing is written, so no child can escape a cascade.
func testCreateTokenParentMustBeLive(t *testing.T, open Opener) {
	ctx := context.Background()
	s := openTest(t, open)
	p := tok("o", "p", "u", time.Hour)
	mustCreate(t, s, p)
	if _, _, _, err := s.RevokeToken(ctx, p.ID, auditFor(store.AuditTokenRevoked, t0)); err != nil {
		t.Fatal(err)
	}
	before := s.Revision()
	for _, tc := range []struct {
		parent string
		want   error
	}{{p.ID, store.ErrNotActive}, {newID(), store.ErrInvalid}} {
		c := tok("o", "c", "u", time.Hour)
		c.ParentID = tc.parent
		if _, err := s.CreateToken(ctx, c, auditFor(store.AuditTokenCreated, t0)); !errors.Is(err, tc.want) {
			t.Errorf("parent %s: %v, want %v", tc.parent, err, tc.want)
		}
	}
	if s.Revision() != before {
		t.Errorf("refused creations wrote revisions %d..%d", before, s.Revision())
	}
}
