// Package server implements sigil.v1.AuthorizerService on top of the
// decision package and the readiness gate, min_revision wait, metrics and
// deny reasons of package check, which it shares with package extauthz.
package server

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/pkg/token"
	"github.com/sigil-auth/sigil/services/authorizer/internal/check"
	"github.com/sigil-auth/sigil/services/authorizer/internal/decision"
)

// MaxChecks bounds the checks of one CheckPermissions call.
const MaxChecks = 100

// Bounds of the request messages, from the field bounds: anything larger
// cannot be a valid request, and is RESOURCE_EXHAUSTED before validation.
const (
	// maxPermissionLen bounds a product:action permission (two names of
	// at most 32 bytes), with room.
	maxPermissionLen = 128
	// fieldOverhead is the protobuf framing of a string field (tag and
	// length), rounded up.
	fieldOverhead = 8
	// MaxCheckPermissionRequestSize bounds a CheckPermission request: a
	// token, an organization id, one permission and resource, min_revision.
	MaxCheckPermissionRequestSize = token.MaxLen + check.MaxOrgIDLen + maxPermissionLen + scope.MaxResourceLen + 4*fieldOverhead + 16
	// MaxCheckPermissionsRequestSize bounds a CheckPermissions request: a
	// token, an organization id, min_revision and MaxChecks checks. It is
	// the largest request of the AuthorizerService.
	MaxCheckPermissionsRequestSize = token.MaxLen + check.MaxOrgIDLen + 2*fieldOverhead + 16 +
		MaxChecks*(maxPermissionLen+scope.MaxResourceLen+3*fieldOverhead)
)

// MethodMaxRecvSize is the per-method receive bound of the service, for
// grpcserver.Options.MethodMaxRecvSize.
func MethodMaxRecvSize() map[string]int {
	return map[string]int{
		sigilv1.AuthorizerService_CheckPermission_FullMethodName:  MaxCheckPermissionRequestSize,
		sigilv1.AuthorizerService_CheckPermissions_FullMethodName: MaxCheckPermissionsRequestSize,
	}
}

// Options configures the service.
type Options struct {
	// Decider decides. Required.
	Decider *decision.Decider
	// Follower tells whether the state is usable. Required.
	Follower check.Follower
	// MaxWait bounds a min_revision wait for a call without a deadline;
	// check.DefaultMaxWait when not positive.
	MaxWait time.Duration
	// Registerer receives the decision metrics. Nil disables them. Ignored
	// when Metrics is set.
	Registerer prometheus.Registerer
	// Metrics, when set, are the decision metrics to use, shared with the
	// other check APIs of the process (ext_authz).
	Metrics *check.Metrics
	// Parking bounds the parked min_revision waits; nil leaves them
	// unbounded (tests).
	Parking *check.Parking
}

// server implements sigilv1.AuthorizerServiceServer.
//
// Where the contract leaves room, it decides so:
//   - an empty token is INVALID_ARGUMENT naming "token" (the field is
//     required); any other token that does not parse, including one over
//     the size cap, is a MALFORMED denial (status OK);
//   - a resource that is not a well-formed collection/id path is
//     INVALID_ARGUMENT naming "resource" (no grant could cover it);
//   - CheckPermissions takes 1 to MaxChecks checks, each validated like
//     CheckPermission's fields and named "checks[i].permission";
//   - a permission that is not in the authority's streamed catalog is
//     INVALID_ARGUMENT naming its field, before the token is looked at
//     (no catalog received yet: not checked);
//   - error messages name the field and never echo a value: a caller may
//     have put a secret in the wrong field;
//   - readiness is checked before and after a min_revision wait; a call
//     without a deadline waits at most MaxWait.
//
// A response is built with allowed false and takes its verdict only from
// decision.Decision.Allowed; a panic becomes INTERNAL in the recovery
// interceptor, never an answer.
type server struct {
	sigilv1.UnimplementedAuthorizerServiceServer
	decider  *decision.Decider
	follower check.Follower
	maxWait  time.Duration
	metrics  *check.Metrics
	parking  *check.Parking
	// catalog returns the authority's permission catalog (nil: not known,
	// no check); nil when the follower does not carry one.
	catalog func() *scope.Catalog
}

// catalogSource is a follower that carries the authority's permission
// catalog (follower.Follower).
type catalogSource interface{ Catalog() *scope.Catalog }

// New returns the AuthorizerService implementation.
func New(opts Options) sigilv1.AuthorizerServiceServer {
	s := &server{decider: opts.Decider, follower: opts.Follower, maxWait: opts.MaxWait, metrics: opts.Metrics, parking: opts.Parking}
	if s.metrics == nil {
		s.metrics = check.NewMetrics(opts.Registerer)
	}
	if c, ok := opts.Follower.(catalogSource); ok {
		s.catalog = c.Catalog
	}
	return s
}

