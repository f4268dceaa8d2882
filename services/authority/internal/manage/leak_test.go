package manage

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/pkg/token"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// leakFixture is a Manager on a real bbolt file with a settable clock.
type leakFixture struct {
	t   *testing.T
	m   *Manager
	now time.Time
	ctx context.Context
}

func newLeakFixture(t *testing.T) *leakFixture {
	f := &leakFixture{t: t, m: newTestManager(t), now: time.Now().Truncate(time.Second), ctx: context.Background()}
	f.m.now = func() time.Time { return f.now }
	return f
}

// mint mints a token of org "own" as the caller c, expiring in ttl.
func (f *leakFixture) mint(c *Caller, name string, ttl time.Duration, perms ...string) (string, store.Token) {
	f.t.Helper()
	by := ""
	if c.Kind == Operator {
		by = "alice"
	}
	secret, tk, err := f.m.CreateToken(f.ctx, c, NewToken{OrgID: "own", Name: name, CreatedBy: by,
		Grants: []scope.Grant{{Permissions: perms}}, Expire: f.now.Add(ttl).Truncate(time.Second)})
	if err != nil {
		f.t.Fatalf("mint %s: %v", name, err)
	}
	return secret, tk
}

// unrecorded mints a token with the active key that the store never hears
// of: one minted after the backup a restored file was made from.
func (f *leakFixture) unrecorded(ttl time.Duration) (string, token.Claims) {
	f.t.Helper()
	keyID, priv, err := f.m.keys.Signer()
	if err != nil {
		f.t.Fatal(err)
	}
	id, err := token.NewID()
	if err != nil {
		f.t.Fatal(err)
	}
	claims := token.Claims{ID: id, OrgID: "own", KeyID: keyID, IssuedAt: f.now.Add(-time.Minute).Truncate(time.Second),
		ExpiresAt: f.now.Add(ttl).Truncate(time.Second), Grants: []scope.Grant{{Permissions: []string{"domain:view"}}}}
	secret, err := f.m.codec.Mint(claims, priv)
	if err != nil {
		f.t.Fatal(err)
	}
	return secret, claims
}

func (f *leakFixture) report(c *Caller, source, url string, toks ...string) ([]LeakResult, uint64) {
	f.t.Helper()
	res, rev, err := f.m.ReportLeaked(f.ctx, c, toks, source, url)
	if err != nil {
		f.t.Fatalf("ReportLeaked: %v", err)
	}
	if len(res) != len(toks) {
		f.t.Fatalf("%d results for %d strings", len(res), len(toks))
	}
	return res, rev
}

func (f *leakFixture) audit() []store.AuditRecord {
	f.t.Helper()
	recs, _, err := f.m.store.ListAudit(f.ctx, store.AuditFilter{OrgID: "own", PageSize: store.MaxPageSize})
	if err != nil {
		f.t.Fatal(err)
	}
	return recs
}

func countAction(recs []store.AuditRecord, a store.AuditAction) int {
	n := 0
	for _, r := range recs {
		if r.Action == a {
			n++
		}
	}
	return n
}

