package authz

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"

	domainsv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/examples/domains/v1"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

// unknownStatus is the authorizer's answer to a permission outside its
// catalog (services/authorizer/internal/server).
func unknownStatus(field, perm string) error {
	desc := "unknown permission " + strconv.Quote(perm) + " (not in the authority's catalog)"
	st, _ := status.New(codes.InvalidArgument, field+": "+desc).WithDetails(&errdetails.BadRequest{
		FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: desc}}})
	return st.Err()
}

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// An unknown permission refused by the authorizer is INTERNAL for the
// caller (never an allow, never the caller's fault), logged once per
// method with the method and the permission.
func TestUnknownPermissionIsInternal(t *testing.T) {
	logs := &syncBuffer{}
	g, err := New(Options{
		Services: []protoreflect.ServiceDescriptor{domainsv1.File_sigil_examples_domains_v1_domains_proto.Services().ByName("DomainService")},
		Checker:  fakeChecker{err: unknownStatus("permission", "domain:renew")},
		Logger:   slog.New(slog.NewJSONHandler(logs, nil)),
	})
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
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := domainsv1.NewDomainServiceClient(conn)
	for range 3 {
		_, err := c.RenewDomain(callCtx(t, "authorization", "Bearer sigil_pat_x"), &domainsv1.RenewDomainRequest{Domain: &domainsv1.DomainRef{Fqdn: "example.com"}, Years: 1})
		wantStatus(t, err, codes.Internal, ReasonMisconfigured)
		if status.Convert(err).Message() != "authorization misconfigured" {
			t.Fatalf("message %q", status.Convert(err).Message())
		}
	}
	if n := strings.Count(logs.String(), `"level":"ERROR"`); n != 1 ||
		!strings.Contains(logs.String(), `"method":"/sigil.examples.domains.v1.DomainService/RenewDomain"`) || !strings.Contains(logs.String(), `"permission":"domain:renew"`) {
		t.Fatalf("%d ERROR lines, want 1 naming the method and permission:\n%s", n, logs)
	}
	// Another INVALID_ARGUMENT (the token's) is still a token denial.
	c = serveGuarded(t, fakeChecker{err: status.Error(codes.InvalidArgument, "token: is required")})
	_, err = c.RenewDomain(callCtx(t, "authorization", "Bearer sigil_pat_x"), &domainsv1.RenewDomainRequest{Domain: &domainsv1.DomainRef{Fqdn: "example.com"}, Years: 1})
	wantStatus(t, err, codes.Unauthenticated, "DENY_REASON_MALFORMED")
}

// catalogChecker answers CheckPermissions as an authorizer with catalog
// known does, after unavailable UNAVAILABLE answers (not synced yet).
type catalogChecker struct {
	known       map[string]bool
	unavailable int
	calls       int
	tokens      []string
}

func (c *catalogChecker) CheckPermissions(_ context.Context, req *sigilv1.CheckPermissionsRequest) (*sigilv1.CheckPermissionsResponse, error) {
	c.calls++
	c.tokens = append(c.tokens, req.GetToken())
	if c.unavailable > 0 {
		c.unavailable--
		return nil, status.Error(codes.Unavailable, "not synced")
	}
	if len(req.GetChecks()) > maxProbeChecks {
		return nil, status.Error(codes.InvalidArgument, "checks: too many")
	}
	for i, ch := range req.GetChecks() {
		if !c.known[ch.GetPermission()] {
			return nil, unknownStatus("checks["+strconv.Itoa(i)+"].permission", ch.GetPermission())
		}
	}
	return &sigilv1.CheckPermissionsResponse{Results: make([]*sigilv1.PermissionCheckResult, len(req.GetChecks()))}, nil
}

func TestVerifyPermissions(t *testing.T) {
	known := map[string]bool{"domain:view": true, "domain:renew": true}
	var many []string
	for i := range 250 {
		p := "p" + strconv.Itoa(i) + ":x"
		known[p] = true
		many = append(many, p)
	}
	c := &catalogChecker{known: known, unavailable: 2}
	if err := VerifyPermissions(context.Background(), c, append(many, "domain:view", "domain:renew", "domain:view")); err != nil {
		t.Fatalf("all known: %v", err)
	}
	if c.calls != 2+3 || slices.ContainsFunc(c.tokens, func(s string) bool { return s != probeToken }) {
		t.Fatalf("%d calls (want 2 unavailable + 3 batches), tokens %v", c.calls, c.tokens)
	}
	err := VerifyPermissions(context.Background(), c, append(many, "domain:veiw", "domain:view", "zz:typo"))
	var ue *UnknownPermissionsError
	if !errors.As(err, &ue) || !slices.Equal(ue.Permissions, []string{"domain:veiw", "zz:typo"}) {
		t.Fatalf("VerifyPermissions = %v, want domain:veiw and zz:typo unknown", err)
	}
	// No answer before the deadline is an error, never a pass.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := VerifyPermissions(ctx, &catalogChecker{known: known, unavailable: 1 << 30}, []string{"domain:view"}); err == nil || errors.As(err, &ue) {
		t.Fatalf("unavailable: %v", err)
	}
}

func TestGuardVerifyCatalog(t *testing.T) {
	g, err := New(Options{
		Services: []protoreflect.ServiceDescriptor{domainsv1.File_sigil_examples_domains_v1_domains_proto.Services().ByName("DomainService")},
		Checker:  fakeChecker{},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.VerifyCatalog(context.Background(), &catalogChecker{known: map[string]bool{"domain:view": true, "domain:renew": true}}); err != nil {
		t.Fatalf("known: %v", err)
	}
	err = g.VerifyCatalog(context.Background(), &catalogChecker{known: map[string]bool{"domain:view": true}})
	var ue *UnknownPermissionsError
	if !errors.As(err, &ue) || !slices.Equal(ue.Permissions, []string{"domain:renew"}) ||
		!slices.Equal(ue.Methods["domain:renew"], []string{"/sigil.examples.domains.v1.DomainService/RenewDomain"}) ||
		!strings.Contains(err.Error(), `"domain:renew" (required by /sigil.examples.domains.v1.DomainService/RenewDomain)`) {
		t.Fatalf("VerifyCatalog = %v", err)
	}
}
