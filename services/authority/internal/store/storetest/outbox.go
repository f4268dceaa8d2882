package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// The webhook outbox and expiry notice tests register themselves here, so
// that the list in storetest.go stays as it is.
func init() {
	Tests = append(Tests, []struct {
		Name string
		Fn   func(t *testing.T, cfg Config)
	}{
		{"OutboxOffWritesNothing", wrap(testOutboxOff)},
		{"OutboxEventsOfEveryMutation", wrap(testOutboxEvents)},
		{"OutboxRetryFailAck", wrap(testOutboxRetryFailAck)},
		{"OutboxSurvivesReopen", testOutboxSurvivesReopen},
		{"OutboxChunkedCascade", testOutboxChunkedCascade},
		{"NoticeExpiring", testNoticeExpiring},
	}...)
}

// outboxAll returns every entry of the pending (or failed) list, paging
// with a small limit.
func outboxAll(t *testing.T, s store.Store, failed bool) []store.OutboxEntry {
	t.Helper()
	var out []store.OutboxEntry
	var after uint64
	for {
		page, err := s.ListOutbox(context.Background(), store.OutboxFilter{Failed: failed, After: after, Limit: 7})
		if err != nil {
			t.Fatalf("ListOutbox: %v", err)
		}
		for _, e := range page {
			if e.Seq <= after {
				t.Fatalf("entry %d listed after %d", e.Seq, after)
			}
			after = e.Seq
		}
		out = append(out, page...)
		if len(page) < 7 {
			return out
		}
	}
}

func outboxTypes(es []store.OutboxEntry) string {
	var ts []string
	for _, e := range es {
		ts = append(ts, e.Type)
	}
	return strings.Join(ts, " ")
}

// testOutboxOff: with the outbox off (the default) no mutation writes an
// event.
func testOutboxOff(t *testing.T, open Opener) {
	ctx := context.Background()
	s := openTest(t, open)
	a := tok("o", "a", "u", time.Hour)
	mustCreate(t, s, a)
	if _, _, _, err := s.RevokeToken(ctx, a.ID, auditFor(store.AuditTokenRevoked, t0)); err != nil {
		t.Fatal(err)
	}
	if es := outboxAll(t, s, false); len(es) != 0 {
		t.Fatalf("outbox off, yet %d entries: %s", len(es), outboxTypes(es))
	}
	if p, f, err := s.OutboxCounts(ctx); err != nil || p != 0 || f != 0 {
		t.Fatalf("OutboxCounts = %d, %d, %v", p, f, err)
	}
}