// CheckPermission decides one permission for one token.
func (s *server) CheckPermission(ctx context.Context, req *sigilv1.CheckPermissionRequest) (*sigilv1.CheckPermissionResponse, error) {
	start := time.Now()
	defer s.observe(start)
	fields := []fieldValue{{"permission", req.GetPermission(), "resource", req.GetResource()}}
	if err := validateCheck(req.GetToken(), req.GetOrgId(), fields); err != nil {
		return nil, err
	}
	if err := s.known(fields); err != nil {
		return nil, err
	}
	if err := s.await(ctx, req.GetMinRevision()); err != nil {
		return nil, err
	}
	d := s.decider.Decide(req.GetToken(), req.GetPermission(), req.GetResource(), req.GetOrgId())
	s.metrics.Decided(d.Reason)
	resp := &sigilv1.CheckPermissionResponse{Allowed: false, Reason: check.DenyReason(d.Reason), Revision: d.Revision}
	if d.Claims != nil {
		resp.TokenId = d.Claims.ID.String()
		resp.OrgId = d.Claims.OrgID
		resp.ExpireTime = timestamppb.New(d.Claims.ExpiresAt)
	}
	resp.Allowed = d.Allowed()
	return resp, nil
}

// CheckPermissions decides several permissions for one token, verified once.
func (s *server) CheckPermissions(ctx context.Context, req *sigilv1.CheckPermissionsRequest) (*sigilv1.CheckPermissionsResponse, error) {
	start := time.Now()
	defer s.observe(start)
	checks := req.GetChecks()
	if len(checks) == 0 {
		return nil, invalid("checks", "at least one check is required")
	}
	if len(checks) > MaxChecks {
		return nil, invalid("checks", fmt.Sprintf("at most %d checks per call", MaxChecks))
	}
	fields := make([]fieldValue, len(checks))
	for i, c := range checks {
		fields[i] = fieldValue{
			fmt.Sprintf("checks[%d].permission", i), c.GetPermission(),
			fmt.Sprintf("checks[%d].resource", i), c.GetResource(),
		}
	}
	if err := validateCheck(req.GetToken(), req.GetOrgId(), fields); err != nil {
		return nil, err
	}
	if err := s.known(fields); err != nil {
		return nil, err
	}
	if err := s.await(ctx, req.GetMinRevision()); err != nil {
		return nil, err
	}
	v := s.decider.Authenticate(req.GetToken(), req.GetOrgId())
	resp := &sigilv1.CheckPermissionsResponse{Revision: v.Revision(), Results: make([]*sigilv1.PermissionCheckResult, len(checks))}
	if c := v.Claims(); c != nil {
		resp.TokenId = c.ID.String()
		resp.OrgId = c.OrgID
		resp.ExpireTime = timestamppb.New(c.ExpiresAt)
	}
	for i, c := range checks {
		d := v.Check(c.GetPermission(), c.GetResource())
		s.metrics.Decided(d.Reason)
		r := &sigilv1.PermissionCheckResult{Allowed: false, Reason: check.DenyReason(d.Reason)}
		r.Allowed = d.Allowed()
		resp.Results[i] = r
	}
	return resp, nil
}

func (s *server) observe(start time.Time) { s.metrics.Observe(start) }

// await applies the readiness gate and the min_revision wait.
func (s *server) await(ctx context.Context, minRevision uint64) error {
	return check.Await(ctx, s.follower, minRevision, s.maxWait, s.parking)
}

// fieldValue names a (permission, resource) pair and its fields.
type fieldValue struct {
	permField, perm, resField, res string
}

// validateCheck validates a request's inputs. Messages name the field and
// never echo a value: a caller may have put a secret in the wrong field.
func validateCheck(tok, orgID string, checks []fieldValue) error {
	if tok == "" {
		return invalid("token", "is required")
	}
	if len(orgID) > check.MaxOrgIDLen {
		return invalid("org_id", fmt.Sprintf("at most %d bytes", check.MaxOrgIDLen))
	}
	for _, c := range checks {
		if c.perm == "" {
			return invalid(c.permField, "is required")
		}
		if scope.ValidatePermission(c.perm) != nil {
			return invalid(c.permField, "must be product:action")
		}
		if c.res != "" && scope.ValidateResource(c.res) != nil {
			return invalid(c.resField, "must be a collection/id path")
		}
	}
	return nil
}

// known fails with INVALID_ARGUMENT naming the field of the first
// permission that is not in the authority's catalog. It runs before the
// readiness gate and before the token is parsed, so that a product can
// check its permissions at start-up with any token. Without a catalog (not
// yet received, or an authority that does not stream one) nothing is
// refused here. The permission is echoed: it passed ValidatePermission
// (two short names), so it cannot be a token.
func (s *server) known(checks []fieldValue) error {
	if s.catalog == nil {
		return nil
	}
	c := s.catalog()
	if c == nil {
		return nil
	}
	for _, f := range checks {
		if !c.Has(f.perm) {
			return invalid(f.permField, UnknownPermission(f.perm))
		}
	}
	return nil
}

// UnknownPermission is the description of a permission that is not in the
// authority's catalog.
func UnknownPermission(perm string) string {
	return fmt.Sprintf("unknown permission %q (not in the authority's catalog)", perm)
}

// invalid returns INVALID_ARGUMENT naming field, with a BadRequest detail.
func invalid(field, desc string) error {
	st := status.New(codes.InvalidArgument, field+": "+desc)
	if d, err := st.WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: desc}}}); err == nil {
		st = d
	}
	return st.Err()
}
