package storetest

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

func testCreateToken(t *testing.T, open Opener) {
	ctx := context.Background()
	const day = 24 * time.Hour
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, s store.Store) // state before the create
		tok   func() store.Token
		want  error
	}{
		{name: "new", tok: func() store.Token { return tok("o", "ci", "alice", day) }},
		{
			name:  "name taken by a live token",
			setup: func(t *testing.T, s store.Store) { mustCreate(t, s, tok("o", "ci", "bob", day)) },
			tok:   func() store.Token { return tok("o", "ci", "alice", day) },
			want:  store.ErrNameTaken,
		},
		{
			name:  "same name in another organization",
			setup: func(t *testing.T, s store.Store) { mustCreate(t, s, tok("o2", "ci", "alice", day)) },
			tok:   func() store.Token { return tok("o", "ci", "alice", day) },
		},
		{
			name: "name of a revoked token",
			setup: func(t *testing.T, s store.Store) {
				old := tok("o", "ci", "alice", day)
				mustCreate(t, s, old)
				if _, _, _, err := s.RevokeToken(ctx, old.ID, auditFor(store.AuditTokenRevoked, t0)); err != nil {
					t.Fatal(err)
				}
			},
			tok: func() store.Token { return tok("o", "ci", "alice", day) },
		},
		{
			name: "name of an expired token",
			setup: func(t *testing.T, s store.Store) {
				old := tok("o", "ci", "alice", day)
				old.CreateTime, old.ExpireTime = t0.Add(-2*day), t0.Add(-day)
				mustCreate(t, s, old)
			},
			tok: func() store.Token { return tok("o", "ci", "alice", day) },
		},
		{
			name: "name of a token expiring exactly now",
			setup: func(t *testing.T, s store.Store) {
				old := tok("o", "ci", "alice", day)
				old.CreateTime, old.ExpireTime = t0.Add(-day), t0
				mustCreate(t, s, old)
			},
			tok: func() store.Token { return tok("o", "ci", "alice", day) },
		},
		{
			name: "id taken",
			setup: func(t *testing.T, s store.Store) {
				x := tok("o", "other", "alice", day)
				x.ID = "fixed"
				mustCreate(t, s, x)
			},
			tok:  func() store.Token { x := tok("o", "ci", "alice", day); x.ID = "fixed"; return x },
			want: store.ErrTokenExists,
		},
		{
			name: "unknown key",
			tok:  func() store.Token { x := tok("o", "ci", "alice", day); x.KeyID = "nope"; return x },
			want: store.ErrNotFound,
		},
		{
			name: "revoked key",
			setup: func(t *testing.T, s store.Store) {
				addTestKey(t, s, "k2")
				if _, err := s.RevokeKey(ctx, "k2", auditFor(store.AuditKeyRevoked, t0)); err != nil {
					t.Fatal(err)
				}
			},
			tok:  func() store.Token { x := tok("o", "ci", "alice", day); x.KeyID = "k2"; return x },
			want: store.ErrKeyRevoked,
		},
		{name: "empty id", tok: func() store.Token { x := tok("o", "ci", "a", day); x.ID = ""; return x }, want: store.ErrInvalid},
		{name: "empty org", tok: func() store.Token { return tok("", "ci", "a", day) }, want: store.ErrInvalid},
		{name: "empty name", tok: func() store.Token { return tok("o", "", "a", day) }, want: store.ErrInvalid},
		{name: "no expiry", tok: func() store.Token { x := tok("o", "ci", "a", day); x.ExpireTime = time.Time{}; return x }, want: store.ErrInvalid},
		{name: "expires before creation", tok: func() store.Token { return tok("o", "ci", "a", -day) }, want: store.ErrInvalid},
		{name: "already revoked", tok: func() store.Token { x := tok("o", "ci", "a", day); x.RevokeTime = t0; return x }, want: store.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTest(t, open)
			if tc.setup != nil {
				tc.setup(t, s)
			}
			before := s.Revision()
			x := tc.tok()
			rev, err := s.CreateToken(ctx, x, auditFor(store.AuditTokenCreated, t0))
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("err = %v, want %v", err, tc.want)
				}
				if rev != 0 || s.Revision() != before {
					t.Errorf("a refused create changed the revision (%d → %d, returned %d)", before, s.Revision(), rev)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if rev != before+1 {
				t.Errorf("revision %d, want %d", rev, before+1)
			}
			got, err := s.GetToken(ctx, x.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, x) {
				t.Errorf("stored\n%+v\nwant\n%+v", got, x)
			}
			// The name now belongs to the new token: a second create is refused.
			if _, err := s.CreateToken(ctx, tok(x.OrgID, x.Name, "z", day), auditFor(store.AuditTokenCreated, t0)); !errors.Is(err, store.ErrNameTaken) {
				t.Errorf("second create with the name: %v, want ErrNameTaken", err)
			}
		})
	}
}

