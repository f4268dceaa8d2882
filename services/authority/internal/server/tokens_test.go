package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

func TestCreateTokenValidation(t *testing.T) {
	e := newEnv(t, envOpts{})
	ok := func() *sigilv1.CreateTokenRequest {
		return &sigilv1.CreateTokenRequest{
			OrgId: "org-1", Name: "deploy", Description: "CI deploys", CreatedBy: "alice",
			Grants: []*sigilv1.Grant{grant([]string{"domain:renew"}, "domains/example.com")}, Expiry: ttl(30 * day),
		}
	}
	tests := []struct {
		name   string
		mutate func(r *sigilv1.CreateTokenRequest)
		field  string
	}{
		{name: "missing org_id", mutate: func(r *sigilv1.CreateTokenRequest) { r.OrgId = "" }, field: "org_id"},
		{name: "org_id too long", mutate: func(r *sigilv1.CreateTokenRequest) { r.OrgId = strings.Repeat("o", maxIdentLen+1) }, field: "org_id"},
		{name: "name with control char", mutate: func(r *sigilv1.CreateTokenRequest) { r.Name = "a\x00b" }, field: "name"},
		{name: "missing name", mutate: func(r *sigilv1.CreateTokenRequest) { r.Name = "" }, field: "name"},
		{name: "description too long", mutate: func(r *sigilv1.CreateTokenRequest) { r.Description = strings.Repeat("d", maxDescriptionLen+1) }, field: "description"},
		{name: "created_by bad", mutate: func(r *sigilv1.CreateTokenRequest) { r.CreatedBy = "bob\n" }, field: "created_by"},
		{name: "no grants", mutate: func(r *sigilv1.CreateTokenRequest) { r.Grants = nil }, field: "grants"},
		{name: "unknown permission", mutate: func(r *sigilv1.CreateTokenRequest) { r.Grants[0].Permissions = []string{"domain:fly"} }, field: "grants[0].permissions[0]"},
		{name: "bad resource", mutate: func(r *sigilv1.CreateTokenRequest) { r.Grants[0].Resources = []string{"/etc/passwd"} }, field: "grants[0].resources[0]"},
		{name: "no expiry", mutate: func(r *sigilv1.CreateTokenRequest) { r.Expiry = nil }, field: "ttl"},
		{name: "ttl too short", mutate: func(r *sigilv1.CreateTokenRequest) { r.Expiry = ttl(day) }, field: "ttl"},
		{name: "ttl too long", mutate: func(r *sigilv1.CreateTokenRequest) { r.Expiry = ttl(366 * day) }, field: "ttl"},
		{name: "expires_at in the past", mutate: func(r *sigilv1.CreateTokenRequest) {
			r.Expiry = &sigilv1.CreateTokenRequest_ExpiresAt{ExpiresAt: timestamppb.New(time.Now().Add(-time.Hour))}
		}, field: "expires_at"},
		{name: "created_by required from operator", mutate: func(r *sigilv1.CreateTokenRequest) { r.CreatedBy = "" }, field: "created_by"},
		{name: "token pasted in description", mutate: func(r *sigilv1.CreateTokenRequest) { r.Description = "use sigil_pat_AQoQabc for CI" }, field: "description"},
		{name: "operator credential pasted in name", mutate: func(r *sigilv1.CreateTokenRequest) { r.Name = "Sigil_Op_xyz" }, field: "name"},
		{name: "watch credential in created_by", mutate: func(r *sigilv1.CreateTokenRequest) { r.CreatedBy = "sigil_watch_abc" }, field: "created_by"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := ok()
			tc.mutate(r)
			_, err := e.client.CreateToken(op(), r)
			wantCode(t, err, codes.InvalidArgument, tc.field)
		})
	}
	// Nothing was created by the bad requests.
	list, err := e.client.ListTokens(op(), &sigilv1.ListTokensRequest{OrgId: "org-1"})
	if err != nil || len(list.GetTokens()) != 0 {
		t.Fatalf("bad requests changed state: %v %v", list, err)
	}

	t.Run("valid ttl", func(t *testing.T) {
		resp, err := e.client.CreateToken(op(), ok())
		if err != nil {
			t.Fatal(err)
		}
		info := resp.GetInfo()
		if !strings.HasPrefix(resp.GetToken(), "sigil_pat_") || len(info.GetTokenId()) != 32 {
			t.Fatalf("token %q id %q", "<redacted>", info.GetTokenId())
		}
		if info.GetState() != sigilv1.TokenState_TOKEN_STATE_ACTIVE || info.GetCreatedBy() != "alice" || info.GetParentTokenId() != "" {
			t.Fatalf("info %+v", info)
		}
		// Implications expanded: domain:renew implies domain:view.
		got := info.GetGrants()[0].GetPermissions()
		if strings.Join(got, ",") != "domain:renew,domain:view" {
			t.Fatalf("grants not expanded: %v", got)
		}
		if d := info.GetExpireTime().AsTime().Sub(info.GetCreateTime().AsTime()); d < 30*day-2*time.Second || d > 30*day+2*time.Second {
			t.Fatalf("lifetime %s", d)
		}
		if strings.Contains(info.String(), resp.GetToken()) {
			t.Fatal("info carries the secret")
		}
	})
	t.Run("valid expires_at at the bound", func(t *testing.T) {
		r := ok()
		r.Name = "bound"
		r.Expiry = &sigilv1.CreateTokenRequest_ExpiresAt{ExpiresAt: timestamppb.New(time.Now().Add(7*day - 3*time.Second))}
		if _, err := e.client.CreateToken(op(), r); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("name taken", func(t *testing.T) {
		_, err := e.client.CreateToken(op(), ok())
		wantCode(t, err, codes.AlreadyExists, "")
	})
	t.Run("same name in another org", func(t *testing.T) {
		r := ok()
		r.OrgId = "org-2"
		if _, err := e.client.CreateToken(op(), r); err != nil {
			t.Fatal(err)
		}
	})
}

func TestAuthentication(t *testing.T) {
	e := newEnv(t, envOpts{})
	pat := e.mint("org-1", "plain", "alice").GetToken()
	req := &sigilv1.ListTokensRequest{OrgId: "org-1"}
	tests := []struct {
		name string
		ctx  context.Context
		code codes.Code
	}{
		{name: "no credential", ctx: context.Background(), code: codes.Unauthenticated},
		{name: "unknown credential", ctx: withCred("sigil_op_nope-nope-nope-nope"), code: codes.Unauthenticated},
		{name: "garbage PAT", ctx: withCred("sigil_pat_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), code: codes.Unauthenticated},
		{name: "tampered PAT", ctx: withCred(pat[:len(pat)-8] + "abcdefgh"), code: codes.Unauthenticated},
		{name: "not bearer", ctx: metadataCtx("authorization", "Basic "+opToken), code: codes.Unauthenticated},
		{name: "watch credential", ctx: withCred(watchToken), code: codes.PermissionDenied},
		{name: "PAT without organization:tokens", ctx: withCred(pat), code: codes.PermissionDenied},
		{name: "operator", ctx: op(), code: codes.OK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.client.ListTokens(tc.ctx, req)
			wantCode(t, err, tc.code, "")
			if err != nil && (strings.Contains(err.Error(), pat) || strings.Contains(err.Error(), opToken)) {
				t.Fatal("error echoes a secret")
			}
		})
	}
	t.Run("expired PAT", func(t *testing.T) {
		e.clock.advance(31 * day)
		defer e.clock.advance(-31 * day)
		_, err := e.client.GetToken(withCred(pat), &sigilv1.GetTokenRequest{Self: true})
		wantCode(t, err, codes.Unauthenticated, "")
	})
	t.Run("revoked PAT", func(t *testing.T) {
		if _, err := e.client.RevokeToken(withCred(pat), &sigilv1.RevokeTokenRequest{Self: true, Reason: "done"}); err != nil {
			t.Fatal(err)
		}
		_, err := e.client.GetToken(withCred(pat), &sigilv1.GetTokenRequest{Self: true})
		wantCode(t, err, codes.Unauthenticated, "")
	})
	t.Run("list permissions needs a credential", func(t *testing.T) {
		_, err := e.client.ListPermissions(context.Background(), &sigilv1.ListPermissionsRequest{})
		wantCode(t, err, codes.Unauthenticated, "")
	})
}

func TestCreateTokenThroughPAT(t *testing.T) {
	e := newEnv(t, envOpts{})
	mgr := e.manager("org-1", "manager", "alice", "domain:renew")
	mgrInfo, err := e.client.GetToken(withCred(mgr), &sigilv1.GetTokenRequest{Self: true})
	if err != nil {
		t.Fatal(err)
	}
	base := func() *sigilv1.CreateTokenRequest {
		return &sigilv1.CreateTokenRequest{
			OrgId: "org-1", Name: "child", Grants: []*sigilv1.Grant{grant([]string{"domain:view"}, "domains/example.com")}, Expiry: ttl(7 * day),
		}
	}
	t.Run("subset allowed, creator and parent set", func(t *testing.T) {
		resp, err := e.client.CreateToken(withCred(mgr), base())
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetInfo().GetCreatedBy() != "alice" || resp.GetInfo().GetParentTokenId() != mgrInfo.GetInfo().GetTokenId() {
			t.Fatalf("info %+v", resp.GetInfo())
		}
	})
	tests := []struct {
		name   string
		mutate func(r *sigilv1.CreateTokenRequest)
	}{
		{name: "grant beyond own", mutate: func(r *sigilv1.CreateTokenRequest) { r.Grants = []*sigilv1.Grant{grant([]string{"domain:transfer"})} }},
		{name: "implied beyond own", mutate: func(r *sigilv1.CreateTokenRequest) {
			r.Grants = []*sigilv1.Grant{grant([]string{"organization:manage"})}
		}},
		{name: "expiry beyond own", mutate: func(r *sigilv1.CreateTokenRequest) { r.Expiry = ttl(60 * day) }},
		{name: "other organization", mutate: func(r *sigilv1.CreateTokenRequest) { r.OrgId = "org-2" }},
		{name: "other creator", mutate: func(r *sigilv1.CreateTokenRequest) { r.CreatedBy = "mallory" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := base()
			r.Name = "denied-" + strings.ReplaceAll(tc.name, " ", "-")
			tc.mutate(r)
			_, err := e.client.CreateToken(withCred(mgr), r)
			wantCode(t, err, codes.PermissionDenied, "")
		})
	}
	t.Run("token without organization:tokens cannot mint", func(t *testing.T) {
		plain := e.mint("org-1", "plain", "bob", grant([]string{"domain:view"})).GetToken()
		r := base()
		r.Name = "from-plain"
		_, err := e.client.CreateToken(withCred(plain), r)
		wantCode(t, err, codes.PermissionDenied, "")
	})
	t.Run("organization:tokens limited to a resource does not manage", func(t *testing.T) {
		limited := e.mint("org-1", "limited", "bob", grant([]string{"organization:tokens", "domain:view"}, "domains/x.com")).GetToken()
		r := base()
		r.Name = "from-limited"
		_, err := e.client.CreateToken(withCred(limited), r)
		wantCode(t, err, codes.PermissionDenied, "")
	})
}

func TestGetToken(t *testing.T) {
	e := newEnv(t, envOpts{})
	a := e.mint("org-1", "a", "alice")
	b := e.mint("org-1", "b", "bob")
	other := e.mint("org-2", "c", "carol")
	mgr := e.manager("org-1", "mgr", "alice")
	tests := []struct {
		name  string
		ctx   context.Context
		req   *sigilv1.GetTokenRequest
		code  codes.Code
		field string
		want  string
	}{
		{name: "operator by id", ctx: op(), req: &sigilv1.GetTokenRequest{TokenId: a.GetInfo().GetTokenId()}, want: a.GetInfo().GetTokenId()},
		{name: "self", ctx: withCred(a.GetToken()), req: &sigilv1.GetTokenRequest{Self: true}, want: a.GetInfo().GetTokenId()},
		{name: "own id", ctx: withCred(a.GetToken()), req: &sigilv1.GetTokenRequest{TokenId: a.GetInfo().GetTokenId()}, want: a.GetInfo().GetTokenId()},
		{name: "manager same org", ctx: withCred(mgr), req: &sigilv1.GetTokenRequest{TokenId: b.GetInfo().GetTokenId()}, want: b.GetInfo().GetTokenId()},
		{name: "manager other org", ctx: withCred(mgr), req: &sigilv1.GetTokenRequest{TokenId: other.GetInfo().GetTokenId()}, code: codes.PermissionDenied},
		{name: "plain token on another", ctx: withCred(a.GetToken()), req: &sigilv1.GetTokenRequest{TokenId: b.GetInfo().GetTokenId()}, code: codes.PermissionDenied},
		{name: "operator self", ctx: op(), req: &sigilv1.GetTokenRequest{Self: true}, code: codes.PermissionDenied},
		{name: "unknown", ctx: op(), req: &sigilv1.GetTokenRequest{TokenId: strings.Repeat("0", 32)}, code: codes.NotFound},
		{name: "bad id", ctx: op(), req: &sigilv1.GetTokenRequest{TokenId: "xyz"}, code: codes.InvalidArgument, field: "token_id"},
		{name: "upper-case id", ctx: op(), req: &sigilv1.GetTokenRequest{TokenId: strings.ToUpper(a.GetInfo().GetTokenId())}, code: codes.InvalidArgument, field: "token_id"},
		{name: "id and self", ctx: op(), req: &sigilv1.GetTokenRequest{TokenId: a.GetInfo().GetTokenId(), Self: true}, code: codes.InvalidArgument, field: "token_id"},
		{name: "neither", ctx: op(), req: &sigilv1.GetTokenRequest{}, code: codes.InvalidArgument, field: "token_id"},
		{name: "unauthenticated", ctx: context.Background(), req: &sigilv1.GetTokenRequest{TokenId: a.GetInfo().GetTokenId()}, code: codes.Unauthenticated},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := e.client.GetToken(tc.ctx, tc.req)
			wantCode(t, err, tc.code, tc.field)
			if tc.code == codes.OK && resp.GetInfo().GetTokenId() != tc.want {
				t.Fatalf("got %s, want %s", resp.GetInfo().GetTokenId(), tc.want)
			}
		})
	}
}

