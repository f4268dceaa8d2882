package extauthz

import (
	"context"
	"log/slog"
	"sync/atomic"
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
	// unmatched and stats hold the metric children of requests that
	// matched no route and of the routes of the last policy used, resolved
	// once rather than looked up by label on every request.
	unmatched *routeStats
	stats     atomic.Pointer[policyStats]

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
	e.unmatched = &routeStats{name: unmatchedRoute}
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
	rs := e.unmatched
	if m.Route != nil {
		v.Route = m.Route.Name
		rs = e.statsOf(policy, m.Route)
	}
	defer e.observe(rs, start)

	// Readiness first, as for CheckPermission: a stale authorizer answers
	// nothing, not even the policy's default.
	if err := check.Ready(e.follower); err != nil {
		e.record(ctx, rs, slotUnavailable, outcomeUnavailable, 0)
		return v, err
	}

	switch m.Outcome {
	case routes.Invalid:
		return e.deny(ctx, rs, v, 400, codes.InvalidArgument, "invalid_request", outcomeInvalidPath, slotInvalidPath, outcomeInvalidPath, ""), nil
	case routes.NoRoute:
		if policy.Default == routes.DefaultAllow {
			v.PassThrough, v.HTTPStatus, v.Code, v.Outcome = true, 200, codes.OK, outcomeDefaultAllow
			e.record(ctx, rs, slotDefaultAllow, v.Outcome, 200)
			return v, nil
		}
		return e.deny(ctx, rs, v, 403, codes.PermissionDenied, "permission_denied", outcomeNoRoute, slotNoRoute, outcomeNoRoute, ""), nil
	}
	if e.catalog != nil {
		if c := e.catalog(); c != nil && !c.Has(m.Route.Permission) {
			return e.deny(ctx, rs, v, 403, codes.PermissionDenied, "permission_denied", outcomeUnknownPermission, slotUnknownPermission, outcomeUnknownPermission, ""), nil
		}
	}

	tok, ok := bearer(header(HeaderAuthorization))
	if !ok {
		return e.deny(ctx, rs, v, 401, codes.Unauthenticated, "unauthenticated", outcomeMissingToken, slotMissingToken, outcomeMissingToken, "Bearer"), nil
	}
	var orgID string
	if h := m.Route.OrgHeader; h != "" {
		orgID = header(h)
		if len(orgID) > check.MaxOrgIDLen {
			return e.deny(ctx, rs, v, 400, codes.InvalidArgument, "invalid_request", outcomeInvalidOrg, slotInvalidOrg, outcomeInvalidOrg, ""), nil
		}
	}

	// The decision, exactly as CheckPermission makes it.
	d := e.decider.Decide(tok, m.Route.Permission, m.Resource, orgID)
	e.metrics.Decided(d.Reason)
	e.metrics.Observe(start)
	if d.Allowed() && d.Claims != nil {
		v.Allowed, v.HTTPStatus, v.Code, v.Outcome = true, 200, codes.OK, d.Reason.String()
		v.TokenID, v.OrgID = d.Claims.ID.String(), d.Claims.OrgID
		e.record(ctx, rs, reasonSlot(d.Reason), v.Outcome, 200)
		return v, nil
	}
	reason := check.DenyReason(d.Reason).String()
	switch d.Reason {
	case decision.OrgMismatch, decision.PermissionNotGranted, decision.ResourceNotGranted:
		return e.deny(ctx, rs, v, 403, codes.PermissionDenied, "permission_denied", reason, reasonSlot(d.Reason), d.Reason.String(), ""), nil
	default:
		// Every other reason says the token itself is not good.
		return e.deny(ctx, rs, v, 401, codes.Unauthenticated, "invalid_token", reason, reasonSlot(d.Reason), d.Reason.String(), `Bearer error="invalid_token"`), nil
	}
}

func (e *Engine) deny(ctx context.Context, rs *routeStats, v Verdict, httpStatus int, code codes.Code, errName, reason string, slot int, outcome, www string) Verdict {
	v.HTTPStatus, v.Code, v.Error, v.Reason, v.Outcome, v.WWWAuthenticate = httpStatus, code, errName, reason, outcome, www
	e.record(ctx, rs, slot, outcome, httpStatus)
	return v
}

