package server

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// tree is an admin PAT minted by the operator, a child minted through it
// and a grandchild minted through the child (each holding
// organization:tokens and domain:view, so that it may mint).
type tree struct {
	admin, child, grand *sigilv1.CreateTokenResponse
}

// mintThrough mints a token through the PAT cred, living for lifetime
// (shorter than the caller's: a PAT may not mint a token that outlives it).
func (e *env) mintThrough(t *testing.T, cred, org, name string, lifetime time.Duration) *sigilv1.CreateTokenResponse {
	t.Helper()
	resp, err := e.client.CreateToken(withCred(cred), &sigilv1.CreateTokenRequest{
		OrgId: org, Name: name, Grants: []*sigilv1.Grant{grant([]string{"organization:tokens", "domain:view"})}, Expiry: ttl(lifetime),
	})
	if err != nil {
		t.Fatalf("mint %s through a PAT: %v", name, err)
	}
	return resp
}

// tree mints an admin (30 days, e.mint), a child (20 days) and a
// grandchild (10 days).
func (e *env) tree(t *testing.T, org, prefix string) tree {
	t.Helper()
	admin := e.mint(org, prefix+"admin", "alice", grant([]string{"organization:tokens", "domain:view"}))
	child := e.mintThrough(t, admin.GetToken(), org, prefix+"child", 20*day)
	grand := e.mintThrough(t, child.GetToken(), org, prefix+"grand", 10*day)
	if child.GetInfo().GetParentTokenId() != admin.GetInfo().GetTokenId() || grand.GetInfo().GetParentTokenId() != child.GetInfo().GetTokenId() {
		t.Fatalf("parents: child %q, grandchild %q", child.GetInfo().GetParentTokenId(), grand.GetInfo().GetParentTokenId())
	}
	return tree{admin, child, grand}
}

// wantState checks a token's state and revocation reason through GetToken.
func (e *env) wantState(t *testing.T, tk *sigilv1.CreateTokenResponse, state sigilv1.TokenState, reason string) {
	t.Helper()
	got, err := e.client.GetToken(op(), &sigilv1.GetTokenRequest{TokenId: tk.GetInfo().GetTokenId()})
	if err != nil || got.GetInfo().GetState() != state || got.GetInfo().GetRevokeReason() != reason {
		t.Fatalf("token %s: %v (%q), %v; want %v (%q)", tk.GetInfo().GetName(), got.GetInfo().GetState(), got.GetInfo().GetRevokeReason(), err, state, reason)
	}
}