func TestListTokensPaging(t *testing.T) {
	e := newEnv(t, envOpts{})
	var ids []string
	for i := range 7 {
		by := "alice"
		if i%2 == 1 {
			by = "bob"
		}
		ids = append(ids, e.mint("org-1", "t"+string(rune('a'+i)), by).GetInfo().GetTokenId())
	}
	e.mint("org-2", "elsewhere", "alice")
	var got []string
	page := ""
	for n := 0; ; n++ {
		resp, err := e.client.ListTokens(op(), &sigilv1.ListTokensRequest{OrgId: "org-1", PageSize: 3, PageToken: page})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetTokens()) > 3 {
			t.Fatalf("page of %d", len(resp.GetTokens()))
		}
		for _, tk := range resp.GetTokens() {
			got = append(got, tk.GetTokenId())
		}
		page = resp.GetNextPageToken()
		if page == "" {
			break
		}
		if n > 5 {
			t.Fatal("paging does not end")
		}
	}
	if len(got) != 7 {
		t.Fatalf("listed %d tokens, want 7", len(got))
	}
	for i := range got { // newest first
		if got[i] != ids[6-i] {
			t.Fatalf("order: got %v, want reverse of %v", got, ids)
		}
	}
	resp, err := e.client.ListTokens(op(), &sigilv1.ListTokensRequest{OrgId: "org-1", CreatedBy: "bob"})
	if err != nil || len(resp.GetTokens()) != 3 {
		t.Fatalf("by creator: %d %v", len(resp.GetTokens()), err)
	}
	if _, err := e.client.RevokeToken(op(), &sigilv1.RevokeTokenRequest{TokenId: ids[0]}); err != nil {
		t.Fatal(err)
	}
	for state, want := range map[sigilv1.TokenState]int{sigilv1.TokenState_TOKEN_STATE_REVOKED: 1, sigilv1.TokenState_TOKEN_STATE_ACTIVE: 6, sigilv1.TokenState_TOKEN_STATE_EXPIRED: 0} {
		resp, err := e.client.ListTokens(op(), &sigilv1.ListTokensRequest{OrgId: "org-1", State: state})
		if err != nil || len(resp.GetTokens()) != want {
			t.Fatalf("state %v: %d tokens, want %d (%v)", state, len(resp.GetTokens()), want, err)
		}
	}
	bad := []struct {
		name  string
		req   *sigilv1.ListTokensRequest
		field string
	}{
		{name: "no org", req: &sigilv1.ListTokensRequest{}, field: "org_id"},
		{name: "page too big", req: &sigilv1.ListTokensRequest{OrgId: "org-1", PageSize: store.MaxPageSize + 1}, field: "page_size"},
		{name: "negative page", req: &sigilv1.ListTokensRequest{OrgId: "org-1", PageSize: -1}, field: "page_size"},
		{name: "bad state", req: &sigilv1.ListTokensRequest{OrgId: "org-1", State: 42}, field: "state"},
		{name: "bad page token", req: &sigilv1.ListTokensRequest{OrgId: "org-1", PageToken: "garbage!"}, field: "page_token"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.client.ListTokens(op(), tc.req)
			wantCode(t, err, codes.InvalidArgument, tc.field)
		})
	}
	t.Run("manager of another org", func(t *testing.T) {
		mgr := e.manager("org-2", "mgr", "carol")
		_, err := e.client.ListTokens(withCred(mgr), &sigilv1.ListTokensRequest{OrgId: "org-1"})
		wantCode(t, err, codes.PermissionDenied, "")
		resp, err := e.client.ListTokens(withCred(mgr), &sigilv1.ListTokensRequest{OrgId: "org-2"})
		if err != nil || len(resp.GetTokens()) != 2 {
			t.Fatalf("own org: %v %v", resp, err)
		}
	})
}

