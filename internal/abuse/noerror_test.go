package abuse

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

// TestBadInputIsNeverAnError sends both real services a set of bad
// requests — bad fields, oversized grants, garbage tokens, wrong
// credentials, oversized messages, bytes that are not HTTP/2 — and checks
// each answer's code, then that neither service logged a line at ERROR: a
// client's mistake is never the server's fault.
func TestBadInputIsNeverAnError(t *testing.T) {
	authority, dir := startAuthority(t)
	authorizer := startAuthorizer(t, authority, dir)
	op := operator(t, dir)
	ac, zc := authority.authority(), authorizer.authorizer()
	ttl := &sigilv1.CreateTokenRequest_Ttl{Ttl: durationpb.New(30 * 24 * time.Hour)}
	view := []*sigilv1.Grant{{Permissions: []string{"domain:view"}}}
	var huge []*sigilv1.Grant
	for i := range 64 {
		g := &sigilv1.Grant{Permissions: []string{"domain:view", "domain:renew"}}
		for j := range 4 {
			g.Resources = append(g.Resources, fmt.Sprintf("domains/%s-%d-%d.example.com", strings.Repeat("x", 20), i, j))
		}
		huge = append(huge, g)
	}
	good, err := ac.CreateToken(op, &sigilv1.CreateTokenRequest{OrgId: "org-a", Name: "good", Grants: view, Expiry: ttl, CreatedBy: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	bg := context.Background()
	cases := []struct {
		name string
		call func() error
		want codes.Code
	}{
		// Authority.
		{"create: missing org", func() error {
			_, err := ac.CreateToken(op, &sigilv1.CreateTokenRequest{Name: "x", Grants: view, Expiry: ttl})
			return err
		}, codes.InvalidArgument},
		{"create: oversized grants", func() error {
			_, err := ac.CreateToken(op, &sigilv1.CreateTokenRequest{OrgId: "org-a", Name: "huge", Grants: huge, Expiry: ttl, CreatedBy: "alice"})
			return err
		}, codes.InvalidArgument},
		{"create: no credential", func() error {
			_, err := ac.CreateToken(bg, &sigilv1.CreateTokenRequest{OrgId: "org-a", Name: "x", Grants: view, Expiry: ttl})
			return err
		}, codes.Unauthenticated},
		{"create: wrong credential", func() error {
			_, err := ac.CreateToken(withCred(bg, "sigil_op_not-the-operator"), &sigilv1.CreateTokenRequest{OrgId: "org-a", Name: "x", Grants: view, Expiry: ttl})
			return err
		}, codes.Unauthenticated},
		{"create: garbage PAT", func() error {
			_, err := ac.CreateToken(withCred(bg, "sigil_pat_garbage"), &sigilv1.CreateTokenRequest{OrgId: "org-a", Name: "x", Grants: view, Expiry: ttl})
			return err
		}, codes.Unauthenticated},
		{"create: 1 MiB message", func() error {
			_, err := ac.CreateToken(op, &sigilv1.CreateTokenRequest{OrgId: "org-a", Name: "x", Description: strings.Repeat("d", 1<<20), Grants: view, Expiry: ttl})
			return err
		}, codes.ResourceExhausted},
		{"get: malformed id", func() error {
			_, err := ac.GetToken(op, &sigilv1.GetTokenRequest{TokenId: "not-an-id"})
			return err
		}, codes.InvalidArgument},
		{"list: bad page token", func() error {
			_, err := ac.ListTokens(op, &sigilv1.ListTokensRequest{OrgId: "org-a", PageToken: "garbage"})
			return err
		}, codes.InvalidArgument},
		{"watch: wrong credential", func() error {
			s, err := ac.WatchRevocations(withCred(bg, "sigil_watch_wrong"), &sigilv1.WatchRevocationsRequest{})
			if err == nil {
				_, err = s.Recv()
			}
			return err
		}, codes.Unauthenticated},
		// Authorizer.
		{"check: empty token", func() error {
			_, err := zc.CheckPermission(bg, &sigilv1.CheckPermissionRequest{Permission: "domain:view"})
			return err
		}, codes.InvalidArgument},
		{"check: bad permission", func() error {
			_, err := zc.CheckPermission(bg, &sigilv1.CheckPermissionRequest{Token: good.GetToken(), Permission: "nope"})
			return err
		}, codes.InvalidArgument},
		{"check: garbage token (a denial)", func() error {
			resp, err := zc.CheckPermission(bg, &sigilv1.CheckPermissionRequest{Token: "sigil_pat_garbage", Permission: "domain:view"})
			if err == nil && resp.GetAllowed() {
				return status.Error(codes.Internal, "garbage allowed")
			}
			return err
		}, codes.OK},
		{"check: 1 MiB message", func() error {
			_, err := zc.CheckPermission(bg, &sigilv1.CheckPermissionRequest{Token: strings.Repeat("t", 1<<20), Permission: "domain:view"})
			return err
		}, codes.ResourceExhausted},
		{"check: over the method bound", func() error {
			_, err := zc.CheckPermission(bg, &sigilv1.CheckPermissionRequest{Token: strings.Repeat("t", 16<<10), Permission: "domain:view"})
			return err
		}, codes.ResourceExhausted},
		{"checks: none", func() error {
			_, err := zc.CheckPermissions(bg, &sigilv1.CheckPermissionsRequest{Token: good.GetToken()})
			return err
		}, codes.InvalidArgument},
		{"check: min_revision never reached", func() error {
			ctx, cancel := context.WithTimeout(bg, 300*time.Millisecond)
			defer cancel()
			_, err := zc.CheckPermission(ctx, &sigilv1.CheckPermissionRequest{Token: good.GetToken(), Permission: "domain:view", MinRevision: 1 << 60})
			if status.Code(err) == codes.DeadlineExceeded {
				err = status.Error(codes.Unavailable, "client deadline first")
			}
			return err
		}, codes.Unavailable},
	}
	for _, tc := range cases {
		if got := status.Code(tc.call()); got != tc.want {
			t.Errorf("%s: code %v, want %v", tc.name, got, tc.want)
		}
	}
	// Bytes that are not HTTP/2, on both ports.
	for _, addr := range []string{authority.addr, authorizer.addr} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n" + strings.Repeat("\x00\xff", 1000)))
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.Read(make([]byte, 512))
		c.Close()
	}
	// Everything still works.
	if resp, err := zc.CheckPermission(bg, &sigilv1.CheckPermissionRequest{Token: good.GetToken(), Permission: "domain:view", Resource: "domains/example.com"}); err != nil || !resp.GetAllowed() {
		t.Fatalf("good check after the bad ones: %v, %v", resp, err)
	}
	for _, p := range []*svc{authority, authorizer} {
		for _, line := range strings.Split(p.Logs.String(), "\n") {
			if strings.Contains(line, `"level":"ERROR"`) {
				t.Errorf("%s logged at ERROR for a client's mistake: %s", p.Name, line)
			}
		}
	}
}