// record counts and logs one outcome (slot is its counter's place, see
// reasonSlot). The log line names the route and the outcome, never the
// token, the path or any header; its arguments are only built when debug
// is on, so that a decision costs no allocation for a line nobody logs.
func (e *Engine) record(ctx context.Context, rs *routeStats, slot int, outcome string, httpStatus int) {
	rs.counter(e.checks, slot, outcome).Inc()
	if e.logger.Enabled(ctx, slog.LevelDebug) {
		e.logger.DebugContext(ctx, e.logName, "route", rs.name, "outcome", outcome, "http_status", httpStatus)
	}
}

// observe records the latency of a request that started at start.
func (e *Engine) observe(rs *routeStats, start time.Time) {
	rs.observer(e.latency).Observe(time.Since(start).Seconds())
}

// Counter slots of an outcome within a route's routeStats: one per
// decision reason (the reason's value), then the outcomes that are not a
// decision.
const (
	slotNoRoute = int(decision.Allow) + 1 + iota
	slotInvalidPath
	slotMissingToken
	slotInvalidOrg
	slotDefaultAllow
	slotUnavailable
	slotUnknownPermission
	numSlots
)

// reasonSlot returns the counter slot of a decision reason, or -1 (no
// cached counter: looked up by label) for a reason out of range.
func reasonSlot(r decision.Reason) int {
	if r < 0 || r > decision.Allow {
		return -1
	}
	return int(r)
}

// policyStats are the metric children of one policy's routes, by
// Route.Index. The children themselves belong to the vectors: a reloaded
// policy gets new policyStats that resolve to the same series by name.
type policyStats struct {
	policy *routes.Policy
	routes []routeStats
}

// routeStats caches one route's metric children. Each is resolved on the
// route's first request needing it, so that a series appears exactly when
// it did with a label lookup per request: a route nobody called exports
// nothing.
type routeStats struct {
	name     string
	latency  atomic.Pointer[observerRef]
	outcomes [numSlots]atomic.Pointer[counterRef]
}

// observerRef and counterRef box a metric child for an atomic.Pointer.
type (
	observerRef struct{ prometheus.Observer }
	counterRef  struct{ prometheus.Counter }
)

// statsOf returns the metric children of route r of policy p, building
// the table when p is not the policy of the last request (a reload).
func (e *Engine) statsOf(p *routes.Policy, r *routes.Route) *routeStats {
	ps := e.stats.Load()
	if ps == nil || ps.policy != p {
		ps = &policyStats{policy: p, routes: make([]routeStats, len(p.Routes))}
		for i, pr := range p.Routes {
			ps.routes[i].name = pr.Name
		}
		e.stats.Store(ps)
	}
	if r.Index < 0 || r.Index >= len(ps.routes) || p.Routes[r.Index] != r {
		// Not a route of p as parsed: no cache, correct all the same.
		return &routeStats{name: r.Name}
	}
	return &ps.routes[r.Index]
}

// observer returns the route's latency histogram child.
func (rs *routeStats) observer(vec *prometheus.HistogramVec) prometheus.Observer {
	if o := rs.latency.Load(); o != nil {
		return o.Observer
	}
	o := &observerRef{vec.WithLabelValues(rs.name)}
	rs.latency.Store(o)
	return o.Observer
}

// counter returns the route's counter child of outcome, cached in slot
// (-1: not cached).
func (rs *routeStats) counter(vec *prometheus.CounterVec, slot int, outcome string) prometheus.Counter {
	if slot < 0 || slot >= numSlots {
		return vec.WithLabelValues(rs.name, outcome)
	}
	if c := rs.outcomes[slot].Load(); c != nil {
		return c.Counter
	}
	c := &counterRef{vec.WithLabelValues(rs.name, outcome)}
	rs.outcomes[slot].Store(c)
	return c.Counter
}