func TestRevokeToken(t *testing.T) {
	e := newEnv(t, envOpts{})
	a := e.mint("org-1", "a", "alice")
	id := a.GetInfo().GetTokenId()
	r1, err := e.client.RevokeToken(op(), &sigilv1.RevokeTokenRequest{TokenId: id, Reason: "leaked"})
	if err != nil {
		t.Fatal(err)
	}
	if r1.GetRevision() == 0 || r1.GetInfo().GetState() != sigilv1.TokenState_TOKEN_STATE_REVOKED || r1.GetInfo().GetRevokeReason() != "leaked" {
		t.Fatalf("revoke: %+v", r1)
	}
	e.mint("org-1", "other", "alice") // moves the revision on
	_, err = e.client.RevokeToken(op(), &sigilv1.RevokeTokenRequest{TokenId: id, Reason: "pasted sigil_pat_AQabc by mistake"})
	wantCode(t, err, codes.InvalidArgument, "reason")
	if strings.Contains(err.Error(), "sigil_pat_AQabc") {
		t.Fatalf("error echoes the pasted secret: %v", err)
	}
	r2, err := e.client.RevokeToken(op(), &sigilv1.RevokeTokenRequest{TokenId: id, Reason: "again"})
	if err != nil {
		t.Fatal(err)
	}
	if r2.GetRevision() != r1.GetRevision() || r2.GetInfo().GetRevokeReason() != "leaked" ||
		!r2.GetInfo().GetRevokeTime().AsTime().Equal(r1.GetInfo().GetRevokeTime().AsTime()) {
		t.Fatalf("second revoke not idempotent: %+v vs %+v", r2, r1)
	}
	// The name is free again once its token is revoked.
	e.mint("org-1", "a", "alice")

	t.Run("self", func(t *testing.T) {
		b := e.mint("org-1", "b", "bob")
		resp, err := e.client.RevokeToken(withCred(b.GetToken()), &sigilv1.RevokeTokenRequest{Self: true})
		if err != nil || resp.GetInfo().GetTokenId() != b.GetInfo().GetTokenId() {
			t.Fatalf("self revoke: %v %v", resp, err)
		}
	})
	t.Run("manager cross org", func(t *testing.T) {
		mgr := e.manager("org-2", "mgr", "carol")
		c := e.mint("org-1", "c", "carol")
		_, err := e.client.RevokeToken(withCred(mgr), &sigilv1.RevokeTokenRequest{TokenId: c.GetInfo().GetTokenId()})
		wantCode(t, err, codes.PermissionDenied, "")
	})
	t.Run("errors", func(t *testing.T) {
		_, err := e.client.RevokeToken(op(), &sigilv1.RevokeTokenRequest{TokenId: strings.Repeat("a", 32)})
		wantCode(t, err, codes.NotFound, "")
		_, err = e.client.RevokeToken(op(), &sigilv1.RevokeTokenRequest{TokenId: id, Reason: strings.Repeat("r", 513)})
		wantCode(t, err, codes.InvalidArgument, "reason")
		_, err = e.client.RevokeToken(context.Background(), &sigilv1.RevokeTokenRequest{TokenId: id})
		wantCode(t, err, codes.Unauthenticated, "")
	})
}

