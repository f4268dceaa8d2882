package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

func testCloseIsIdempotentAndLaterCallsFail(t *testing.T, open Opener) {
	ctx := context.Background()
	s := openTest(t, open)
	ch := s.Changed()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	select {
	case <-ch:
	default:
		t.Error("Close did not wake Changed waiters")
	}
	checks := map[string]error{}
	_, checks["CreateToken"] = s.CreateToken(ctx, tok("o", "n", "c", time.Hour), auditFor(store.AuditTokenCreated, t0))
	_, checks["GetToken"] = s.GetToken(ctx, "x")
	_, _, checks["ListTokens"] = s.ListTokens(ctx, store.ListFilter{OrgID: "o"})
	_, _, _, checks["RevokeToken"] = s.RevokeToken(ctx, "x", auditFor(store.AuditTokenRevoked, t0))
	_, _, checks["RevokeTokens"] = s.RevokeTokens(ctx, "o", "", auditFor(store.AuditTokensRevoked, t0))
	_, checks["AddKey"] = s.AddKey(ctx, store.Key{ID: "k9", State: store.KeyActive, Public: []byte{1}}, store.AuditRecord{})
	_, checks["SetKeyState"] = s.SetKeyState(ctx, testKeyID, store.KeyVerifyOnly)
	_, checks["ListKeys"] = s.ListKeys(ctx)
	_, _, checks["ListAudit"] = s.ListAudit(ctx, store.AuditFilter{OrgID: "o", PageSize: 10})
	_, checks["Snapshot"] = s.Snapshot(ctx, t0)
	_, checks["EventsAfter"] = s.EventsAfter(ctx, 0, 10)
	_, checks["Compact"] = s.Compact(ctx, t0)
	for name, err := range checks {
		if !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}

func testChangedIsClosedByCommit(t *testing.T, open Opener) {
	s := openTest(t, open)
	ch := s.Changed()
	select {
	case <-ch:
		t.Fatal("Changed closed before any commit")
	default:
	}
	rev := mustCreate(t, s, tok("org", "a", "alice", time.Hour))
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("Changed not closed after a commit")
	}
	if s.Revision() != rev {
		t.Errorf("Revision() = %d after waking, want %d", s.Revision(), rev)
	}
	// A fresh channel waits for the next commit; a write-free call (a
	// rejected create) does not close it.
	ch = s.Changed()
	if _, err := s.CreateToken(context.Background(), tok("org", "a", "alice", time.Hour), auditFor(store.AuditTokenCreated, t0)); !errors.Is(err, store.ErrNameTaken) {
		t.Fatalf("err = %v", err)
	}
	select {
	case <-ch:
		t.Error("Changed closed without a commit")
	default:
	}
}

func testRevisionsStrictlyIncrease(t *testing.T, open Opener) {
	ctx := context.Background()
	s := openTest(t, open)
	last := s.Revision()
	step := func(name string, rev uint64, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if rev <= last {
			t.Fatalf("%s: revision %d after %d", name, rev, last)
		}
		if s.Revision() != rev {
			t.Fatalf("%s: Revision() = %d, want %d", name, s.Revision(), rev)
		}
		last = rev
	}
	a, b := tok("o", "a", "u", time.Hour), tok("o", "b", "u", time.Hour)
	rev, err := s.CreateToken(ctx, a, auditFor(store.AuditTokenCreated, t0))
	step("create a", rev, err)
	rev, err = s.CreateToken(ctx, b, auditFor(store.AuditTokenCreated, t0))
	step("create b", rev, err)
	_, rev, _, err = s.RevokeToken(ctx, a.ID, auditFor(store.AuditTokenRevoked, t0))
	step("revoke a", rev, err)
	rev, _, err = s.RotateToken(ctx, b.ID, tok("o", "b", "u", time.Hour), auditFor(store.AuditTokenRotated, t0))
	step("rotate b", rev, err)
	rev, err = s.AddKey(ctx, store.Key{ID: "k2", State: store.KeyPending, Public: []byte{2}}, auditFor(store.AuditKeyRotated, t0))
	step("add key", rev, err)
	rev, err = s.SetKeyState(ctx, "k2", store.KeyActive)
	step("activate key", rev, err)
	rev, err = s.RevokeKey(ctx, "k2", auditFor(store.AuditKeyRevoked, t0))
	step("revoke key", rev, err)
	// Compaction removes events but never lowers the counter.
	if _, err := s.Compact(ctx, t0.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	rev, err = s.CreateToken(ctx, tok("o", "c", "u", time.Hour), auditFor(store.AuditTokenCreated, t0))
	step("create after compaction", rev, err)
}

func testCancelledContext(t *testing.T, open Opener) {
	s := openTest(t, open)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rev := s.Revision()
	if _, err := s.CreateToken(ctx, tok("o", "a", "u", time.Hour), auditFor(store.AuditTokenCreated, t0)); !errors.Is(err, context.Canceled) {
		t.Errorf("CreateToken: %v, want context.Canceled", err)
	}
	if _, err := s.GetToken(ctx, "x"); !errors.Is(err, context.Canceled) {
		t.Errorf("GetToken: %v, want context.Canceled", err)
	}
	if s.Revision() != rev {
		t.Error("a cancelled call wrote")
	}
}
