// Package authz guards a product's gRPC services with Sigil PATs. Each
// method declares what it needs in its proto options:
//
//	rpc RenewDomain(RenewDomainRequest) returns (RenewDomainResponse) {
//	  option (sigil.v1.requires) = {permission: "domain:renew", resource: "domains/{domain.fqdn}"};
//	}
//	rpc Ping(PingRequest) returns (PingResponse) {
//	  option (sigil.v1.public) = true;
//	}
//
// New reads those options from the services' descriptors at start-up (a
// permission the catalog does not know, or a resource template naming a
// missing or repeated field, is an error then), and the interceptors it
// returns check every call with an authorizer's CheckPermission:
//
//   - the token is the "authorization: Bearer <PAT>" metadata;
//   - a method with no annotation is a configuration error: it is denied
//     (PERMISSION_DENIED) and logged once; a public method is let through
//     without a token;
//   - the resource is rendered from the request (a missing or empty field
//     is INVALID_ARGUMENT naming the field);
//   - a deny is UNAUTHENTICATED when the token itself is not good (missing,
//     malformed, forged, unknown or revoked key, not yet valid, expired,
//     revoked) and PERMISSION_DENIED when it lacks the permission or
//     resource or belongs to another organization; either carries a
//     google.rpc.ErrorInfo with domain "sigil" and the DenyReason name;
//   - an authorizer that cannot answer makes the call UNAVAILABLE: an error
//     is never an allow;
//   - a permission the authority's catalog does not have (the authorizer
//     answers INVALID_ARGUMENT naming "permission") makes the call INTERNAL
//     with reason AUTHORIZATION_MISCONFIGURED, logged at ERROR once per
//     method; Guard.VerifyCatalog finds such permissions at start-up;
//   - an allowed call reaches the handler with TokenID(ctx) and OrgID(ctx).
package authz

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/pkg/scope"
)

// ErrorDomain is the domain of the google.rpc.ErrorInfo of a denial.
const ErrorDomain = "sigil"

// DefaultMinRevisionKey is the metadata key read for min_revision.
const DefaultMinRevisionKey = "x-sigil-min-revision"

// Reasons of denials that are not an authorizer's DenyReason.
const (
	// ReasonMissingToken: no "authorization: Bearer" metadata.
	ReasonMissingToken = "MISSING_TOKEN"
	// ReasonNoRequirement: the method declares neither a requirement nor
	// public (a configuration error of the product).
	ReasonNoRequirement = "NO_REQUIREMENT"
)

// maxOrgIDLen bounds the organization id read from metadata, as the
// authorizer does.
const maxOrgIDLen = 256

// Options configures New.
type Options struct {
	// Services are the guarded services' descriptors (from the generated
	// File_..._proto variables). Every method of them must be valid; a
	// method of another service is denied as not annotated.
	Services []protoreflect.ServiceDescriptor
	// PublicServices are full service names (e.g. "grpc.health.v1.Health")
	// whose every method passes with no token: services the product did
	// not write and cannot annotate. StandardPublicServices lists gRPC
	// reflection and health.
	PublicServices []string
	// Checker answers CheckPermission, usually a *Pool. Required.
	Checker Checker
	// Catalog is the permission catalog the annotations are checked
	// against; scope.Builtin() when nil.
	Catalog *scope.Catalog
	// OrgIDKey, when set, is the metadata key holding the organization the
	// call acts in; the token must belong to it. When unset, or absent
	// from a call, any organization's token passes and the handler acts
	// in OrgID(ctx).
	OrgIDKey string
	// MinRevisionKey is the metadata key holding a min_revision (the
	// revision a RevokeToken returned), for read-after-revoke;
	// DefaultMinRevisionKey when empty.
	MinRevisionKey string
	// Logger receives configuration errors (once per method). Nil
	// discards.
	Logger *slog.Logger
}

// StandardPublicServices are gRPC server reflection (which shows every
// method's requirement) and health.
var StandardPublicServices = []string{
	"grpc.reflection.v1.ServerReflection",
	"grpc.reflection.v1alpha.ServerReflection",
	"grpc.health.v1.Health",
}

// Guard holds the requirements and checks calls.
type Guard struct {
	reqs    map[string]Requirement
	public  map[string]bool // service names
	checker Checker
	orgKey  string
	revKey  string
	logger  *slog.Logger
	warned  sync.Map // method → struct{}: unannotated methods already logged

	misconfiguredLogged sync.Map // method → struct{}: unknown-permission errors already logged
}