// testOutboxEvents: every audited mutation writes its event in its own
// transaction, in revision order, with the token's or key's facts.
func testOutboxEvents(t *testing.T, open Opener) {
	ctx := context.Background()
	s := openTest(t, open)
	s.SetOutbox(true)
	a := tok("o", "a", "alice", time.Hour)
	revA := mustCreate(t, s, a)
	c := childOf(a, "c")
	mustCreate(t, s, c)
	b := tok("o", "b", "bob", time.Hour)
	mustCreate(t, s, b)
	b2 := tok("o", "b", "bob", 2*time.Hour)
	if _, _, err := s.RotateToken(ctx, b.ID, b2, store.AuditRecord{Time: t0, Actor: "operator", Action: store.AuditTokenRotated, TokenID: b.ID, Reason: "rotated to " + b2.ID}); err != nil {
		t.Fatal(err)
	}
	_, revokeRev, n, err := s.RevokeToken(ctx, a.ID, store.AuditRecord{Time: t0, Actor: "token:x", Action: store.AuditTokenRevoked, Reason: "lost"})
	if err != nil || n != 1 {
		t.Fatalf("RevokeToken = %d, %v", n, err)
	}
	x, y := tok("o2", "x", "carol", time.Hour), tok("o2", "y", "carol", time.Hour)
	mustCreate(t, s, x)
	mustCreate(t, s, y)
	if n, _, err := s.RevokeTokens(ctx, "o2", "", auditFor(store.AuditTokensRevoked, t0)); err != nil || n != 2 {
		t.Fatalf("RevokeTokens = %d, %v", n, err)
	}
	addTestKey(t, s, "k2")
	if _, err := s.SetKeyState(ctx, "k2", store.KeyVerifyOnly); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CutKey(ctx, "k2", t0, auditFor(store.AuditKeyRevoked, t0)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RevokeKey(ctx, "k2", auditFor(store.AuditKeyRevoked, t0)); err != nil {
		t.Fatal(err)
	}

	leaked := tok("o3", "leaked", "dave", time.Hour)
	mustCreate(t, s, leaked)
	mustCreate(t, s, childOf(leaked, "leaked-child"))
	if _, _, n, err := s.RevokeToken(ctx, leaked.ID, store.AuditRecord{Time: t0, Actor: "operator", Action: store.AuditTokenLeaked, Reason: "found on github"}); err != nil || n != 1 {
		t.Fatalf("RevokeToken (leaked) = %d, %v", n, err)
	}

	es := outboxAll(t, s, false)
	want := "token.created token.created token.created token.rotated token.revoked token.revoked " +
		"token.created token.created token.revoked token.revoked key.rotated key.rotated key.revoked key.revoked " +
		"token.created token.created token.revoked token.leaked"
	if got := outboxTypes(es); got != want {
		t.Fatalf("events\n%s\nwant\n%s", got, want)
	}
	ids := map[string]bool{}
	for i, e := range es {
		if ids[e.ID] || !strings.HasPrefix(e.ID, "msg_") || len(e.ID) != 36 {
			t.Fatalf("entry %d: id %q (duplicate or malformed)", i, e.ID)
		}
		ids[e.ID] = true
		if e.Seq>>8 != e.Revision || e.Attempts != 0 || !e.NextAttempt.IsZero() {
			t.Fatalf("entry %d: %+v", i, e)
		}
	}
	if e := es[0]; e.TokenID != a.ID || e.OrgID != "o" || e.Name != "a" || e.CreatedBy != "alice" || e.Revision != revA ||
		!e.CreateTime.Equal(a.CreateTime) || !e.ExpireTime.Equal(a.ExpireTime) || e.Actor != "operator" || e.KeyID != testKeyID {
		t.Errorf("token.created %+v", e)
	}
	if e := es[1]; e.TokenID != c.ID || e.ParentID != a.ID {
		t.Errorf("token.created of the child %+v", e)
	}
	// A rotation is one event naming both tokens.
	if e := es[3]; e.TokenID != b.ID || e.NewTokenID != b2.ID || e.Name != "b" || e.RevokeTime.IsZero() || e.Reason != "rotated to "+b2.ID {
		t.Errorf("token.rotated %+v", e)
	}
	if e := es[4]; e.TokenID != c.ID || e.Reason != store.CascadeReason(a.ID, "lost") || e.Count != 0 {
		t.Errorf("token.revoked of the cascade %+v", e)
	}
	if e := es[5]; e.TokenID != a.ID || e.Count != 1 || e.Reason != "lost" || e.Actor != "token:x" || e.Revision != revokeRev || !e.RevokeTime.Equal(t0) {
		t.Errorf("token.revoked of the revoked token %+v, want cascade count 1 at %d", e, revokeRev)
	}
	if got := es[8].TokenID + " " + es[9].TokenID; got != x.ID+" "+y.ID && got != y.ID+" "+x.ID {
		t.Errorf("bulk revocation events name %s, want %s and %s", got, x.ID, y.ID)
	}
	if e := es[10]; e.KeyID != "k2" || e.KeyState != "active" || e.Actor != "operator" {
		t.Errorf("key.rotated of the new key %+v", e)
	}
	if e := es[11]; e.KeyID != "k2" || e.KeyState != "verify-only" || e.Actor != store.ActorSystem {
		t.Errorf("key.rotated of the state change %+v", e)
	}
	if e := es[12]; e.KeyID != "k2" || !e.CutTime.Equal(t0) {
		t.Errorf("key.revoked of the cut %+v", e)
	}
	if e := es[13]; e.KeyState != "revoked" || e.RevokeTime.IsZero() {
		t.Errorf("key.revoked %+v", e)
	}
	if e := es[16]; e.Reason != store.CascadeReason(leaked.ID, "found on github") {
		t.Errorf("token.revoked of the leaked token's child %+v", e)
	}
	if e := es[17]; e.TokenID != leaked.ID || e.Count != 1 || e.Reason != "found on github" || e.CreatedBy != "dave" {
		t.Errorf("token.leaked %+v", e)
	}
	if p, f, err := s.OutboxCounts(ctx); err != nil || p != len(es) || f != 0 {
		t.Fatalf("OutboxCounts = %d, %d, %v; want %d, 0", p, f, err, len(es))
	}
	// A rejected mutation writes no event.
	if _, err := s.CreateToken(ctx, tok("o", "b", "bob", time.Hour), auditFor(store.AuditTokenCreated, t0)); !errors.Is(err, store.ErrNameTaken) {
		t.Fatalf("CreateToken of a taken name: %v", err)
	}
	if again := outboxAll(t, s, false); len(again) != len(es) {
		t.Fatalf("a rejected mutation left %d entries, want %d", len(again), len(es))
	}
}

// testOutboxRetryFailAck: a failed attempt is recorded on the entry, a
// given-up entry moves to the failed list, a delivered one is deleted.
func testOutboxRetryFailAck(t *testing.T, open Opener) {
	ctx := context.Background()
	s := openTest(t, open)
	s.SetOutbox(true)
	for i := range 3 {
		mustCreate(t, s, tok("o", fmt.Sprint("t", i), "u", time.Hour))
	}
	es := outboxAll(t, s, false)
	if len(es) != 3 {
		t.Fatalf("%d entries, want 3", len(es))
	}
	e := es[0]
	e.Attempts, e.NextAttempt, e.LastError = 2, t0.Add(time.Minute), "status 503"
	e.TokenID = "changed" // not a delivery field: not written
	if err := s.RetryOutbox(ctx, e, false); err != nil {
		t.Fatal(err)
	}
	got := outboxAll(t, s, false)[0]
	if got.Attempts != 2 || !got.NextAttempt.Equal(t0.Add(time.Minute)) || got.LastError != "status 503" || got.TokenID != es[0].TokenID || got.ID != es[0].ID {
		t.Fatalf("after RetryOutbox: %+v", got)
	}
	e.Attempts, e.LastError = 3, strings.Repeat("x", 1000)
	if err := s.RetryOutbox(ctx, e, true); err != nil {
		t.Fatal(err)
	}
	failed := outboxAll(t, s, true)
	if len(failed) != 1 || failed[0].ID != es[0].ID || failed[0].Attempts != 3 || len(failed[0].LastError) > 256 {
		t.Fatalf("failed list %+v", failed)
	}
	if err := s.RetryOutbox(ctx, e, false); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("RetryOutbox of a failed entry: %v, want ErrNotFound", err)
	}
	if err := s.AckOutbox(ctx, es[1].Seq); err != nil {
		t.Fatal(err)
	}
	if err := s.AckOutbox(ctx, es[1].Seq); err != nil {
		t.Fatalf("AckOutbox again: %v", err)
	}
	if left := outboxAll(t, s, false); len(left) != 1 || left[0].ID != es[2].ID {
		t.Fatalf("pending after ack: %+v", left)
	}
	if p, f, err := s.OutboxCounts(ctx); err != nil || p != 1 || f != 1 {
		t.Fatalf("OutboxCounts = %d, %d, %v; want 1, 1", p, f, err)
	}
	if rest, err := s.ListOutbox(ctx, store.OutboxFilter{After: es[2].Seq}); err != nil || len(rest) != 0 {
		t.Fatalf("ListOutbox after the last = %+v, %v", rest, err)
	}
}