func testCreateTokenMovesKeyLastExpiry(t *testing.T, open Opener) {
	ctx := context.Background()
	s := openTest(t, open)
	for _, ttl := range []time.Duration{48 * time.Hour, 24 * time.Hour} {
		mustCreate(t, s, tok("o", fmt.Sprint(ttl), "u", ttl))
	}
	keys, err := s.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := t0.Add(48 * time.Hour); !keys[0].LastExpiry.Equal(want) {
		t.Errorf("LastExpiry %v, want %v (the latest, not the last)", keys[0].LastExpiry, want)
	}
}

func testGetToken(t *testing.T, open Opener) {
	ctx := context.Background()
	s := openTest(t, open)
	x := tok("o", "a", "u", time.Hour)
	mustCreate(t, s, x)
	for _, tc := range []struct {
		name, id string
		want     error
	}{
		{"known", x.ID, nil},
		{"unknown", newID(), store.ErrNotFound},
		{"empty", "", store.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.GetToken(ctx, tc.id)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if err == nil && got.ID != tc.id {
				t.Errorf("got token %s", got.ID)
			}
		})
	}
}

func testRevokeToken(t *testing.T, open Opener) {
	ctx := context.Background()
	s := openTest(t, open)
	x := tok("o", "a", "u", time.Hour)
	mustCreate(t, s, x)
	expired := tok("o", "old", "u", time.Hour)
	expired.CreateTime, expired.ExpireTime = t0.Add(-2*time.Hour), t0.Add(-time.Hour)
	mustCreate(t, s, expired)

	revokeAt := t0.Add(time.Minute)
	got, rev, _, err := s.RevokeToken(ctx, x.ID, store.AuditRecord{Time: revokeAt, Actor: "operator", Action: store.AuditTokenRevoked, Reason: "leaked"})
	if err != nil {
		t.Fatal(err)
	}
	if rev != s.Revision() || got.RevokeRev != rev || !got.RevokeTime.Equal(revokeAt) || got.RevokeReason != "leaked" {
		t.Fatalf("revoked token %+v at %d (store at %d)", got, rev, s.Revision())
	}
	if got.StateAt(revokeAt) != store.StateRevoked {
		t.Error("not revoked")
	}

	for _, tc := range []struct {
		name    string
		id      string
		want    error
		wantRev uint64
	}{
		{"again returns the original revision", x.ID, nil, rev},
		{"unknown", newID(), store.ErrNotFound, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := s.Revision()
			ch := s.Changed()
			got2, rev2, _, err := s.RevokeToken(ctx, tc.id, store.AuditRecord{Time: revokeAt.Add(time.Hour), Action: store.AuditTokenRevoked, Reason: "again"})
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if rev2 != tc.wantRev {
				t.Errorf("revision %d, want %d", rev2, tc.wantRev)
			}
			if err == nil && (!got2.RevokeTime.Equal(revokeAt) || got2.RevokeReason != "leaked") {
				t.Errorf("second revoke changed the token: %+v", got2)
			}
			if s.Revision() != before {
				t.Error("wrote")
			}
			select {
			case <-ch:
				t.Error("Changed closed without a write")
			default:
			}
		})
	}

	t.Run("expired token", func(t *testing.T) {
		got, rev, _, err := s.RevokeToken(ctx, expired.ID, auditFor(store.AuditTokenRevoked, t0))
		if err != nil || got.RevokeRev != rev || rev != s.Revision() {
			t.Fatalf("RevokeToken(expired) = %+v, %d, %v", got, rev, err)
		}
	})
	t.Run("zero time", func(t *testing.T) {
		if _, _, _, err := s.RevokeToken(ctx, x.ID, store.AuditRecord{}); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("err = %v, want ErrInvalid", err)
		}
	})

	recs, err := listAuditAfter(ctx, s, "o", 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var revokes []store.AuditRecord
	for _, r := range recs {
		if r.Action == store.AuditTokenRevoked {
			revokes = append(revokes, r)
		}
	}
	if len(revokes) != 2 || revokes[0].TokenID != x.ID || revokes[0].Name != "a" || revokes[0].Reason != "leaked" || revokes[0].Revision != rev {
		t.Errorf("revocation audit records %+v", revokes)
	}
}

