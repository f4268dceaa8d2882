package authz

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"

	domainsv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/examples/domains/v1"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

// echoDomains answers with what pkg/authz gave the handler.
type echoDomains struct {
	domainsv1.UnimplementedDomainServiceServer
}

func (echoDomains) ListDomains(ctx context.Context, _ *domainsv1.ListDomainsRequest) (*domainsv1.ListDomainsResponse, error) {
	return &domainsv1.ListDomainsResponse{OrgId: OrgID(ctx)}, nil
}
func (echoDomains) GetDomain(ctx context.Context, r *domainsv1.GetDomainRequest) (*domainsv1.GetDomainResponse, error) {
	return &domainsv1.GetDomainResponse{Domain: &domainsv1.Domain{Fqdn: r.GetFqdn()}}, nil
}
func (echoDomains) RenewDomain(ctx context.Context, r *domainsv1.RenewDomainRequest) (*domainsv1.RenewDomainResponse, error) {
	return &domainsv1.RenewDomainResponse{TokenId: TokenID(ctx)}, nil
}
func (echoDomains) Ping(context.Context, *domainsv1.PingRequest) (*domainsv1.PingResponse, error) {
	return &domainsv1.PingResponse{Message: "pong"}, nil
}

// serveGuarded serves echoDomains behind a Guard on checker over loopback.
func serveGuarded(t *testing.T, checker Checker) domainsv1.DomainServiceClient {
	t.Helper()
	g, err := New(Options{
		Services: []protoreflect.ServiceDescriptor{domainsv1.File_sigil_examples_domains_v1_domains_proto.Services().ByName("DomainService")},
		Checker:  checker, OrgIDKey: "x-organization-id",
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.UnaryInterceptor(g.UnaryServerInterceptor()), grpc.StreamInterceptor(g.StreamServerInterceptor()))
	domainsv1.RegisterDomainServiceServer(srv, echoDomains{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return domainsv1.NewDomainServiceClient(conn)
}

func callCtx(t *testing.T, kv ...string) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return metadata.AppendToOutgoingContext(ctx, kv...)
}

func wantStatus(t *testing.T, err error, code codes.Code, reason string) {
	t.Helper()
	if status.Code(err) != code || Reason(err) != reason {
		t.Fatalf("error %v (reason %q), want %v with reason %q", err, Reason(err), code, reason)
	}
}

func TestInterceptorAnswers(t *testing.T) {
	allow := &sigilv1.CheckPermissionResponse{Allowed: true, TokenId: "tid", OrgId: "org-a"}
	deny := func(r sigilv1.DenyReason) *sigilv1.CheckPermissionResponse {
		return &sigilv1.CheckPermissionResponse{Reason: r}
	}
	bearer := []string{"authorization", "Bearer sigil_pat_x"}
	renew := &domainsv1.RenewDomainRequest{Domain: &domainsv1.DomainRef{Fqdn: "example.com"}, Years: 1}

	t.Run("allowed: resource from a nested field, ids to the handler, org and min_revision from metadata", func(t *testing.T) {
		var got *sigilv1.CheckPermissionRequest
		c := serveGuarded(t, fakeChecker{resp: allow, last: &got})
		resp, err := c.RenewDomain(callCtx(t, append(bearer, "x-organization-id", "org-a", "x-sigil-min-revision", "42")...), renew)
		if err != nil || resp.GetTokenId() != "tid" {
			t.Fatalf("RenewDomain = %v, %v; want token id tid", resp, err)
		}
		if got.GetToken() != "sigil_pat_x" || got.GetPermission() != "domain:renew" || got.GetResource() != "domains/example.com" ||
			got.GetOrgId() != "org-a" || got.GetMinRevision() != 42 {
			t.Fatalf("CheckPermission request %v", got)
		}
		l, err := c.ListDomains(callCtx(t, bearer...), &domainsv1.ListDomainsRequest{})
		if err != nil || l.GetOrgId() != "org-a" {
			t.Fatalf("ListDomains = %v, %v", l, err)
		}
		if got.GetResource() != "" || got.GetPermission() != "domain:view" || got.GetOrgId() != "" {
			t.Fatalf("CheckPermission request %v", got)
		}
	})
	t.Run("public method without a token", func(t *testing.T) {
		c := serveGuarded(t, fakeChecker{err: status.Error(codes.Unavailable, "down")})
		if r, err := c.Ping(callCtx(t), &domainsv1.PingRequest{}); err != nil || r.GetMessage() != "pong" {
			t.Fatalf("Ping = %v, %v", r, err)
		}
	})
	for _, c := range []struct {
		name    string
		checker fakeChecker
		md      []string
		req     *domainsv1.RenewDomainRequest
		code    codes.Code
		reason  string
	}{
		{"no token", fakeChecker{resp: allow}, nil, renew, codes.Unauthenticated, ReasonMissingToken},
		{"other scheme", fakeChecker{resp: allow}, []string{"authorization", "Basic abc"}, renew, codes.Unauthenticated, ReasonMissingToken},
		{"revoked", fakeChecker{resp: deny(sigilv1.DenyReason_DENY_REASON_REVOKED)}, bearer, renew, codes.Unauthenticated, "DENY_REASON_REVOKED"},
		{"expired", fakeChecker{resp: deny(sigilv1.DenyReason_DENY_REASON_EXPIRED)}, bearer, renew, codes.Unauthenticated, "DENY_REASON_EXPIRED"},
		{"malformed", fakeChecker{resp: deny(sigilv1.DenyReason_DENY_REASON_MALFORMED)}, bearer, renew, codes.Unauthenticated, "DENY_REASON_MALFORMED"},
		{"permission", fakeChecker{resp: deny(sigilv1.DenyReason_DENY_REASON_PERMISSION_NOT_GRANTED)}, bearer, renew, codes.PermissionDenied, "DENY_REASON_PERMISSION_NOT_GRANTED"},
		{"resource", fakeChecker{resp: deny(sigilv1.DenyReason_DENY_REASON_RESOURCE_NOT_GRANTED)}, bearer, renew, codes.PermissionDenied, "DENY_REASON_RESOURCE_NOT_GRANTED"},
		{"org", fakeChecker{resp: deny(sigilv1.DenyReason_DENY_REASON_ORG_MISMATCH)}, bearer, renew, codes.PermissionDenied, "DENY_REASON_ORG_MISMATCH"},
		{"allowed without a token id is no allow", fakeChecker{resp: &sigilv1.CheckPermissionResponse{Allowed: true}}, bearer, renew, codes.PermissionDenied, "DENY_REASON_UNSPECIFIED"},
		{"authorizer unavailable", fakeChecker{err: status.Error(codes.Unavailable, "stale")}, bearer, renew, codes.Unavailable, ""},
		{"authorizer internal error", fakeChecker{err: status.Error(codes.Internal, "boom")}, bearer, renew, codes.Unavailable, ""},
		{"missing nested field", fakeChecker{resp: allow}, bearer, &domainsv1.RenewDomainRequest{Years: 1}, codes.InvalidArgument, ""},
		{"bad min_revision", fakeChecker{resp: allow}, append(bearer, "x-sigil-min-revision", "soon"), renew, codes.InvalidArgument, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			cl := serveGuarded(t, c.checker)
			_, err := cl.RenewDomain(callCtx(t, c.md...), c.req)
			wantStatus(t, err, c.code, c.reason)
			if c.name == "missing nested field" && status.Convert(err).Message() != "domain.fqdn: is required" {
				t.Fatalf("message %q, want it to name domain.fqdn", status.Convert(err).Message())
			}
		})
	}
}

func TestUnannotatedMethodIsDenied(t *testing.T) {
	// The guard knows only the domains service: a method of another
	// service that reaches it is denied, never let through.
	g, err := New(Options{Checker: fakeChecker{resp: &sigilv1.CheckPermissionResponse{Allowed: true, TokenId: "t"}}})
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.UnaryInterceptor(g.UnaryServerInterceptor()))
	domainsv1.RegisterDomainServiceServer(srv, echoDomains{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	defer srv.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = domainsv1.NewDomainServiceClient(conn).Ping(callCtx(t, "authorization", "Bearer x"), &domainsv1.PingRequest{})
	wantStatus(t, err, codes.PermissionDenied, ReasonNoRequirement)
}

func TestPublicServices(t *testing.T) {
	g, err := New(Options{Checker: fakeChecker{err: status.Error(codes.Unavailable, "down")}, PublicServices: []string{"sigil.examples.domains.v1.DomainService"}})
	if err != nil {
		t.Fatal(err)
	}
	for method, want := range map[string]bool{
		"/sigil.examples.domains.v1.DomainService/RenewDomain": true,
		"/sigil.examples.domains.v1.DomainServiceX/Renew":      false,
		"/sigil.examples.domains.v1/DomainService":             false,
		"/other.Service/Method":                                false,
	} {
		_, err := g.authorize(context.Background(), method, nil)
		if (err == nil) != want {
			t.Errorf("%s: %v, want public %v", method, err, want)
		}
	}
}

// fakeAuthorizer is a CheckPermission server answering allowed.
type fakeAuthorizer struct {
	sigilv1.UnimplementedAuthorizerServiceServer
	code codes.Code
}

func (f fakeAuthorizer) CheckPermission(context.Context, *sigilv1.CheckPermissionRequest) (*sigilv1.CheckPermissionResponse, error) {
	if f.code != codes.OK {
		return nil, status.Error(f.code, "fake")
	}
	return &sigilv1.CheckPermissionResponse{Allowed: true, TokenId: "t"}, nil
}

func serveAuthorizer(t *testing.T, code codes.Code) string {
	srv := grpc.NewServer()
	sigilv1.RegisterAuthorizerServiceServer(srv, fakeAuthorizer{code: code})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

func TestPool(t *testing.T) {
	up, stale, down := serveAuthorizer(t, codes.OK), serveAuthorizer(t, codes.Unavailable), closedAddr(t)
	for _, c := range []struct {
		name  string
		addrs []string
		want  codes.Code
	}{
		{"one up", []string{up}, codes.OK},
		{"one down, one up: every call succeeds", []string{down, up}, codes.OK},
		{"one stale, one up: every call succeeds", []string{stale, up}, codes.OK},
		{"all down", []string{down, closedAddr(t)}, codes.Unavailable},
		{"down and stale", []string{down, stale}, codes.Unavailable},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := NewPool(PoolOptions{Addrs: c.addrs, CallTimeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			// Every starting point of the round-robin.
			for range 2 * len(c.addrs) {
				resp, err := p.CheckPermission(callCtx(t), &sigilv1.CheckPermissionRequest{Token: "x", Permission: "domain:view"})
				if status.Code(err) != c.want || (err == nil) != resp.GetAllowed() {
					t.Fatalf("CheckPermission = %v, %v; want %v", resp, err, c.want)
				}
			}
		})
	}
	t.Run("refused input is not retried", func(t *testing.T) {
		p, err := NewPool(PoolOptions{Addrs: []string{serveAuthorizer(t, codes.InvalidArgument), up}})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		// A new pool starts with its first authorizer.
		if _, err := p.CheckPermission(callCtx(t), &sigilv1.CheckPermissionRequest{Token: "x"}); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("CheckPermission: %v, want InvalidArgument (not retried)", err)
		}
	})
}