// testOutboxSurvivesReopen: entries and their delivery state outlive a
// restart.
func testOutboxSurvivesReopen(t *testing.T, cfg Config) {
	ctx := context.Background()
	s := openTest(t, cfg.Open)
	s.SetOutbox(true)
	mustCreate(t, s, tok("o", "a", "u", time.Hour))
	es := outboxAll(t, s, false)
	es[0].Attempts = 1
	if err := s.RetryOutbox(ctx, es[0], false); err != nil {
		t.Fatal(err)
	}
	s = cfg.Reopen(t, s)
	got := outboxAll(t, s, false)
	if len(got) != 1 || got[0].ID != es[0].ID || got[0].Attempts != 1 || got[0].Type != store.WebhookTokenCreated {
		t.Fatalf("after reopen: %+v, want %+v", got, es)
	}
}

// testOutboxChunkedCascade: a cascade larger than one transaction of the
// backend still writes one event per revoked token.
func testOutboxChunkedCascade(t *testing.T, cfg Config) {
	ctx := context.Background()
	s := openTest(t, cfg.Open)
	size := cfg.TreeSize
	root := tok("o", "root", "u", time.Hour)
	nodes := []store.Token{root}
	for i := 1; i <= size; i++ {
		nodes = append(nodes, childOf(nodes[(i-1)/2], fmt.Sprint("n", i)))
	}
	for _, n := range nodes {
		mustCreate(t, s, n)
	}
	s.SetOutbox(true)
	if _, _, n, err := s.RevokeToken(ctx, root.ID, auditFor(store.AuditTokenRevoked, t0)); err != nil || n != int64(size) {
		t.Fatalf("RevokeToken = %d, %v", n, err)
	}
	es := outboxAll(t, s, false)
	seen := map[string]bool{}
	for _, e := range es {
		if e.Type != store.WebhookTokenRevoked || seen[e.TokenID] {
			t.Fatalf("unexpected entry %+v", e)
		}
		seen[e.TokenID] = true
	}
	if len(es) != size+1 || es[len(es)-1].TokenID != root.ID || es[len(es)-1].Count != int64(size) {
		t.Fatalf("%d events (last %+v), want %d ending with the root's, cascade count %d", len(es), es[len(es)-1], size+1, size)
	}
}