func testRevokeTokens(t *testing.T, open Opener) {
	ctx := context.Background()
	const day = 24 * time.Hour
	for _, tc := range []struct {
		name      string
		createdBy string
		wantCount int64
		wantNames []string // revoked by this call
	}{
		{"whole organization", "", 4, []string{"a1", "a2", "b1", "c1"}},
		{"one creator", "alice", 2, []string{"a1", "a2"}},
		{"creator without live tokens", "dave", 0, nil},
		{"unknown creator", "nobody", 0, nil},
		// "ali" must not match "alice": index components are length-prefixed.
		{"creator prefix of another", "ali", 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTest(t, open)
			byName := map[string]store.Token{}
			add := func(org, name, creator string, ttl time.Duration) store.Token {
				x := tok(org, name, creator, ttl)
				if ttl < 0 {
					x.CreateTime, x.ExpireTime = t0.Add(2*ttl), t0.Add(ttl)
				}
				mustCreate(t, s, x)
				byName[org+"/"+name] = x
				return x
			}
			add("o", "a1", "alice", day)
			add("o", "a2", "alice", day)
			add("o", "b1", "bob", day)
			add("o", "c1", "", day)
			add("o", "a-expired", "alice", -day)
			gone := add("o", "d-revoked", "dave", day)
			if _, _, _, err := s.RevokeToken(ctx, gone.ID, auditFor(store.AuditTokenRevoked, t0)); err != nil {
				t.Fatal(err)
			}
			add("other", "a1", "alice", day)
			add("o ", "x", "alice", day) // org id with a trailing space: another org

			before := s.Revision()
			n, rev, err := s.RevokeTokens(ctx, "o", tc.createdBy, store.AuditRecord{Time: t0.Add(time.Minute), Actor: "operator", Action: store.AuditTokensRevoked, Reason: "offboarding"})
			if err != nil {
				t.Fatal(err)
			}
			if n != tc.wantCount {
				t.Fatalf("count %d, want %d", n, tc.wantCount)
			}
			if rev != before+uint64(n) || s.Revision() != rev {
				t.Errorf("revision %d (store %d), want %d: one per revoked token", rev, s.Revision(), before+uint64(n))
			}
			// Exactly the wanted tokens are revoked, each at its own revision.
			want := map[string]bool{}
			for _, name := range tc.wantNames {
				want["o/"+name] = true
			}
			revs := map[uint64]bool{}
			for key, x := range byName {
				got, err := s.GetToken(ctx, x.ID)
				if err != nil {
					t.Fatal(err)
				}
				revokedNow := got.RevokeRev > before
				if revokedNow != want[key] {
					t.Errorf("%s: revoked by the call = %v, want %v", key, revokedNow, want[key])
				}
				if revokedNow {
					revs[got.RevokeRev] = true
					if got.RevokeReason != "offboarding" {
						t.Errorf("%s: reason %q", key, got.RevokeReason)
					}
				}
			}
			if len(revs) != int(n) {
				t.Errorf("%d distinct revisions for %d tokens", len(revs), n)
			}
			evs, err := s.EventsAfter(ctx, before, 100)
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) != int(n) {
				t.Errorf("%d events, want %d", len(evs), n)
			}
			recs, err := listAuditAfter(ctx, s, "o", before, 100)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case n == 0 && len(recs) != 0:
				t.Errorf("audit records for a no-op: %+v", recs)
			case n > 0 && (len(recs) != 1 || recs[0].Count != n || recs[0].Revision != rev || recs[0].Action != store.AuditTokensRevoked):
				t.Errorf("audit records %+v, want one with count %d at %d", recs, n, rev)
			}
		})
	}
}

