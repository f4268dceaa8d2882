package server

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

// TestAuthenticateBeforeValidate: an anonymous or unknown caller gets
// UNAUTHENTICATED for a request that is also invalid, and learns nothing of
// the ttl bounds or the catalog; the watch credential is refused everything
// but WatchRevocations with one message.
func TestAuthenticateBeforeValidate(t *testing.T) {
	e := newEnv(t, envOpts{})
	bad := &sigilv1.CreateTokenRequest{OrgId: "org-1", Name: "n", CreatedBy: "a",
		Grants: []*sigilv1.Grant{grant([]string{"domain:fly"})}, Expiry: ttl(day)}
	for name, ctx := range map[string]context.Context{
		"anonymous": context.Background(),
		"unknown":   withCred("sigil_pat_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := e.client.CreateToken(ctx, bad)
			wantCode(t, err, codes.Unauthenticated, "")
			if msg := status.Convert(err).Message(); strings.Contains(msg, "between") || strings.Contains(msg, "permission") {
				t.Fatalf("message reveals a rule: %q", msg)
			}
			_, err = e.client.GetToken(ctx, &sigilv1.GetTokenRequest{})
			wantCode(t, err, codes.Unauthenticated, "")
		})
	}
	t.Run("watch credential", func(t *testing.T) {
		_, err := e.client.CreateToken(withCred(watchToken), bad)
		wantCode(t, err, codes.PermissionDenied, "")
		_, err = e.client.ListPermissions(withCred(watchToken), &sigilv1.ListPermissionsRequest{})
		wantCode(t, err, codes.PermissionDenied, "")
		if msg := status.Convert(err).Message(); !strings.Contains(msg, "the watch credential may only call WatchRevocations") {
			t.Fatalf("message %q", msg)
		}
	})
}