// New reads and checks the requirements of every method of opts.Services.
func New(opts Options) (*Guard, error) {
	if opts.Checker == nil {
		return nil, errors.New("authz: Checker is required")
	}
	g := &Guard{reqs: map[string]Requirement{}, public: map[string]bool{}, checker: opts.Checker, orgKey: strings.ToLower(opts.OrgIDKey),
		revKey: strings.ToLower(opts.MinRevisionKey), logger: opts.Logger}
	if g.revKey == "" {
		g.revKey = DefaultMinRevisionKey
	}
	if g.logger == nil {
		g.logger = slog.New(slog.DiscardHandler)
	}
	for _, name := range opts.PublicServices {
		g.public[name] = true
	}
	var errs []error
	for _, sd := range opts.Services {
		reqs, err := Requirements(sd, opts.Catalog)
		if err != nil {
			errs = append(errs, err)
		}
		for _, r := range reqs {
			g.reqs[r.Method] = r
			if !r.Public && r.Permission == "" {
				g.logger.Warn("method has no (sigil.v1.requires) or (sigil.v1.public): every call is denied", "method", r.Method)
				g.warned.Store(r.Method, struct{}{})
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("authz: %w", err)
	}
	return g, nil
}

// Requirement returns the requirement of a full method name.
func (g *Guard) Requirement(method string) (Requirement, bool) {
	r, ok := g.reqs[method]
	return r, ok
}

type ctxKey struct{}

type identity struct{ tokenID, orgID string }

// TokenID returns the id of the PAT an allowed call was made with ("" for a
// public method).
func TokenID(ctx context.Context) string {
	id, _ := ctx.Value(ctxKey{}).(identity)
	return id.tokenID
}

// OrgID returns the organization of the PAT an allowed call was made with
// ("" for a public method). The handler acts in this organization.
func OrgID(ctx context.Context) string {
	id, _ := ctx.Value(ctxKey{}).(identity)
	return id.orgID
}

type reqKey struct{}

// UnaryServerInterceptor checks every unary call.
func (g *Guard) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	inner := auth.UnaryServerInterceptor(g.authFunc)
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		// auth.AuthFunc sees only the context: the request rides in it, so
		// that the resource can be rendered from it.
		return inner(context.WithValue(ctx, reqKey{}, req), req, info, handler)
	}
}

// StreamServerInterceptor checks every streaming call. A method whose
// resource comes from the request is checked on the first message the
// handler receives (the call fails there when denied); others before the
// handler runs.
func (g *Guard) StreamServerInterceptor() grpc.StreamServerInterceptor {
	inner := auth.StreamServerInterceptor(g.authFunc)
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		r, ok := g.reqs[info.FullMethod]
		if !ok || r.tmpl == nil || r.Public {
			return inner(srv, ss, info, handler)
		}
		return handler(srv, &firstMessageStream{ServerStream: ss, g: g, method: info.FullMethod})
	}
}

// firstMessageStream checks the call on its first received message.
type firstMessageStream struct {
	grpc.ServerStream
	g      *Guard
	method string
	ctx    context.Context
	err    error
}

func (s *firstMessageStream) Context() context.Context {
	if s.ctx != nil {
		return s.ctx
	}
	return s.ServerStream.Context()
}

func (s *firstMessageStream) RecvMsg(m any) error {
	if s.err != nil {
		return s.err
	}
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if s.ctx == nil {
		ctx, err := s.g.authorize(s.ServerStream.Context(), s.method, m)
		if err != nil {
			s.err = err
			return err
		}
		s.ctx = ctx
	}
	return nil
}

// authFunc is the auth.AuthFunc of both interceptors.
func (g *Guard) authFunc(ctx context.Context) (context.Context, error) {
	method, _ := grpc.Method(ctx)
	return g.authorize(ctx, method, ctx.Value(reqKey{}))
}

