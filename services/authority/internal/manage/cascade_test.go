package manage

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// TestRotateParentRules: a token rotating itself hands its place (its
// parent) to the new token rather than becoming its parent, and a token may
// not rotate a token it was minted through; revocation reports the
// descendants.
func TestRotateParentRules(t *testing.T) {
	ctx := context.Background()
	m := newTestManager(t)
	opCaller := &Caller{Kind: Operator}
	grants := []scope.Grant{{Permissions: []string{"organization:tokens", "domain:view"}}}
	mint := func(c *Caller, name string, ttl time.Duration) (string, store.Token) {
		t.Helper()
		by := ""
		if c.Kind == Operator {
			by = "alice"
		}
		secret, tk, err := m.CreateToken(ctx, c, NewToken{OrgID: "own", Name: name, CreatedBy: by, Grants: grants, Expire: m.now().Add(ttl).Truncate(time.Second)})
		if err != nil {
			t.Fatalf("mint %s: %v", name, err)
		}
		return secret, tk
	}
	as := func(secret string) *Caller {
		t.Helper()
		c, err := m.Authenticate(ctx, secret)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	adminSecret, admin := mint(opCaller, "admin", 30*day)
	childSecret, child := mint(as(adminSecret), "child", 20*day)
	grandSecret, _ := mint(as(childSecret), "grand", 10*day)

	if _, _, _, _, err := m.RotateToken(ctx, as(grandSecret), Ref{ID: admin.ID}, m.now().Add(8*day).Truncate(time.Second)); !errors.Is(err, ErrPermissionDenied) {
		t.Fatalf("grandchild rotates the admin: %v, want ErrPermissionDenied", err)
	}
	_, next, _, n, err := m.RotateToken(ctx, as(childSecret), Ref{Self: true}, m.now().Add(8*day).Truncate(time.Second))
	if err != nil || n != 1 || next.ParentID != admin.ID {
		t.Fatalf("child rotates itself: parent %q, %d descendants, %v; want parent admin, 1", next.ParentID, n, err)
	}
	if got, _ := m.store.GetToken(ctx, child.ID); got.RevokeRev == 0 {
		t.Fatal("old child not revoked")
	}
	_, _, n, revoked, err := m.RevokeToken(ctx, opCaller, Ref{ID: admin.ID}, "leaked")
	if err != nil || n != 1 || !revoked {
		t.Fatalf("revoke admin: %d descendants, revoked %v, %v; want 1 (the rotated child), true", n, revoked, err)
	}
}