// testNoticeExpiring: a notice is due once a token expires within a lead,
// is made once per token and lead (also after a reopen), the shortest
// when several are due, never for a lead not shorter than the lifetime,
// never for a revoked or expired token; each is audited and, with the
// outbox on, a token.expiring event.
func testNoticeExpiring(t *testing.T, cfg Config) {
	ctx := context.Background()
	s := openTest(t, cfg.Open)
	s.SetOutbox(true)
	leads := []time.Duration{24 * time.Hour, 168 * time.Hour}
	long := tok("o", "long", "alice", 30*24*time.Hour) // both leads apply
	late := tok("o", "late", "alice", 10*24*time.Hour) // checked first within 24h
	short := tok("o", "short", "alice", 2*time.Hour)   // lifetime below both leads
	gone := tok("o", "gone", "alice", 10*24*time.Hour) // revoked
	for _, x := range []store.Token{long, late, short, gone} {
		mustCreate(t, s, x)
	}
	if _, _, _, err := s.RevokeToken(ctx, gone.ID, auditFor(store.AuditTokenRevoked, t0)); err != nil {
		t.Fatal(err)
	}
	before := outboxAll(t, s, false)

	notice := func(now time.Time, want int) {
		t.Helper()
		n, err := s.NoticeExpiring(ctx, now, leads)
		if err != nil || n != want {
			t.Fatalf("NoticeExpiring at %s = %d, %v; want %d", now.Sub(t0), n, err, want)
		}
	}
	expLong := long.ExpireTime
	notice(expLong.Add(-200*time.Hour), 0)
	notice(late.ExpireTime.Add(-12*time.Hour), 1) // late: 24h only; long: not yet within 168h
	notice(late.ExpireTime.Add(-11*time.Hour), 0) // made once
	revBefore := s.Revision()
	notice(expLong.Add(-100*time.Hour), 1) // long: 168h
	if s.Revision() != revBefore+1 {
		t.Fatalf("revision %d after one notice, want %d", s.Revision(), revBefore+1)
	}
	notice(expLong.Add(-99*time.Hour), 0)
	s = cfg.Reopen(t, s)
	s.SetOutbox(true)
	notice(expLong.Add(-98*time.Hour), 0) // remembered across a restart
	notice(expLong.Add(-10*time.Hour), 1) // long: 24h
	notice(expLong.Add(-time.Hour), 0)
	notice(expLong.Add(time.Hour), 0) // expired

	es := outboxAll(t, s, false)[len(before):]
	if got := outboxTypes(es); got != "token.expiring token.expiring token.expiring" {
		t.Fatalf("events %s", got)
	}
	for i, w := range []struct {
		id   string
		lead time.Duration
	}{{late.ID, 24 * time.Hour}, {long.ID, 168 * time.Hour}, {long.ID, 24 * time.Hour}} {
		e := es[i]
		if e.TokenID != w.id || e.Lead != w.lead || e.CreatedBy != "alice" || e.Actor != store.ActorSystem || e.OrgID != "o" || e.ExpireTime.IsZero() {
			t.Errorf("notice %d: %+v, want token %s lead %s", i, e, w.id, w.lead)
		}
	}
	var recs []store.AuditRecord
	for page := ""; ; {
		rs, next, err := s.ListAudit(ctx, store.AuditFilter{OrgID: "o", PageToken: page})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if r.Action == store.AuditTokenExpiring {
				recs = append(recs, r)
			}
		}
		if page = next; page == "" {
			break
		}
	}
	if len(recs) != 3 || recs[2].TokenID != long.ID || recs[2].Revision != es[2].Revision || !strings.Contains(recs[2].Reason, "notice 24h0m0s before") {
		t.Fatalf("expiry audit records %+v", recs)
	}
	// Notices are not streamed to followers.
	evs, err := s.EventsAfter(ctx, revBefore, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if ev.Kind == store.EventTokenExpiring {
			t.Fatalf("EventsAfter returned an expiry notice: %+v", ev)
		}
	}
	if _, err := s.NoticeExpiring(ctx, t0, nil); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("no lead: %v, want ErrInvalid", err)
	}
	if _, err := s.NoticeExpiring(ctx, t0, []time.Duration{time.Hour, 0}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("zero lead: %v, want ErrInvalid", err)
	}
}