// TestReportLeakedRevokesGenuineTokens: a live token is revoked with its
// descendants, audited as a leak with the source and url in the reason;
// the revision covers the revocation; a second report says so.
func TestReportLeakedRevokesGenuineTokens(t *testing.T) {
	f := newLeakFixture(t)
	op := &Caller{Kind: Operator}
	reporter := &Caller{Kind: Reporter}
	adminSecret, admin := f.mint(op, "admin", 30*day, TokensPermission, "domain:view")
	adminCaller, err := f.m.Authenticate(f.ctx, adminSecret)
	if err != nil {
		t.Fatal(err)
	}
	_, child := f.mint(adminCaller, "child", 20*day, "domain:view")
	_, bystander := f.mint(op, "bystander", 30*day, "domain:view")

	res, rev := f.report(reporter, "github-secret-scanning", "https://github.com/acme/app/commit/abc", adminSecret)
	if want := []LeakResult{{Outcome: LeakRevoked, TokenID: admin.ID, Revoked: 2}}; !reflect.DeepEqual(res, want) {
		t.Fatalf("results %+v, want %+v", res, want)
	}
	row, err := f.m.store.GetToken(f.ctx, admin.ID)
	if err != nil {
		t.Fatal(err)
	}
	if row.RevokeRev == 0 || !strings.Contains(row.RevokeReason, "github-secret-scanning") || !strings.Contains(row.RevokeReason, "https://github.com/acme/app/commit/abc") {
		t.Fatalf("stored revocation rev %d reason %q: want revoked naming the source and url", row.RevokeRev, row.RevokeReason)
	}
	if rev < row.RevokeRev {
		t.Fatalf("report revision %d below the token's revocation %d", rev, row.RevokeRev)
	}
	if c, _ := f.m.store.GetToken(f.ctx, child.ID); c.RevokeRev == 0 || c.RevokeRev > rev {
		t.Fatalf("child revocation at %d, want revoked at or below %d (the cascade)", c.RevokeRev, rev)
	}
	if b, _ := f.m.store.GetToken(f.ctx, bystander.ID); b.RevokeRev != 0 {
		t.Fatal("an unrelated token was revoked")
	}
	recs := f.audit()
	if n := countAction(recs, store.AuditTokenLeaked); n != 1 {
		t.Fatalf("%d leak audit records, want 1", n)
	}
	for _, r := range recs {
		if r.Action == store.AuditTokenLeaked && (r.TokenID != admin.ID || r.Actor != "reporter" || r.Reason != row.RevokeReason) {
			t.Fatalf("leak audit record %+v: want token %s, actor reporter, the revocation reason", r, admin.ID)
		}
	}

	res, rev2 := f.report(op, "again", "", adminSecret)
	if want := []LeakResult{{Outcome: LeakAlreadyRevoked, TokenID: admin.ID}}; !reflect.DeepEqual(res, want) {
		t.Fatalf("second report %+v, want %+v", res, want)
	}
	if rev2 != row.RevokeRev {
		t.Fatalf("second report revision %d, want the original revocation's %d", rev2, row.RevokeRev)
	}
	if n := countAction(f.audit(), store.AuditTokenLeaked); n != 1 {
		t.Fatalf("%d leak audit records after the second report, want still 1", n)
	}
}

// TestReportLeakedNotAToken: whatever is wrong with a string, the answer
// is the same and says nothing of the token it resembles.
func TestReportLeakedNotAToken(t *testing.T) {
	f := newLeakFixture(t)
	op := &Caller{Kind: Operator}
	secret, tk := f.mint(op, "victim", 30*day, "domain:view")
	keyID, _, err := f.m.keys.Signer()
	if err != nil {
		t.Fatal(err)
	}
	alien := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	claims := token.Claims{ID: token.ID{1, 2, 3}, OrgID: "own", KeyID: keyID, IssuedAt: f.now.Add(-time.Minute),
		ExpiresAt: f.now.Add(day), Grants: []scope.Grant{{Permissions: []string{"domain:view"}}}}
	forgedSig, err := f.m.codec.Mint(claims, alien)
	if err != nil {
		t.Fatal(err)
	}
	claims.KeyID = "no-such-key"
	unknownKey, err := f.m.codec.Mint(claims, alien)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(s string, i int) string {
		c := byte('A')
		if s[i] == 'A' {
			c = 'B'
		}
		return s[:i] + string(c) + s[i+1:]
	}
	other, err := token.NewCodec("other_")
	if err != nil {
		t.Fatal(err)
	}
	_, priv, _ := f.m.keys.Signer()
	claims.KeyID = keyID
	otherPrefix, err := other.Mint(claims, priv)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{
		"empty":              "",
		"garbage":            "hello world",
		"bad checksum":       flip(secret, len(secret)-2),
		"body changed":       flip(secret, 30),
		"truncated":          secret[:len(secret)-1],
		"bad signature":      forgedSig,
		"unknown key":        unknownKey,
		"another prefix":     otherPrefix,
		"too long":           strings.Repeat("a", token.MaxLen+1),
		"token with newline": secret[:20] + "\n" + secret[20:],
	}
	for name, s := range cases {
		t.Run(name, func(t *testing.T) {
			res, rev := f.report(&Caller{Kind: Reporter}, "scanner", "", s)
			if want := []LeakResult{{Outcome: LeakNotAToken}}; !reflect.DeepEqual(res, want) || rev != 0 {
				t.Fatalf("results %+v rev %d, want %+v and 0", res, rev, want)
			}
		})
	}
	if row, _ := f.m.store.GetToken(f.ctx, tk.ID); row.RevokeRev != 0 {
		t.Fatal("a near-miss of a live token revoked it")
	}
	if n := countAction(f.audit(), store.AuditTokenLeaked); n != 0 {
		t.Fatalf("%d leak audit records, want none", n)
	}
}

