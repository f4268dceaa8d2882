package extauthz

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"

	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/services/authorizer/internal/check"
	"github.com/sigil-auth/sigil/services/authorizer/internal/decision"
	"github.com/sigil-auth/sigil/services/authorizer/internal/routes"
)

// Engine is the one decision path of every HTTP-shaped check API of the
// authorizer (Envoy ext_authz, HTTP forward-auth): the readiness gate, the
// route policy, the bearer token, the org header and the decision, with
// per-API metrics. Each API only translates a Verdict into its wire format.
type Engine struct {
	policy   *routes.Live
	decider  *decision.Decider
	follower check.Follower
	metrics  *check.Metrics
	logger   *slog.Logger
	logName  string // the debug line's message

	checks  *prometheus.CounterVec   // route, outcome
	latency *prometheus.HistogramVec // route

	// catalog returns the authority's permission catalog (nil: not known);
	// nil when the follower does not carry one.
	catalog func() *scope.Catalog
}

// outcomeUnknownPermission labels a request whose route names a permission
// that is no longer in the authority's catalog (the authority restarted
// with another catalog): denied with 403 until the routes file is fixed.
const outcomeUnknownPermission = "unknown_permission"

// Verdict is the answer to one HTTP request.
type Verdict struct {
	// Route is the matched route's name, "-" when none matched.
	Route string
	// Outcome is the metric label: a decision reason or one of no_route,
	// invalid_path, missing_token, invalid_org_id, default_allow,
	// unknown_permission.
	Outcome string
	// Allowed: the request goes on, with TokenID and OrgID.
	Allowed bool
	// PassThrough: no route matched under default: allow; the request goes
	// on with no identity (and the product must drop any x-sigil-* header).
	PassThrough bool
	// HTTPStatus is 200 when Allowed or PassThrough, else 400, 401 or 403.
	HTTPStatus int
	// Code is the gRPC code matching HTTPStatus.
	Code codes.Code
	// Error and Reason are the JSON body's fields of a denial.
	Error, Reason string
	// WWWAuthenticate is set on a 401.
	WWWAuthenticate string
	// TokenID and OrgID name the token of an allowed request.
	TokenID, OrgID string
}

// Body returns the small JSON body of a denial. The values are constants
// of this package or enum names, so the body needs no escaping.
func Body(errName, reason string) string {
	return `{"error":"` + errName + `","reason":"` + reason + `"}` + "\n"
}

// NewEngine returns an engine whose metrics are
// sigil_authorizer_<api>_checks_total and
// sigil_authorizer_<api>_check_duration_seconds.
func NewEngine(opts Options, api string) *Engine {
	policy := opts.Live
	if policy == nil {
		policy = routes.Static(opts.Policy)
	}
	e := &Engine{policy: policy, decider: opts.Decider, follower: opts.Follower, metrics: opts.Metrics, logger: opts.Logger, logName: api + " decision"}
	if api == "extauthz" {
		e.logName = "ext_authz decision"
	}
	if e.logger == nil {
		e.logger = slog.New(slog.DiscardHandler)
	}
	if c, ok := opts.Follower.(interface{ Catalog() *scope.Catalog }); ok {
		e.catalog = c.Catalog
	}
	e.checks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sigil_authorizer_" + api + "_checks_total",
		Help: "HTTP checks (" + api + "), by route name (\"-\" when none matched) and outcome (a decision reason, or no_route, invalid_path, missing_token, invalid_org_id, default_allow, unavailable, unknown_permission).",
	}, []string{"route", "outcome"})
	e.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "sigil_authorizer_" + api + "_check_duration_seconds",
		Help:    "Time to answer an HTTP check (" + api + "), by route name.",
		Buckets: []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
	}, []string{"route"})
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(e.checks, e.latency)
	}
	return e
}