func TestRevokeTokenCascade(t *testing.T) {
	e := newEnv(t, envOpts{})
	tr := e.tree(t, "org-1", "")
	adminID := tr.admin.GetInfo().GetTokenId()
	resp, err := e.client.RevokeToken(op(), &sigilv1.RevokeTokenRequest{TokenId: adminID, Reason: "leaked"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetDescendantsRevoked() != 2 || resp.GetInfo().GetState() != sigilv1.TokenState_TOKEN_STATE_REVOKED {
		t.Fatalf("revoke admin: %+v, want 2 descendants revoked", resp)
	}
	for _, tk := range []*sigilv1.CreateTokenResponse{tr.child, tr.grand} {
		e.wantState(t, tk, sigilv1.TokenState_TOKEN_STATE_REVOKED, store.CascadeReason(adminID, "leaked"))
		_, err := e.client.GetToken(withCred(tk.GetToken()), &sigilv1.GetTokenRequest{Self: true})
		wantCode(t, err, codes.Unauthenticated, "")
	}
	// The revision returned is the last: nothing of the cascade comes after.
	if rev := e.st.Revision(); resp.GetRevision() != rev {
		t.Fatalf("revision %d, store at %d", resp.GetRevision(), rev)
	}
	again, err := e.client.RevokeToken(op(), &sigilv1.RevokeTokenRequest{TokenId: adminID})
	if err != nil || again.GetDescendantsRevoked() != 0 || again.GetRevision() != resp.GetRevision() {
		t.Fatalf("repeat: %+v, %v; want 0 descendants at %d", again, err, resp.GetRevision())
	}

	t.Run("audit", func(t *testing.T) {
		log, err := e.client.ListAuditEvents(op(), &sigilv1.ListAuditEventsRequest{OrgId: "org-1"})
		if err != nil {
			t.Fatal(err)
		}
		cascades := map[string]bool{}
		for _, ev := range log.GetEvents() {
			if ev.GetAction() == sigilv1.AuditAction_AUDIT_ACTION_TOKEN_REVOKED && ev.GetReason() == store.CascadeReason(adminID, "leaked") && ev.GetActor() == "operator" {
				cascades[ev.GetTokenId()] = true
			}
		}
		if len(cascades) != 2 || !cascades[tr.child.GetInfo().GetTokenId()] || !cascades[tr.grand.GetInfo().GetTokenId()] {
			t.Fatalf("cascade audit records for %v, want the child and the grandchild", cascades)
		}
	})
	t.Run("self", func(t *testing.T) {
		tr := e.tree(t, "org-1", "self-")
		resp, err := e.client.RevokeToken(withCred(tr.child.GetToken()), &sigilv1.RevokeTokenRequest{Self: true})
		if err != nil || resp.GetDescendantsRevoked() != 1 {
			t.Fatalf("self revoke of the child: %+v, %v; want 1 descendant", resp, err)
		}
		e.wantState(t, tr.grand, sigilv1.TokenState_TOKEN_STATE_REVOKED, store.CascadeReason(tr.child.GetInfo().GetTokenId(), ""))
		e.wantState(t, tr.admin, sigilv1.TokenState_TOKEN_STATE_ACTIVE, "")
	})
}

func TestRevokeTokensCascade(t *testing.T) {
	e := newEnv(t, envOpts{})
	tr := e.tree(t, "org-1", "")
	// The admin rotates bob's token: bob's new token is minted through the
	// admin, though made for bob.
	bobs := e.mint("org-1", "bobs", "bob")
	rot, err := e.client.RotateToken(withCred(tr.admin.GetToken()), &sigilv1.RotateTokenRequest{TokenId: bobs.GetInfo().GetTokenId(), Expiry: &sigilv1.RotateTokenRequest_Ttl{Ttl: ttl(8 * day).Ttl}})
	if err != nil || rot.GetInfo().GetParentTokenId() != tr.admin.GetInfo().GetTokenId() || rot.GetInfo().GetCreatedBy() != "bob" {
		t.Fatalf("rotate bob's token through the admin: %+v, %v", rot.GetInfo(), err)
	}
	bobsOwn := e.mint("org-1", "bobs-own", "bob")
	resp, err := e.client.RevokeTokens(op(), &sigilv1.RevokeTokensRequest{OrgId: "org-1", CreatedBy: "alice", Reason: "left"})
	// alice's admin, child and grandchild, and bob's token minted through the admin.
	if err != nil || resp.GetRevokedCount() != 4 || resp.GetRevision() != e.st.Revision() {
		t.Fatalf("bulk: %+v, %v; want 4 revoked", resp, err)
	}
	e.wantState(t, &sigilv1.CreateTokenResponse{Info: rot.GetInfo()}, sigilv1.TokenState_TOKEN_STATE_REVOKED, store.CascadeReason(tr.admin.GetInfo().GetTokenId(), "left"))
	e.wantState(t, bobsOwn, sigilv1.TokenState_TOKEN_STATE_ACTIVE, "")
}

func TestRotateTokenCascade(t *testing.T) {
	e := newEnv(t, envOpts{})
	expiry := &sigilv1.RotateTokenRequest_Ttl{Ttl: ttl(8 * day).Ttl}

	t.Run("operator", func(t *testing.T) {
		tr := e.tree(t, "org-1", "op-")
		resp, err := e.client.RotateToken(op(), &sigilv1.RotateTokenRequest{TokenId: tr.admin.GetInfo().GetTokenId(), Expiry: expiry})
		if err != nil || resp.GetDescendantsRevoked() != 2 || resp.GetRevision() != e.st.Revision() {
			t.Fatalf("rotate admin: %d descendants, %v; want 2 (revision %d, store at %d)", resp.GetDescendantsRevoked(), err, resp.GetRevision(), e.st.Revision())
		}
		if resp.GetInfo().GetState() != sigilv1.TokenState_TOKEN_STATE_ACTIVE || resp.GetInfo().GetParentTokenId() != "" {
			t.Fatalf("new token: %+v", resp.GetInfo())
		}
		if _, err := e.client.GetToken(withCred(resp.GetToken()), &sigilv1.GetTokenRequest{Self: true}); err != nil {
			t.Fatalf("new secret: %v", err)
		}
		e.wantState(t, tr.grand, sigilv1.TokenState_TOKEN_STATE_REVOKED, store.CascadeReason(tr.admin.GetInfo().GetTokenId(), "rotated to "+resp.GetInfo().GetTokenId()))
	})
	t.Run("self", func(t *testing.T) {
		tr := e.tree(t, "org-1", "self-")
		resp, err := e.client.RotateToken(withCred(tr.child.GetToken()), &sigilv1.RotateTokenRequest{Self: true, Expiry: expiry})
		if err != nil || resp.GetDescendantsRevoked() != 1 {
			t.Fatalf("self rotate of the child: %d descendants, %v; want 1", resp.GetDescendantsRevoked(), err)
		}
		// The new token takes the old one's place under the admin.
		if resp.GetInfo().GetParentTokenId() != tr.admin.GetInfo().GetTokenId() || resp.GetInfo().GetState() != sigilv1.TokenState_TOKEN_STATE_ACTIVE {
			t.Fatalf("new token: %+v", resp.GetInfo())
		}
		e.wantState(t, tr.grand, sigilv1.TokenState_TOKEN_STATE_REVOKED, store.CascadeReason(tr.child.GetInfo().GetTokenId(), "rotated to "+resp.GetInfo().GetTokenId()))
	})
	t.Run("descendant may not rotate its ancestor", func(t *testing.T) {
		tr := e.tree(t, "org-1", "anc-")
		before := e.st.Revision()
		_, err := e.client.RotateToken(withCred(tr.grand.GetToken()), &sigilv1.RotateTokenRequest{TokenId: tr.admin.GetInfo().GetTokenId(), Expiry: expiry})
		wantCode(t, err, codes.PermissionDenied, "")
		if e.st.Revision() != before {
			t.Fatalf("a denied rotation wrote revisions %d..%d", before, e.st.Revision())
		}
		e.wantState(t, tr.admin, sigilv1.TokenState_TOKEN_STATE_ACTIVE, "")
	})
}