func TestRevokeTokensByCreator(t *testing.T) {
	e := newEnv(t, envOpts{})
	var alice []*sigilv1.CreateTokenResponse
	for i := range 3 {
		alice = append(alice, e.mint("org-1", "alice-"+string(rune('a'+i)), "alice"))
	}
	bob := e.mint("org-1", "bob", "bob")
	otherOrg := e.mint("org-2", "alice", "alice")
	if _, err := e.client.RevokeToken(op(), &sigilv1.RevokeTokenRequest{TokenId: alice[0].GetInfo().GetTokenId()}); err != nil {
		t.Fatal(err)
	}
	resp, err := e.client.RevokeTokens(op(), &sigilv1.RevokeTokensRequest{OrgId: "org-1", CreatedBy: "alice", Reason: "left the company"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetRevokedCount() != 2 || resp.GetRevision() == 0 {
		t.Fatalf("bulk: %+v", resp)
	}
	for _, tk := range alice[1:] {
		info, err := e.client.GetToken(op(), &sigilv1.GetTokenRequest{TokenId: tk.GetInfo().GetTokenId()})
		if err != nil || info.GetInfo().GetState() != sigilv1.TokenState_TOKEN_STATE_REVOKED {
			t.Fatalf("alice token not revoked: %v %v", info, err)
		}
	}
	for _, tk := range []*sigilv1.CreateTokenResponse{bob, otherOrg} {
		info, err := e.client.GetToken(op(), &sigilv1.GetTokenRequest{TokenId: tk.GetInfo().GetTokenId()})
		if err != nil || info.GetInfo().GetState() != sigilv1.TokenState_TOKEN_STATE_ACTIVE {
			t.Fatalf("unrelated token revoked: %v %v", info, err)
		}
	}
	t.Run("whole org through manager", func(t *testing.T) {
		mgr := e.manager("org-2", "mgr", "carol")
		resp, err := e.client.RevokeTokens(withCred(mgr), &sigilv1.RevokeTokensRequest{OrgId: "org-2"})
		if err != nil || resp.GetRevokedCount() != 2 {
			t.Fatalf("org revoke: %v %v", resp, err)
		}
	})
	t.Run("errors", func(t *testing.T) {
		_, err := e.client.RevokeTokens(op(), &sigilv1.RevokeTokensRequest{})
		wantCode(t, err, codes.InvalidArgument, "org_id")
		mgr := e.manager("org-3", "mgr", "dave")
		_, err = e.client.RevokeTokens(withCred(mgr), &sigilv1.RevokeTokensRequest{OrgId: "org-1"})
		wantCode(t, err, codes.PermissionDenied, "")
	})
}

func TestRotateToken(t *testing.T) {
	e := newEnv(t, envOpts{})
	a := e.mint("org-1", "deploy", "alice", grant([]string{"domain:tech"}, "domains/example.com"))
	resp, err := e.client.RotateToken(op(), &sigilv1.RotateTokenRequest{TokenId: a.GetInfo().GetTokenId(), Expiry: &sigilv1.RotateTokenRequest_Ttl{Ttl: ttl(60 * day).Ttl}})
	if err != nil {
		t.Fatal(err)
	}
	n := resp.GetInfo()
	if resp.GetToken() == a.GetToken() || n.GetTokenId() == a.GetInfo().GetTokenId() || resp.GetRevision() == 0 {
		t.Fatal("rotation kept the secret or id")
	}
	if n.GetName() != "deploy" || n.GetCreatedBy() != "alice" || n.GetGrants()[0].String() != a.GetInfo().GetGrants()[0].String() {
		t.Fatalf("rotated info differs: %+v", n)
	}
	old, err := e.client.GetToken(op(), &sigilv1.GetTokenRequest{TokenId: a.GetInfo().GetTokenId()})
	if err != nil || old.GetInfo().GetState() != sigilv1.TokenState_TOKEN_STATE_REVOKED {
		t.Fatalf("old token: %v %v", old, err)
	}
	// The revision returned is the old token's revocation.
	again, err := e.client.RevokeToken(op(), &sigilv1.RevokeTokenRequest{TokenId: a.GetInfo().GetTokenId()})
	if err != nil || again.GetRevision() != resp.GetRevision() {
		t.Fatalf("old revocation revision %d, rotate said %d (%v)", again.GetRevision(), resp.GetRevision(), err)
	}
	// The new secret works.
	if _, err := e.client.GetToken(withCred(resp.GetToken()), &sigilv1.GetTokenRequest{Self: true}); err != nil {
		t.Fatal(err)
	}
	t.Run("revoked token", func(t *testing.T) {
		_, err := e.client.RotateToken(op(), &sigilv1.RotateTokenRequest{TokenId: a.GetInfo().GetTokenId(), Expiry: &sigilv1.RotateTokenRequest_Ttl{Ttl: ttl(30 * day).Ttl}})
		wantCode(t, err, codes.FailedPrecondition, "")
	})
	t.Run("self cannot extend", func(t *testing.T) {
		_, err := e.client.RotateToken(withCred(resp.GetToken()), &sigilv1.RotateTokenRequest{Self: true, Expiry: &sigilv1.RotateTokenRequest_Ttl{Ttl: ttl(90 * day).Ttl}})
		wantCode(t, err, codes.PermissionDenied, "")
		r, err := e.client.RotateToken(withCred(resp.GetToken()), &sigilv1.RotateTokenRequest{Self: true, Expiry: &sigilv1.RotateTokenRequest_Ttl{Ttl: ttl(30 * day).Ttl}})
		// Not the old token: the rotation revokes its descendants.
		if err != nil || r.GetInfo().GetParentTokenId() != n.GetParentTokenId() {
			t.Fatalf("self rotate: %v %v", r, err)
		}
	})
	t.Run("manager cannot obtain broader grants by rotation", func(t *testing.T) {
		broad := e.mint("org-1", "broad", "bob", grant([]string{"domain:transfer"}))
		mgr := e.manager("org-1", "mgr", "alice", "domain:view")
		_, err := e.client.RotateToken(withCred(mgr), &sigilv1.RotateTokenRequest{TokenId: broad.GetInfo().GetTokenId(), Expiry: &sigilv1.RotateTokenRequest_Ttl{Ttl: ttl(7 * day).Ttl}})
		wantCode(t, err, codes.PermissionDenied, "")
	})
	t.Run("validation", func(t *testing.T) {
		_, err := e.client.RotateToken(op(), &sigilv1.RotateTokenRequest{TokenId: n.GetTokenId()})
		wantCode(t, err, codes.InvalidArgument, "ttl")
		_, err = e.client.RotateToken(op(), &sigilv1.RotateTokenRequest{Expiry: &sigilv1.RotateTokenRequest_Ttl{Ttl: ttl(30 * day).Ttl}})
		wantCode(t, err, codes.InvalidArgument, "token_id")
		_, err = e.client.RotateToken(op(), &sigilv1.RotateTokenRequest{TokenId: strings.Repeat("b", 32), Expiry: &sigilv1.RotateTokenRequest_Ttl{Ttl: ttl(30 * day).Ttl}})
		wantCode(t, err, codes.NotFound, "")
	})
}

func TestListPermissions(t *testing.T) {
	e := newEnv(t, envOpts{})
	resp, err := e.client.ListPermissions(op(), &sigilv1.ListPermissionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range resp.GetPermissions() {
		if p.GetName() == "domain:renew" {
			found = p.GetProduct() == "domain" && strings.Join(p.GetImplies(), ",") == "domain:view"
		}
	}
	if !found || len(resp.GetPermissions()) < 19 {
		t.Fatalf("catalog: %v", resp)
	}
	pat := e.mint("org-1", "a", "alice").GetToken()
	if _, err := e.client.ListPermissions(withCred(pat), &sigilv1.ListPermissionsRequest{}); err != nil {
		t.Fatal(err)
	}
}

func TestListAuditEvents(t *testing.T) {
	e := newEnv(t, envOpts{})
	a := e.mint("org-1", "a", "alice")
	mgr := e.manager("org-1", "mgr", "alice")
	if _, err := e.client.RevokeToken(withCred(mgr), &sigilv1.RevokeTokenRequest{TokenId: a.GetInfo().GetTokenId(), Reason: "cleanup"}); err != nil {
		t.Fatal(err)
	}
	b := e.mint("org-1", "b", "bob")
	if _, err := e.client.RotateToken(op(), &sigilv1.RotateTokenRequest{TokenId: b.GetInfo().GetTokenId(), Expiry: &sigilv1.RotateTokenRequest_Ttl{Ttl: ttl(8 * day).Ttl}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.RevokeTokens(op(), &sigilv1.RevokeTokensRequest{OrgId: "org-1", CreatedBy: "bob", Reason: "leaver"}); err != nil {
		t.Fatal(err)
	}
	e.mint("org-2", "x", "xavier")
	var events []*sigilv1.AuditEvent
	page := ""
	for {
		resp, err := e.client.ListAuditEvents(withCred(mgr), &sigilv1.ListAuditEventsRequest{OrgId: "org-1", PageSize: 2, PageToken: page})
		if err != nil {
			t.Fatal(err)
		}
		events = append(events, resp.GetEvents()...)
		if page = resp.GetNextPageToken(); page == "" {
			break
		}
	}
	want := []struct {
		action sigilv1.AuditAction
		actor  string
		reason string
	}{
		{sigilv1.AuditAction_AUDIT_ACTION_TOKEN_CREATED, "operator", ""},
		{sigilv1.AuditAction_AUDIT_ACTION_TOKEN_CREATED, "operator", ""},
		{sigilv1.AuditAction_AUDIT_ACTION_TOKEN_REVOKED, "token:", "cleanup"},
		{sigilv1.AuditAction_AUDIT_ACTION_TOKEN_CREATED, "operator", ""},
		{sigilv1.AuditAction_AUDIT_ACTION_TOKEN_ROTATED, "operator", ""},
		{sigilv1.AuditAction_AUDIT_ACTION_TOKENS_REVOKED, "operator", "leaver"},
	}
	if len(events) != len(want) {
		t.Fatalf("%d events, want %d: %v", len(events), len(want), events)
	}
	var prev uint64
	for i, w := range want {
		ev := events[i]
		if ev.GetAction() != w.action || !strings.HasPrefix(ev.GetActor(), w.actor) || (w.reason != "" && ev.GetReason() != w.reason) {
			t.Errorf("event %d = %v, want %v by %s", i, ev, w.action, w.actor)
		}
		if ev.GetRevision() <= prev || ev.GetOrgId() != "org-1" || ev.GetTime() == nil {
			t.Errorf("event %d out of order or incomplete: %v", i, ev)
		}
		prev = ev.GetRevision()
	}
	if events[0].GetName() != "a" || len(events[0].GetGrants()) == 0 || events[0].GetTokenId() != a.GetInfo().GetTokenId() {
		t.Errorf("create record lacks details: %v", events[0])
	}
	if events[5].GetCount() != 1 {
		t.Errorf("bulk record count = %d", events[5].GetCount())
	}
	_, err := e.client.ListAuditEvents(op(), &sigilv1.ListAuditEventsRequest{OrgId: "org-1", PageToken: "zzz"})
	wantCode(t, err, codes.InvalidArgument, "page_token")
	_, err = e.client.ListAuditEvents(op(), &sigilv1.ListAuditEventsRequest{})
	wantCode(t, err, codes.InvalidArgument, "org_id")
	other := e.manager("org-2", "mgr", "x")
	_, err = e.client.ListAuditEvents(withCred(other), &sigilv1.ListAuditEventsRequest{OrgId: "org-1"})
	wantCode(t, err, codes.PermissionDenied, "")
}