// TestReportLeakedExpired: a long-expired token is left alone; one that
// expired within ExpiryMargin is revoked all the same; both say EXPIRED.
func TestReportLeakedExpired(t *testing.T) {
	f := newLeakFixture(t)
	op := &Caller{Kind: Operator}
	oldSecret, old := f.mint(op, "old", 8*day, "domain:view")
	recentSecret, recent := f.mint(op, "recent", 10*day, "domain:view")
	f.now = recent.ExpireTime.Add(time.Minute) // old expired two days ago

	res, rev := f.report(&Caller{Kind: Reporter}, "scanner", "", oldSecret, recentSecret)
	want := []LeakResult{{Outcome: LeakExpired, TokenID: old.ID}, {Outcome: LeakExpired, TokenID: recent.ID, Revoked: 1}}
	if !reflect.DeepEqual(res, want) {
		t.Fatalf("results %+v, want %+v", res, want)
	}
	if row, _ := f.m.store.GetToken(f.ctx, old.ID); row.RevokeRev != 0 {
		t.Fatal("a long-expired token was revoked")
	}
	row, _ := f.m.store.GetToken(f.ctx, recent.ID)
	if row.RevokeRev == 0 || rev != row.RevokeRev {
		t.Fatalf("recently expired token revoked at %d, report revision %d: want revoked at the report's revision", row.RevokeRev, rev)
	}
}

// TestReportLeakedDuplicatesAndOrder: results follow the request order,
// a string given twice is answered twice and revoked once, and the
// revision is the highest revocation.
func TestReportLeakedDuplicatesAndOrder(t *testing.T) {
	f := newLeakFixture(t)
	op := &Caller{Kind: Operator}
	aSecret, a := f.mint(op, "a", 30*day, "domain:view")
	bSecret, b := f.mint(op, "b", 30*day, "domain:view")
	res, rev := f.report(&Caller{Kind: Reporter}, "scanner", "", aSecret, "nope", bSecret, aSecret)
	want := []LeakResult{
		{Outcome: LeakRevoked, TokenID: a.ID, Revoked: 1},
		{Outcome: LeakNotAToken},
		{Outcome: LeakRevoked, TokenID: b.ID, Revoked: 1},
		{Outcome: LeakRevoked, TokenID: a.ID},
	}
	if !reflect.DeepEqual(res, want) {
		t.Fatalf("results %+v, want %+v", res, want)
	}
	ra, _ := f.m.store.GetToken(f.ctx, a.ID)
	rb, _ := f.m.store.GetToken(f.ctx, b.ID)
	if rev != max(ra.RevokeRev, rb.RevokeRev) || rev == 0 {
		t.Fatalf("revision %d, want the highest revocation max(%d, %d)", rev, ra.RevokeRev, rb.RevokeRev)
	}
	if n := countAction(f.audit(), store.AuditTokenLeaked); n != 2 {
		t.Fatalf("%d leak audit records, want 2", n)
	}
}

