package e2e

// End to end: the example product (examples/domains, guarded by pkg/authz)
// against the real authority and authorizers over TCP on loopback.

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/sigil-auth/sigil/internal/testproc"
	"github.com/sigil-auth/sigil/pkg/authz"
	domainsv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/examples/domains/v1"
)

func TestProductEndToEnd(t *testing.T) {
	a := startPairAuthority(t)
	z1, z2 := startPairAuthorizer(t, a), startPairAuthorizer(t, a)
	_, _, conn := grpcProc(t, "domains", testproc.MustBuild(t, "examples/domains"),
		"--listen", "127.0.0.1:0", "--authorizers", z1.addr+","+z2.addr)
	c := domainsv1.NewDomainServiceClient(conn)

	renewer, renewerID := a.mint(t, "org-a", []string{"domain:renew"}, "domains/example.com")
	viewer, _ := a.mint(t, "org-a", []string{"domain:view"})
	call := func(tok string, kv ...string) context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		t.Cleanup(cancel)
		if tok != "" {
			kv = append(kv, "authorization", "Bearer "+tok)
		}
		return metadata.AppendToOutgoingContext(ctx, kv...)
	}
	renew := func(ctx context.Context, fqdn string) (*domainsv1.RenewDomainResponse, error) {
		return c.RenewDomain(ctx, &domainsv1.RenewDomainRequest{Domain: &domainsv1.DomainRef{Fqdn: fqdn}, Years: 1})
	}
	wantDenied := func(t *testing.T, err error, code codes.Code, reason string) {
		t.Helper()
		if status.Code(err) != code || authz.Reason(err) != reason {
			t.Fatalf("error %v (reason %q), want %v %s", err, authz.Reason(err), code, reason)
		}
	}

	t.Run("allowed", func(t *testing.T) {
		// Several calls: the pool's round-robin reaches both authorizers.
		for range 4 {
			resp, err := renew(call(renewer, "x-organization-id", "org-a"), "example.com")
			if err != nil || resp.GetTokenId() != renewerID || resp.GetDomain().GetFqdn() != "example.com" {
				t.Fatalf("RenewDomain = %v, %v; want renewed by %s", resp, err, renewerID)
			}
		}
		l, err := c.ListDomains(call(viewer), &domainsv1.ListDomainsRequest{})
		if err != nil || l.GetOrgId() != "org-a" || len(l.GetDomains()) != 3 {
			t.Fatalf("ListDomains = %v, %v", l, err)
		}
	})
	t.Run("wrong permission", func(t *testing.T) {
		_, err := renew(call(viewer), "example.com")
		wantDenied(t, err, codes.PermissionDenied, "DENY_REASON_PERMISSION_NOT_GRANTED")
	})
	t.Run("wrong resource", func(t *testing.T) {
		_, err := renew(call(renewer), "example.org")
		wantDenied(t, err, codes.PermissionDenied, "DENY_REASON_RESOURCE_NOT_GRANTED")
	})
	t.Run("other org", func(t *testing.T) {
		_, err := renew(call(renewer, "x-organization-id", "org-b"), "example.com")
		wantDenied(t, err, codes.PermissionDenied, "DENY_REASON_ORG_MISMATCH")
	})
	t.Run("no token", func(t *testing.T) {
		_, err := renew(call(""), "example.com")
		wantDenied(t, err, codes.Unauthenticated, authz.ReasonMissingToken)
	})
	t.Run("missing field", func(t *testing.T) {
		_, err := c.RenewDomain(call(renewer), &domainsv1.RenewDomainRequest{Years: 1})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "domain.fqdn") {
			t.Fatalf("error %v, want INVALID_ARGUMENT naming domain.fqdn", err)
		}
	})
	t.Run("revoked token with min_revision", func(t *testing.T) {
		tok, id := a.mint(t, "org-a", []string{"domain:renew"}, "domains/example.com")
		if _, err := renew(call(tok), "example.com"); err != nil {
			t.Fatalf("before revocation: %v", err)
		}
		rev := a.revoke(t, id)
		// At once after the revoke: min_revision makes the authorizer wait
		// until it has applied it, so this is never a stale allow.
		_, err := renew(call(tok, authz.DefaultMinRevisionKey, strconv.FormatUint(rev, 10)), "example.com")
		wantDenied(t, err, codes.Unauthenticated, "DENY_REASON_REVOKED")
	})
	t.Run("public method without a token", func(t *testing.T) {
		if r, err := c.Ping(call(""), &domainsv1.PingRequest{}); err != nil || r.GetMessage() != "pong" {
			t.Fatalf("Ping = %v, %v", r, err)
		}
	})
	t.Run("one authorizer down, the other up", func(t *testing.T) {
		z1.proc.Kill()
		for i := range 6 {
			if _, err := renew(call(renewer), "example.com"); err != nil {
				t.Fatalf("call %d with one authorizer down: %v", i, err)
			}
		}
	})
	t.Run("all authorizers down", func(t *testing.T) {
		z2.proc.Kill()
		for i := range 4 {
			resp, err := renew(call(renewer), "example.com")
			if status.Code(err) != codes.Unavailable || resp != nil {
				t.Fatalf("call %d with every authorizer down = %v, %v; want UNAVAILABLE", i, resp, err)
			}
		}
		// A public method does not need them.
		if _, err := c.Ping(call(""), &domainsv1.PingRequest{}); err != nil {
			t.Fatalf("Ping: %v", err)
		}
	})
}