// Decide decides on one request: method and path (with its query, ignored)
// as the client sent them, header returning a request header by its lower
// case name. A non-nil error is UNAVAILABLE (not synced, or stale): the
// caller must deny, as CheckPermission fails closed.
func (e *Engine) Decide(ctx context.Context, method, path string, header func(name string) string) (Verdict, error) {
	start := time.Now()
	policy := e.policy.Policy() // one policy for the whole request, even across a reload
	m := policy.Match(method, path)
	v := Verdict{Route: unmatchedRoute}
	if m.Route != nil {
		v.Route = m.Route.Name
	}
	defer func() { e.latency.WithLabelValues(v.Route).Observe(time.Since(start).Seconds()) }()

	// Readiness first, as for CheckPermission: a stale authorizer answers
	// nothing, not even the policy's default.
	if err := check.Ready(e.follower); err != nil {
		e.record(ctx, v.Route, outcomeUnavailable, 0)
		return v, err
	}

	switch m.Outcome {
	case routes.Invalid:
		return e.deny(ctx, v, 400, codes.InvalidArgument, "invalid_request", outcomeInvalidPath, outcomeInvalidPath, ""), nil
	case routes.NoRoute:
		if policy.Default == routes.DefaultAllow {
			v.PassThrough, v.HTTPStatus, v.Code, v.Outcome = true, 200, codes.OK, outcomeDefaultAllow
			e.record(ctx, v.Route, v.Outcome, 200)
			return v, nil
		}
		return e.deny(ctx, v, 403, codes.PermissionDenied, "permission_denied", outcomeNoRoute, outcomeNoRoute, ""), nil
	}
	if e.catalog != nil {
		if c := e.catalog(); c != nil && !c.Has(m.Route.Permission) {
			return e.deny(ctx, v, 403, codes.PermissionDenied, "permission_denied", outcomeUnknownPermission, outcomeUnknownPermission, ""), nil
		}
	}

	tok, ok := bearer(header(HeaderAuthorization))
	if !ok {
		return e.deny(ctx, v, 401, codes.Unauthenticated, "unauthenticated", outcomeMissingToken, outcomeMissingToken, "Bearer"), nil
	}
	var orgID string
	if h := m.Route.OrgHeader; h != "" {
		orgID = header(h)
		if len(orgID) > check.MaxOrgIDLen {
			return e.deny(ctx, v, 400, codes.InvalidArgument, "invalid_request", outcomeInvalidOrg, outcomeInvalidOrg, ""), nil
		}
	}

	// The decision, exactly as CheckPermission makes it.
	d := e.decider.Decide(tok, m.Route.Permission, m.Resource, orgID)
	e.metrics.Decided(d.Reason)
	e.metrics.Observe(start)
	reason := check.DenyReason(d.Reason).String()
	if d.Allowed() && d.Claims != nil {
		v.Allowed, v.HTTPStatus, v.Code, v.Outcome = true, 200, codes.OK, d.Reason.String()
		v.TokenID, v.OrgID = d.Claims.ID.String(), d.Claims.OrgID
		e.record(ctx, v.Route, v.Outcome, 200)
		return v, nil
	}
	switch d.Reason {
	case decision.OrgMismatch, decision.PermissionNotGranted, decision.ResourceNotGranted:
		return e.deny(ctx, v, 403, codes.PermissionDenied, "permission_denied", reason, d.Reason.String(), ""), nil
	default:
		// Every other reason says the token itself is not good.
		return e.deny(ctx, v, 401, codes.Unauthenticated, "invalid_token", reason, d.Reason.String(), `Bearer error="invalid_token"`), nil
	}
}

func (e *Engine) deny(ctx context.Context, v Verdict, httpStatus int, code codes.Code, errName, reason, outcome, www string) Verdict {
	v.HTTPStatus, v.Code, v.Error, v.Reason, v.Outcome, v.WWWAuthenticate = httpStatus, code, errName, reason, outcome, www
	e.record(ctx, v.Route, outcome, httpStatus)
	return v
}

// record counts and logs one outcome. The log line names the route and the
// outcome, never the token, the path or any header.
func (e *Engine) record(ctx context.Context, route, outcome string, httpStatus int) {
	e.checks.WithLabelValues(route, outcome).Inc()
	e.logger.DebugContext(ctx, e.logName, "route", route, "outcome", outcome, "http_status", httpStatus)
}
