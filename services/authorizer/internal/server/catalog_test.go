package server

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/services/authorizer/internal/authoritytest"
)

// wantUnknown checks an unknown-permission refusal: INVALID_ARGUMENT naming
// field, the permission quoted, the token never echoed.
func wantUnknown(t *testing.T, err error, field, perm, tok string) {
	t.Helper()
	wantCode(t, err, codes.InvalidArgument, field)
	want := field + `: unknown permission "` + perm + `" (not in the authority's catalog)`
	if st, _ := status.FromError(err); st.Message() != want {
		t.Fatalf("message %q, want %q", st.Message(), want)
	}
	if tok != "" && strings.Contains(err.Error(), tok) {
		t.Fatal("error echoes the token")
	}
}

func TestCheckPermissionUnknownPermission(t *testing.T) {
	e := newEnv(t)
	e.sync(t)
	// A token granting everything on the product: the permission would
	// match "domain:*"-like grants if it were not refused first.
	tok, _ := e.mint(t, "org-a", scope.Grant{Permissions: []string{"domain:view", "domain:renew"}})
	_, err := checkPermission(t, e, &sigilv1.CheckPermissionRequest{Token: tok, Permission: "domain:veiw", Resource: "domains/example.com"})
	wantUnknown(t, err, "permission", "domain:veiw", tok)
	// Before the token is parsed: a malformed token gets the same answer,
	// which is how a product checks its permissions at start-up.
	_, err = checkPermission(t, e, &sigilv1.CheckPermissionRequest{Token: "x", Permission: "domain:veiw"})
	wantUnknown(t, err, "permission", "domain:veiw", "")
	// A known permission is decided as before, the resource too.
	resp, err := checkPermission(t, e, &sigilv1.CheckPermissionRequest{Token: tok, Permission: "domain:view", Resource: "domains/example.com"})
	if err != nil || !resp.GetAllowed() {
		t.Fatalf("known permission: %v, %v", resp, err)
	}
	resp, err = checkPermission(t, e, &sigilv1.CheckPermissionRequest{Token: "x", Permission: "domain:view"})
	if err != nil || resp.GetAllowed() || resp.GetReason() != sigilv1.DenyReason_DENY_REASON_MALFORMED {
		t.Fatalf("known permission, malformed token: %v, %v", resp, err)
	}
}

func TestCheckPermissionsUnknownPermission(t *testing.T) {
	e := newEnv(t)
	e.sync(t)
	tok, _ := e.mint(t, "org-a", renewExample)
	checks := []*sigilv1.PermissionCheck{
		{Permission: "domain:view"}, {Permission: "domain:renew", Resource: "domains/example.com"},
		{Permission: "billing:view"}, {Permission: "domain:veiw"}, {Permission: "domain:renwe"},
	}
	_, err := e.client.CheckPermissions(context.Background(), &sigilv1.CheckPermissionsRequest{Token: tok, Checks: checks})
	wantUnknown(t, err, "checks[3].permission", "domain:veiw", tok)
	resp, err := e.client.CheckPermissions(context.Background(), &sigilv1.CheckPermissionsRequest{Token: tok, Checks: checks[:3]})
	if err != nil || len(resp.GetResults()) != 3 || !resp.GetResults()[1].GetAllowed() || resp.GetResults()[2].GetAllowed() {
		t.Fatalf("known permissions: %v, %v", resp, err)
	}
}

// A catalog file's permissions are known once streamed; a stream without a
// catalog (an older authority) leaves permissions unchecked: an unknown one
// is an ordinary denial.
func TestUnknownPermissionFollowsTheStreamedCatalog(t *testing.T) {
	t.Run("catalog file", func(t *testing.T) {
		e := newEnv(t)
		e.syncWith(t, authoritytest.Catalog("dns:view", "dns:edit"))
		tok, _ := e.mint(t, "org-a", scope.Grant{Permissions: []string{"dns:edit"}})
		resp, err := checkPermission(t, e, &sigilv1.CheckPermissionRequest{Token: tok, Permission: "dns:edit"})
		if err != nil || !resp.GetAllowed() {
			t.Fatalf("dns:edit: %v, %v", resp, err)
		}
		_, err = checkPermission(t, e, &sigilv1.CheckPermissionRequest{Token: tok, Permission: "domain:view"})
		wantUnknown(t, err, "permission", "domain:view", tok)
	})
	t.Run("no catalog", func(t *testing.T) {
		e := newEnv(t)
		e.syncWith(t)
		tok, _ := e.mint(t, "org-a", renewExample)
		resp, err := checkPermission(t, e, &sigilv1.CheckPermissionRequest{Token: tok, Permission: "domain:veiw"})
		if err != nil || resp.GetAllowed() || resp.GetReason() != sigilv1.DenyReason_DENY_REASON_PERMISSION_NOT_GRANTED {
			t.Fatalf("without a catalog: %v, %v", resp, err)
		}
	})
}