// TestReportLeakedUnrecorded: a genuine token the store has no record of
// (minted after the backup a restored file came from) is revoked by what
// it says, and appears in the snapshot authorizers load.
func TestReportLeakedUnrecorded(t *testing.T) {
	f := newLeakFixture(t)
	secret, claims := f.unrecorded(30 * day)
	id := claims.ID.String()
	res, rev := f.report(&Caller{Kind: Reporter}, "scanner", "https://paste.example/x", secret)
	if want := []LeakResult{{Outcome: LeakRevoked, TokenID: id, Revoked: 1}}; !reflect.DeepEqual(res, want) || rev == 0 {
		t.Fatalf("results %+v rev %d, want %+v and a revision", res, rev, want)
	}
	snap, err := f.m.store.Snapshot(f.ctx, f.now)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range snap.Revoked {
		found = found || r.TokenID == id
	}
	if !found {
		t.Fatal("the unrecorded token is not among the snapshot's revocations")
	}
	recs := f.audit()
	if n := countAction(recs, store.AuditTokenLeaked); n != 1 {
		t.Fatalf("%d leak audit records, want 1", n)
	}
	res, _ = f.report(&Caller{Kind: Reporter}, "scanner", "", secret)
	if want := []LeakResult{{Outcome: LeakAlreadyRevoked, TokenID: id}}; !reflect.DeepEqual(res, want) {
		t.Fatalf("second report %+v, want %+v", res, want)
	}
}

// TestReportLeakedCallers: only the operator and the reporter credential
// may report; the reporter credential may do nothing else.
func TestReportLeakedCallers(t *testing.T) {
	f := newLeakFixture(t)
	c, err := f.m.Authenticate(f.ctx, reporterCred)
	if err != nil || c.Kind != Reporter || c.Actor() != "reporter" {
		t.Fatalf("reporter credential: %+v, %v; want the Reporter kind, actor reporter", c, err)
	}
	if _, _, err := f.m.ListTokens(f.ctx, c, store.ListFilter{OrgID: "own", Now: f.now}); err == nil {
		t.Fatal("the reporter credential lists tokens")
	}
	if _, _, _, _, err := f.m.RevokeTokenString(f.ctx, c, "x", "r"); err == nil {
		t.Fatal("the reporter credential revokes through RevokeToken")
	}
	if _, _, err := f.m.ReportLeaked(f.ctx, &Caller{Kind: Watch}, []string{"x"}, "s", ""); err == nil {
		t.Fatal("the watch credential reports leaks")
	}
}

// FuzzReportLeaked checks that a reported string is NOT_A_TOKEN, with no
// token id and no error, unless it is the one genuine token minted here,
// and that nothing is revoked by anything else.
func FuzzReportLeaked(f *testing.F) {
	m := newTestManager(f)
	ctx := context.Background()
	op := &Caller{Kind: Operator}
	secret, tk, err := m.CreateToken(ctx, op, NewToken{OrgID: "own", Name: "genuine", CreatedBy: "alice",
		Grants: []scope.Grant{{Permissions: []string{"domain:view"}}}, Expire: m.now().Add(30 * day).Truncate(time.Second)})
	if err != nil {
		f.Fatal(err)
	}
	_, other, err := m.CreateToken(ctx, op, NewToken{OrgID: "own", Name: "bystander", CreatedBy: "alice",
		Grants: []scope.Grant{{Permissions: []string{"domain:view"}}}, Expire: m.now().Add(30 * day).Truncate(time.Second)})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(secret)
	f.Add(secret[:len(secret)-1])
	f.Add(secret + "A")
	f.Add(secret[:30] + "x" + secret[31:])
	f.Add("")
	f.Add(token.DefaultPrefix)
	f.Fuzz(func(t *testing.T, s string) {
		res, _, err := m.ReportLeaked(ctx, &Caller{Kind: Reporter}, []string{s}, "fuzz", "")
		if err != nil {
			t.Fatalf("ReportLeaked: %v", err)
		}
		if s == secret {
			if res[0].TokenID != tk.ID || (res[0].Outcome != LeakRevoked && res[0].Outcome != LeakAlreadyRevoked) {
				t.Fatalf("the genuine token: %+v", res[0])
			}
			return
		}
		if res[0] != (LeakResult{Outcome: LeakNotAToken}) {
			t.Fatalf("a string that is not the token: %+v", res[0])
		}
		if row, _ := m.store.GetToken(ctx, other.ID); row.RevokeRev != 0 {
			t.Fatal("an unreported token was revoked")
		}
	})
}
