// Package server implements sigil.v1.AuthorizerService on top of the
// decision and follower packages.
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
	"github.com/sigil-auth/sigil/services/authorizer/internal/decision"
)

// MaxChecks bounds the checks of one CheckPermissions call.
const MaxChecks = 100

// maxOrgIDLen bounds org_id; organization ids are short.
const maxOrgIDLen = 256

// Follower is what the server needs from the revocation follower.
type Follower interface {
	// Ready reports whether checks may be answered (synced and fresh).
	Ready() bool
	// Synced reports whether a first complete snapshot was applied.
	Synced() bool
	// WaitFor blocks until revision rev is applied or ctx is done.
	WaitFor(ctx context.Context, rev uint64) error
	// Revision returns the applied revision.
	Revision() uint64
}

// Options configures the service.
type Options struct {
	// Decider decides. Required.
	Decider *decision.Decider
	// Follower tells whether the state is usable. Required.
	Follower Follower
	// MaxWait bounds a min_revision wait for a call without a deadline.
	MaxWait time.Duration
	// Registerer receives the decision metrics. Nil disables them. Ignored
	// when Metrics is set.
	Registerer prometheus.Registerer
	// Metrics, when set, are the decision metrics to use, shared with the
	// other check APIs of the process (ext_authz).
	Metrics *Metrics
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
	follower Follower
	maxWait  time.Duration
	metrics  *Metrics
}

// New returns the AuthorizerService implementation.
func New(opts Options) sigilv1.AuthorizerServiceServer {
	s := &server{decider: opts.Decider, follower: opts.Follower, maxWait: opts.MaxWait, metrics: opts.Metrics}
	if s.maxWait <= 0 {
		s.maxWait = 5 * time.Second
	}
	if s.metrics == nil {
		s.metrics = NewMetrics(opts.Registerer)
	}
	return s
}

// Metrics are the decision metrics every check API of the authorizer
// updates: decisions by reason and check latency.
type Metrics struct {
	decisions [decision.Allow + 1]prometheus.Counter // by reason
	latency   prometheus.Histogram
}

// NewMetrics makes the decision metrics and registers them on reg (nil: not
// exported).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{}
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sigil_authorizer_decisions_total",
		Help: "Permission decisions, by reason (allowed, or why denied), of every check API (CheckPermission, CheckPermissions, ext_authz Check).",
	}, []string{"reason"})
	// Resolved once, so a check does not look its label up.
	for _, r := range decision.Reasons() {
		m.decisions[r] = vec.WithLabelValues(r.String())
	}
	m.latency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "sigil_authorizer_check_duration_seconds",
		Help:    "Time to answer a CheckPermission, CheckPermissions or ext_authz Check call, from validation to answer, including min_revision waits.",
		Buckets: []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	})
	if reg != nil {
		reg.MustRegister(vec, m.latency)
	}
	return m
}

// Decided counts one decision.
func (m *Metrics) Decided(r decision.Reason) { m.decisions[r].Inc() }

// Observe records the latency of a call that started at start.
func (m *Metrics) Observe(start time.Time) { m.latency.Observe(time.Since(start).Seconds()) }

// Ready returns nil when f is synced and fresh, else the UNAVAILABLE error
// every check API answers (fail closed).
func Ready(f Follower) error {
	if f.Ready() {
		return nil
	}
	if !f.Synced() {
		return status.Error(codes.Unavailable, "authorizer not yet synced with the authority")
	}
	return status.Error(codes.Unavailable, "authorizer has not heard from the authority within --max-staleness")
}

// CheckPermission decides one permission for one token.
func (s *server) CheckPermission(ctx context.Context, req *sigilv1.CheckPermissionRequest) (*sigilv1.CheckPermissionResponse, error) {
	start := time.Now()
	defer s.observe(start)
	if err := validateCheck(req.GetToken(), req.GetOrgId(), []fieldValue{
		{"permission", req.GetPermission(), "resource", req.GetResource()},
	}); err != nil {
		return nil, err
	}
	if err := s.await(ctx, req.GetMinRevision()); err != nil {
		return nil, err
	}
	d := s.decider.Decide(req.GetToken(), req.GetPermission(), req.GetResource(), req.GetOrgId())
	s.metrics.Decided(d.Reason)
	resp := &sigilv1.CheckPermissionResponse{Allowed: false, Reason: denyReason(d.Reason), Revision: d.Revision}
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
		r := &sigilv1.PermissionCheckResult{Allowed: false, Reason: denyReason(d.Reason)}
		r.Allowed = d.Allowed()
		resp.Results[i] = r
	}
	return resp, nil
}

func (s *server) observe(start time.Time) { s.metrics.Observe(start) }

// await fails with UNAVAILABLE unless the state is synced and fresh and, when
// minRevision is set, reaches it before the call's deadline (or MaxWait when
// the call has none).
func (s *server) await(ctx context.Context, minRevision uint64) error {
	if err := s.ready(); err != nil {
		return err
	}
	if minRevision == 0 || s.follower.Revision() >= minRevision {
		return nil
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.maxWait)
		defer cancel()
	}
	if err := s.follower.WaitFor(ctx, minRevision); err != nil {
		return status.Errorf(codes.Unavailable, "min_revision %d not reached before the deadline (applied revision %d)", minRevision, s.follower.Revision())
	}
	// The wait may have outlasted the freshness.
	return s.ready()
}

func (s *server) ready() error { return Ready(s.follower) }

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
	if len(orgID) > maxOrgIDLen {
		return invalid("org_id", fmt.Sprintf("at most %d bytes", maxOrgIDLen))
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

// invalid returns INVALID_ARGUMENT naming field, with a BadRequest detail.
func invalid(field, desc string) error {
	st := status.New(codes.InvalidArgument, field+": "+desc)
	if d, err := st.WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: desc}}}); err == nil {
		st = d
	}
	return st.Err()
}

// denyReason maps a decision reason onto the API's DenyReason.
func denyReason(r decision.Reason) sigilv1.DenyReason {
	switch r {
	case decision.Allow:
		return sigilv1.DenyReason_DENY_REASON_UNSPECIFIED
	case decision.BadSignature:
		return sigilv1.DenyReason_DENY_REASON_BAD_SIGNATURE
	case decision.UnknownKey:
		return sigilv1.DenyReason_DENY_REASON_UNKNOWN_KEY
	case decision.KeyRevoked:
		return sigilv1.DenyReason_DENY_REASON_KEY_REVOKED
	case decision.NotYetValid:
		return sigilv1.DenyReason_DENY_REASON_NOT_YET_VALID
	case decision.Expired:
		return sigilv1.DenyReason_DENY_REASON_EXPIRED
	case decision.Revoked:
		return sigilv1.DenyReason_DENY_REASON_REVOKED
	case decision.OrgMismatch:
		return sigilv1.DenyReason_DENY_REASON_ORG_MISMATCH
	case decision.PermissionNotGranted:
		return sigilv1.DenyReason_DENY_REASON_PERMISSION_NOT_GRANTED
	case decision.ResourceNotGranted:
		return sigilv1.DenyReason_DENY_REASON_RESOURCE_NOT_GRANTED
	default:
		return sigilv1.DenyReason_DENY_REASON_MALFORMED
	}
}

// DenyReason maps a decision reason onto the API's DenyReason, for the other
// check APIs of the process.
func DenyReason(r decision.Reason) sigilv1.DenyReason { return denyReason(r) }

// MaxOrgIDLen bounds an organization id given with a check.
const MaxOrgIDLen = maxOrgIDLen
