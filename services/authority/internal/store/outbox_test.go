package store

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// FuzzDecodeOutbox feeds arbitrary bytes to the outbox entry decoder: it
// must not panic, and what decodes must encode back to the same bytes.
func FuzzDecodeOutbox(f *testing.F) {
	f.Add(encodeOutbox(&OutboxEntry{ID: "msg_1", Type: WebhookTokenExpiring, Time: t0, Revision: 3, TokenID: "t", Lead: time.Hour, Attempts: 2, NextAttempt: t0}))
	f.Add(encodeOutbox(&OutboxEntry{}))
	f.Fuzz(func(t *testing.T, v []byte) {
		e, err := decodeOutbox(7, v)
		if err != nil {
			return
		}
		if got := encodeOutbox(&e); string(got) != string(v) {
			t.Errorf("outbox entry re-encodes differently")
		}
	})
}

// TestOutboxRoundTrip: every field of an entry survives the codec.
func TestOutboxRoundTrip(t *testing.T) {
	in := OutboxEntry{
		Seq: 9, ID: "msg_x", Type: WebhookTokenRotated, Time: t0, Revision: 4, Actor: "operator",
		OrgID: "o", TokenID: "t", NewTokenID: "n", Name: "name", CreatedBy: "c", ParentID: "p", KeyID: "k", KeyState: "active",
		CreateTime: t0.Add(1), ExpireTime: t0.Add(2), RevokeTime: t0.Add(3), CutTime: t0.Add(4),
		Reason: "r", Count: -5, Lead: time.Minute, Attempts: 6, NextAttempt: t0.Add(5), LastError: "status 500",
	}
	out, err := decodeOutbox(9, encodeOutbox(&in))
	if err != nil || out != in {
		t.Fatalf("round trip\n%+v, %v\nwant\n%+v", out, err, in)
	}
	if _, err := decodeOutbox(9, encodeOutbox(&in)[:20]); err == nil {
		t.Fatal("a truncated entry decodes")
	}
}

// TestOpenAddsWebhookBuckets: a file made before the outbox and the expiry
// notices (without their buckets) opens, gets them empty, passes the
// check, and its outbox works.
func TestOpenAddsWebhookBuckets(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sigil.db")
	s, err := Open(path, Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	addTestKey(t, s, testKeyID)
	mustCreate(t, s, tok("o", "before", "u", time.Hour))
	if err := s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range laterBuckets {
			if err := tx.DeleteBucket(b); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := CheckFile(path, time.Second); err != nil {
		t.Fatalf("CheckFile of the older file: %v", err)
	}
	s = openBare(t, path)
	s.SetOutbox(true)
	mustCreate(t, s, tok("o", "after", "u", time.Hour))
	es, err := s.ListOutbox(context.Background(), OutboxFilter{})
	if err != nil || len(es) != 1 || es[0].Name != "after" {
		t.Fatalf("outbox after the upgrade: %+v, %v", es, err)
	}
	if n, err := s.NoticeExpiring(context.Background(), t0.Add(59*time.Minute), []time.Duration{10 * time.Minute}); err != nil || n != 2 {
		t.Fatalf("NoticeExpiring after the upgrade = %d, %v; want 2", n, err)
	}
}

// TestNoticeRunWithNothingDueWritesNothing: a run of NoticeExpiring with no
// notice due and no stale record starts no write transaction; a stale
// record (a noticed token since revoked) is deleted once.
func TestNoticeRunWithNothingDueWritesNothing(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	x := tok("o", "x", "u", 10*time.Hour)
	mustCreate(t, s, x)
	for i := range 20 { // live, not due
		mustCreate(t, s, tok("o", "far"+string(rune('a'+i)), "u", 100*time.Hour))
	}
	leads := []time.Duration{time.Hour}
	now := x.ExpireTime.Add(-30 * time.Minute)
	if n, err := s.NoticeExpiring(ctx, now, leads); err != nil || n != 1 {
		t.Fatalf("first run = %d, %v", n, err)
	}
	runs := s.txRuns.Load()
	if n, err := s.NoticeExpiring(ctx, now.Add(time.Minute), leads); err != nil || n != 0 {
		t.Fatalf("second run = %d, %v", n, err)
	}
	if got := s.txRuns.Load(); got != runs {
		t.Fatalf("a run with nothing due ran %d write transactions", got-runs)
	}
	if _, _, _, err := s.RevokeToken(ctx, x.ID, auditFor(AuditTokenRevoked, now)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.NoticeExpiring(ctx, now.Add(2*time.Minute), leads); err != nil {
		t.Fatal(err)
	}
	if err := s.view(ctx, func(tx *bolt.Tx) error {
		if n := tx.Bucket(bucketExpiryNotices).Stats().KeyN; n != 0 {
			t.Errorf("%d notice records left after the token's revocation", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	runs = s.txRuns.Load()
	if _, err := s.NoticeExpiring(ctx, now.Add(3*time.Minute), leads); err != nil {
		t.Fatal(err)
	}
	if got := s.txRuns.Load(); got != runs {
		t.Fatalf("a run after the pruning ran %d write transactions", got-runs)
	}
}
