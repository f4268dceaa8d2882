package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

func mustDigest(t *testing.T, s store.Store, rev uint64) []byte {
	t.Helper()
	d, err := s.DigestAt(context.Background(), rev)
	if err != nil {
		t.Fatalf("DigestAt(%d): %v", rev, err)
	}
	if len(d) != store.DigestSize {
		t.Fatalf("DigestAt(%d) has %d bytes", rev, len(d))
	}
	return d
}

func testCutKey(t *testing.T, open Opener) {
	ctx := context.Background()
	s := openTest(t, open)
	cut := t0.Add(1500 * time.Millisecond)
	rev, err := s.CutKey(ctx, testKeyID, cut, store.AuditRecord{Time: t0, Actor: "operator", Action: store.AuditKeyRevoked})
	if err != nil {
		t.Fatal(err)
	}
	ks, err := s.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ks[0].State != store.KeyVerifyOnly || !ks[0].RevokedIssuedAfter.Equal(t0.Add(time.Second)) {
		t.Fatalf("key after cut: state %d cut %v; want verify-only, cut %v", ks[0].State, ks[0].RevokedIssuedAfter, t0.Add(time.Second))
	}
	evs, err := s.EventsAfter(ctx, rev-1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].Kind != store.EventKeyAdded || evs[0].Key == nil || !evs[0].Key.RevokedIssuedAfter.Equal(t0.Add(time.Second)) {
		t.Fatalf("cut event: %+v", evs)
	}
	// A later cut changes nothing; an earlier one narrows.
	if r, err := s.CutKey(ctx, testKeyID, cut.Add(time.Hour), store.AuditRecord{Time: t0, Actor: "operator", Action: store.AuditKeyRevoked}); err != nil || r != rev {
		t.Fatalf("later cut: rev %d err %v, want %d", r, err, rev)
	}
	r2, err := s.CutKey(ctx, testKeyID, cut.Add(-time.Hour), store.AuditRecord{Time: t0, Actor: "operator", Action: store.AuditKeyRevoked})
	if err != nil || r2 <= rev {
		t.Fatalf("earlier cut: rev %d err %v", r2, err)
	}
	ks, _ = s.ListKeys(ctx)
	if !ks[0].RevokedIssuedAfter.Equal(t0.Add(-time.Hour + time.Second)) {
		t.Fatalf("cut after narrowing: %v", ks[0].RevokedIssuedAfter)
	}
	// A revoked key stays revoked.
	rr, err := s.RevokeKey(ctx, testKeyID, store.AuditRecord{Time: t0, Actor: "operator", Action: store.AuditKeyRevoked})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := s.CutKey(ctx, testKeyID, cut.Add(-2*time.Hour), store.AuditRecord{Time: t0, Actor: "operator", Action: store.AuditKeyRevoked}); err != nil || r != rr {
		t.Fatalf("cut of a revoked key: rev %d err %v, want %d", r, err, rr)
	}
	if _, err := s.CutKey(ctx, "nope", cut, store.AuditRecord{Time: t0, Actor: "operator", Action: store.AuditKeyRevoked}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown key: %v", err)
	}
}

func testRevokeUnrecorded(t *testing.T, open Opener) {
	ctx := context.Background()
	s := openTest(t, open)
	ghost := tok("org", "ghost", "u", 30*24*time.Hour) // never stored
	a := store.AuditRecord{Time: t0, Actor: "operator", Action: store.AuditTokenRevoked, Reason: "leaked"}
	rev, already, err := s.RevokeUnrecorded(ctx, ghost, a)
	if err != nil || already || rev != s.Revision() {
		t.Fatalf("RevokeUnrecorded: rev %d already %v err %v", rev, already, err)
	}
	snap, err := s.Snapshot(ctx, t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Revoked) != 1 || snap.Revoked[0].TokenID != ghost.ID || !snap.Revoked[0].ExpiresAt.Equal(ghost.ExpireTime) {
		t.Fatalf("snapshot revoked: %+v", snap.Revoked)
	}
	evs, err := s.EventsAfter(ctx, rev-1, 0)
	if err != nil || len(evs) != 1 || evs[0].Kind != store.EventTokenRevoked || evs[0].TokenID != ghost.ID {
		t.Fatalf("events: %+v %v", evs, err)
	}
	recs, _, err := s.ListAudit(ctx, store.AuditFilter{OrgID: "org"})
	if err != nil || len(recs) != 1 || recs[0].TokenID != ghost.ID || recs[0].Action != store.AuditTokenRevoked || recs[0].Revision != rev {
		t.Fatalf("audit: %+v %v", recs, err)
	}
	if _, err := s.GetToken(ctx, ghost.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetToken of an unrecorded revocation: %v", err)
	}
	again, already, err := s.RevokeUnrecorded(ctx, ghost, a)
	if err != nil || !already || again < rev {
		t.Fatalf("again: rev %d already %v err %v", again, already, err)
	}
	if s.Revision() != rev {
		t.Fatal("a repeated revocation wrote something")
	}
	known := tok("org", "known", "u", 30*24*time.Hour)
	mustCreate(t, s, known)
	if _, _, err := s.RevokeUnrecorded(ctx, known, a); !errors.Is(err, store.ErrTokenExists) {
		t.Fatalf("recorded token: %v, want ErrTokenExists", err)
	}
}