// authorize checks one call of method with request req (nil for a stream
// whose requirement needs no field).
func (g *Guard) authorize(ctx context.Context, method string, req any) (context.Context, error) {
	r, ok := g.reqs[method]
	if (ok && r.Public) || g.public[serviceOf(method)] {
		return ctx, nil
	}
	if !ok || r.Permission == "" {
		if _, logged := g.warned.LoadOrStore(method, struct{}{}); !logged {
			g.logger.Warn("method has no (sigil.v1.requires) or (sigil.v1.public): every call is denied", "method", method)
		}
		return nil, deny(codes.PermissionDenied, ReasonNoRequirement, "method has no permission requirement")
	}
	tok, err := auth.AuthFromMD(ctx, "bearer")
	if err != nil || tok == "" {
		return nil, deny(codes.Unauthenticated, ReasonMissingToken, "authorization: Bearer token is required")
	}
	check := &sigilv1.CheckPermissionRequest{Token: tok, Permission: r.Permission}
	if r.tmpl != nil {
		m, ok := req.(proto.Message)
		if !ok {
			return nil, status.Error(codes.Internal, "request is not a protobuf message")
		}
		res, err := r.tmpl.Fill(m.ProtoReflect())
		if err != nil {
			var fe *FieldError
			if errors.As(err, &fe) {
				return nil, invalid(fe.Field, fe.Rule)
			}
			return nil, invalid("resource", "cannot be rendered")
		}
		check.Resource = res
	}
	md, _ := metadata.FromIncomingContext(ctx)
	if g.orgKey != "" {
		if v := md.Get(g.orgKey); len(v) > 0 {
			if len(v[0]) > maxOrgIDLen {
				return nil, invalid(g.orgKey, fmt.Sprintf("at most %d bytes", maxOrgIDLen))
			}
			check.OrgId = v[0]
		}
	}
	if v := md.Get(g.revKey); len(v) > 0 {
		rev, err := strconv.ParseUint(v[0], 10, 64)
		if err != nil {
			return nil, invalid(g.revKey, "must be a decimal revision")
		}
		check.MinRevision = rev
	}
	resp, err := g.checker.CheckPermission(ctx, check)
	if err != nil {
		if status.Code(err) == codes.InvalidArgument && violationField(err) == "permission" {
			return nil, g.misconfigured(method, r.Permission, err)
		}
		return nil, authorizerError(err)
	}
	if resp.GetAllowed() && resp.GetReason() == sigilv1.DenyReason_DENY_REASON_UNSPECIFIED && resp.GetTokenId() != "" {
		return context.WithValue(ctx, ctxKey{}, identity{tokenID: resp.GetTokenId(), orgID: resp.GetOrgId()}), nil
	}
	return nil, denial(resp.GetReason())
}

// serviceOf returns the service of a full method name "/svc/Method".
func serviceOf(method string) string {
	method = strings.TrimPrefix(method, "/")
	if i := strings.LastIndexByte(method, '/'); i >= 0 {
		return method[:i]
	}
	return ""
}

// Code maps a DenyReason onto the status code of a denial: the token
// itself is not good → UNAUTHENTICATED; a good token without the right →
// PERMISSION_DENIED. An unknown reason (or "allowed: false" with no reason)
// is PERMISSION_DENIED.
func Code(r sigilv1.DenyReason) codes.Code {
	switch r {
	case sigilv1.DenyReason_DENY_REASON_MALFORMED, sigilv1.DenyReason_DENY_REASON_BAD_SIGNATURE,
		sigilv1.DenyReason_DENY_REASON_UNKNOWN_KEY, sigilv1.DenyReason_DENY_REASON_KEY_REVOKED,
		sigilv1.DenyReason_DENY_REASON_NOT_YET_VALID, sigilv1.DenyReason_DENY_REASON_EXPIRED,
		sigilv1.DenyReason_DENY_REASON_REVOKED:
		return codes.Unauthenticated
	default:
		return codes.PermissionDenied
	}
}

func denial(r sigilv1.DenyReason) error {
	name := r.String()
	if _, known := sigilv1.DenyReason_name[int32(r)]; !known || r == sigilv1.DenyReason_DENY_REASON_UNSPECIFIED {
		name = sigilv1.DenyReason_DENY_REASON_UNSPECIFIED.String()
	}
	msg := "permission denied"
	if Code(r) == codes.Unauthenticated {
		msg = "token not accepted"
	}
	return deny(Code(r), name, msg)
}

// authorizerError turns an authorizer's failure into the call's error. A
// token the authorizer refuses as input (INVALID_ARGUMENT: too long, say)
// is not a good token; everything else means no answer: UNAVAILABLE.
func authorizerError(err error) error {
	switch status.Code(err) {
	case codes.InvalidArgument:
		return deny(codes.Unauthenticated, sigilv1.DenyReason_DENY_REASON_MALFORMED.String(), "token not accepted")
	case codes.Canceled:
		return status.Error(codes.Canceled, "call canceled")
	default:
		return status.Error(codes.Unavailable, "no authorizer could check the call")
	}
}

// deny returns a status carrying a google.rpc.ErrorInfo.
func deny(code codes.Code, reason, msg string) error {
	st := status.New(code, msg)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain}); err == nil {
		st = d
	}
	return st.Err()
}

// invalid returns INVALID_ARGUMENT naming field, with a BadRequest detail.
func invalid(field, rule string) error {
	st := status.New(codes.InvalidArgument, field+": "+rule)
	if d, err := st.WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: rule}}}); err == nil {
		st = d
	}
	return st.Err()
}

// Reason returns the ErrorInfo reason of a denial made by this package, or
// "" when err carries none.
func Reason(err error) string {
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.GetDomain() == ErrorDomain {
			return ei.GetReason()
		}
	}
	return ""
}