func testRotateToken(t *testing.T, open Opener) {
	ctx := context.Background()
	const day = 24 * time.Hour
	for _, tc := range []struct {
		name   string
		old    func(t *testing.T, s store.Store) string // returns the old id
		next   func(old string) store.Token
		want   error
		wantOK bool
	}{
		{
			name: "active",
			old: func(t *testing.T, s store.Store) string {
				x := tok("o", "ci", "u", day)
				mustCreate(t, s, x)
				return x.ID
			},
			next:   func(string) store.Token { return tok("o", "ci", "u", 2*day) },
			wantOK: true,
		},
		{
			name: "revoked",
			old: func(t *testing.T, s store.Store) string {
				x := tok("o", "ci", "u", day)
				mustCreate(t, s, x)
				if _, _, _, err := s.RevokeToken(ctx, x.ID, auditFor(store.AuditTokenRevoked, t0)); err != nil {
					t.Fatal(err)
				}
				return x.ID
			},
			next: func(string) store.Token { return tok("o", "ci", "u", day) },
			want: store.ErrNotActive,
		},
		{
			name: "expired",
			old: func(t *testing.T, s store.Store) string {
				x := tok("o", "ci", "u", day)
				x.CreateTime, x.ExpireTime = t0.Add(-2*day), t0.Add(-day)
				mustCreate(t, s, x)
				return x.ID
			},
			next: func(string) store.Token { return tok("o", "ci", "u", day) },
			want: store.ErrNotActive,
		},
		{
			name: "unknown",
			old:  func(*testing.T, store.Store) string { return newID() },
			next: func(string) store.Token { return tok("o", "ci", "u", day) },
			want: store.ErrNotFound,
		},
		{
			name: "new name",
			old: func(t *testing.T, s store.Store) string {
				x := tok("o", "ci", "u", day)
				mustCreate(t, s, x)
				return x.ID
			},
			next: func(string) store.Token { return tok("o", "other", "u", day) },
			want: store.ErrInvalid,
		},
		{
			name: "new id taken",
			old: func(t *testing.T, s store.Store) string {
				x := tok("o", "ci", "u", day)
				mustCreate(t, s, x)
				return x.ID
			},
			next: func(old string) store.Token { x := tok("o", "ci", "u", day); x.ID = old; return x },
			want: store.ErrTokenExists,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTest(t, open)
			oldID := tc.old(t, s)
			next := tc.next(oldID)
			before := s.Revision()
			rev, _, err := s.RotateToken(ctx, oldID, next, auditFor(store.AuditTokenRotated, t0.Add(time.Minute)))
			if !tc.wantOK {
				if !errors.Is(err, tc.want) {
					t.Fatalf("err = %v, want %v", err, tc.want)
				}
				if s.Revision() != before {
					t.Error("a refused rotation wrote")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if rev != before+2 || s.Revision() != rev {
				t.Errorf("revision %d (store %d), want %d: creation then revocation", rev, s.Revision(), before+2)
			}
			old, err := s.GetToken(ctx, oldID)
			if err != nil {
				t.Fatal(err)
			}
			if old.RevokeRev != rev {
				t.Errorf("old token revoked at %d, want %d", old.RevokeRev, rev)
			}
			got, err := s.GetToken(ctx, next.ID)
			if err != nil || got.RevokeRev != 0 || got.Name != "ci" {
				t.Fatalf("new token %+v, %v", got, err)
			}
			evs, err := s.EventsAfter(ctx, before, 10)
			if err != nil || len(evs) != 1 || evs[0].Kind != store.EventTokenRevoked || evs[0].TokenID != oldID || evs[0].Revision != rev {
				t.Errorf("streamed events %+v, %v", evs, err)
			}
			// The name moved to the new token.
			if _, err := s.CreateToken(ctx, tok("o", "ci", "u", day), auditFor(store.AuditTokenCreated, t0)); !errors.Is(err, store.ErrNameTaken) {
				t.Errorf("create with the rotated name: %v, want ErrNameTaken", err)
			}
			if _, _, _, err := s.RevokeToken(ctx, next.ID, auditFor(store.AuditTokenRevoked, t0)); err != nil {
				t.Fatal(err)
			}
			mustCreate(t, s, tok("o", "ci", "u", day))
		})
	}
}

func testListTokensPaging(t *testing.T, open Opener) {
	ctx := context.Background()
	s := openTest(t, open)
	const n = 250
	creators := []string{"alice", "bob", "carol"}
	var all []store.Token // newest first
	for i := range n {
		x := tok("o", fmt.Sprint("t", i), creators[i%3], time.Duration(1+i%5)*time.Hour)
		mustCreate(t, s, x)
		all = append([]store.Token{x}, all...)
		if i%10 == 0 { // noise in other organizations, one sorting right after "o"
			mustCreate(t, s, tok("o2", fmt.Sprint("t", i), "alice", time.Hour))
			mustCreate(t, s, tok("p", fmt.Sprint("t", i), "alice", time.Hour))
		}
	}
	for i := 0; i < n; i += 4 {
		if _, _, _, err := s.RevokeToken(ctx, all[i].ID, auditFor(store.AuditTokenRevoked, t0)); err != nil {
			t.Fatal(err)
		}
	}
	now := t0.Add(150 * time.Minute) // tokens with a 1 or 2 hour ttl have expired
	stored := map[string]store.Token{}
	for _, x := range all {
		got, err := s.GetToken(ctx, x.ID)
		if err != nil {
			t.Fatal(err)
		}
		stored[x.ID] = got
	}

	for _, tc := range []struct {
		name      string
		createdBy string
		state     store.TokenState
	}{
		{"all", "", store.StateAny},
		{"creator", "bob", store.StateAny},
		{"active", "", store.StateActive},
		{"revoked", "", store.StateRevoked},
		{"expired of a creator", "carol", store.StateExpired},
		{"unknown creator", "zed", store.StateAny},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var want []string
			for _, x := range all {
				st := stored[x.ID]
				if (tc.createdBy == "" || st.CreatedBy == tc.createdBy) && (tc.state == store.StateAny || st.StateAt(now) == tc.state) {
					want = append(want, x.ID)
				}
			}
			var got []string
			page := ""
			for pages := 0; ; pages++ {
				if pages > n {
					t.Fatal("paging does not end")
				}
				toks, next, err := s.ListTokens(ctx, store.ListFilter{OrgID: "o", CreatedBy: tc.createdBy, State: tc.state, Now: now, PageSize: 7, PageToken: page})
				if err != nil {
					t.Fatal(err)
				}
				if len(toks) > 7 {
					t.Fatalf("page of %d", len(toks))
				}
				if next != "" && len(toks) != 7 {
					t.Errorf("short page (%d) before the end", len(toks))
				}
				for _, x := range toks {
					got = append(got, x.ID)
				}
				if next == "" {
					break
				}
				page = next
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("listed %d tokens, want %d, in order:\ngot  %v\nwant %v", len(got), len(want), got, want)
			}
		})
	}

	t.Run("page size", func(t *testing.T) {
		for _, c := range []struct{ size, want int }{{0, store.DefaultPageSize}, {-1, store.DefaultPageSize}, {5000, n}} {
			toks, _, err := s.ListTokens(ctx, store.ListFilter{OrgID: "o", PageSize: c.size})
			if err != nil {
				t.Fatal(err)
			}
			if len(toks) != c.want {
				t.Errorf("PageSize %d: %d tokens, want %d", c.size, len(toks), c.want)
			}
		}
	})
}

func testListTokensBadPageToken(t *testing.T, open Opener) {
	ctx := context.Background()
	s := openTest(t, open)
	for i := range 3 {
		mustCreate(t, s, tok("o", fmt.Sprint("t", i), "alice", time.Hour))
		mustCreate(t, s, tok("o2", fmt.Sprint("t", i), "alice", time.Hour))
	}
	_, orgPage, err := s.ListTokens(ctx, store.ListFilter{OrgID: "o", PageSize: 1})
	if err != nil || orgPage == "" {
		t.Fatal(err)
	}
	_, creatorPage, err := s.ListTokens(ctx, store.ListFilter{OrgID: "o", CreatedBy: "alice", PageSize: 1})
	if err != nil || creatorPage == "" {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		f    store.ListFilter
	}{
		{"not base64", store.ListFilter{OrgID: "o", PageToken: "!!!"}},
		{"padded base64", store.ListFilter{OrgID: "o", PageToken: orgPage + "="}},
		{"too short", store.ListFilter{OrgID: "o", PageToken: base64.RawURLEncoding.EncodeToString([]byte{'o', 1})}},
		{"another organization", store.ListFilter{OrgID: "o2", PageToken: orgPage}},
		{"another creator", store.ListFilter{OrgID: "o", CreatedBy: "bob", PageToken: creatorPage}},
		{"creator token without creator", store.ListFilter{OrgID: "o", PageToken: creatorPage}},
		{"org token with creator", store.ListFilter{OrgID: "o", CreatedBy: "alice", PageToken: orgPage}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := s.ListTokens(ctx, tc.f); !errors.Is(err, store.ErrBadPageToken) {
				t.Errorf("err = %v, want ErrBadPageToken", err)
			}
		})
	}
	if _, _, err := s.ListTokens(ctx, store.ListFilter{}); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("no organization: %v, want ErrInvalid", err)
	}
}
