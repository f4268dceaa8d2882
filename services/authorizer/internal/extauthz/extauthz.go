// Package extauthz implements Envoy's external authorization API
// (envoy.service.auth.v3.Authorization) on the authorizer's decision engine,
// so that an Envoy sidecar checks PATs in front of a product API. Which
// permission a request needs comes from the route policy (package routes).
package extauthz

import (
	"context"
	"log/slog"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/prometheus/client_golang/prometheus"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"

	"github.com/sigil-auth/sigil/pkg/token"
	"github.com/sigil-auth/sigil/services/authorizer/internal/check"
	"github.com/sigil-auth/sigil/services/authorizer/internal/decision"
	"github.com/sigil-auth/sigil/services/authorizer/internal/routes"
)

// MaxCheckRequestSize bounds an Envoy CheckRequest: Envoy's request headers
// are at most 60 KiB by default (max_request_headers_kb), plus the request
// attributes; the example Envoy configuration sends no request body.
const MaxCheckRequestSize = 96 << 10

// Header names exchanged with Envoy (lower case, as Envoy passes them).
const (
	HeaderAuthorization = "authorization"
	HeaderTokenID       = "x-sigil-token-id"
	HeaderOrgID         = "x-sigil-org-id"
)

// Outcomes that are not a decision reason, as metric labels and body reasons.
const (
	outcomeNoRoute      = "no_route"
	outcomeInvalidPath  = "invalid_path"
	outcomeMissingToken = "missing_token"
	outcomeInvalidOrg   = "invalid_org_id"
	outcomeDefaultAllow = "default_allow"
	outcomeUnavailable  = "unavailable"
)

// unmatchedRoute labels requests that matched no route.
const unmatchedRoute = "-"

// Options configures the service.
type Options struct {
	// Policy maps requests to permissions. Required.
	Policy *routes.Policy
	// Decider decides, as for CheckPermission. Required.
	Decider *decision.Decider
	// Follower tells whether the state is usable. Required.
	Follower check.Follower
	// Metrics are the decision metrics shared with CheckPermission. Required.
	Metrics *check.Metrics
	// Registerer receives the per-route metrics. Nil disables them.
	Registerer prometheus.Registerer
	// Logger receives one debug line per decision. Nil discards.
	Logger *slog.Logger
}

// service implements authv3.AuthorizationServer.
//
// Answers:
//   - allowed: OK, x-sigil-token-id and x-sigil-org-id set upstream
//     (overwriting whatever the client sent) and authorization removed;
//   - no token, or a token that does not verify or is revoked or expired:
//     401 with WWW-Authenticate: Bearer;
//   - a valid token without the permission or resource, or of another
//     organization than the route's org header names: 403;
//   - no route: 403 "no_route", unless the policy says default: allow, in
//     which case the request goes through with no token check and with
//     authorization and the x-sigil-* headers removed;
//   - malformed path or capture (routes.Invalid), or an over-long org id: 400;
//   - not synced or stale: the gRPC call fails with UNAVAILABLE, which
//     Envoy (failure_mode_allow: false) turns into a denial.
//
// Every deny has a JSON body {"error": ..., "reason": ...}. The token is
// never logged, and nothing from the request is echoed in a body.
type service struct {
	authv3.UnimplementedAuthorizationServer
	policy   *routes.Policy
	decider  *decision.Decider
	follower check.Follower
	metrics  *check.Metrics
	logger   *slog.Logger

	checks  *prometheus.CounterVec   // route, outcome
	latency *prometheus.HistogramVec // route
}

// New returns the Authorization service.
func New(opts Options) authv3.AuthorizationServer {
	s := &service{policy: opts.Policy, decider: opts.Decider, follower: opts.Follower, metrics: opts.Metrics, logger: opts.Logger}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	s.checks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sigil_authorizer_extauthz_checks_total",
		Help: "Envoy ext_authz checks, by route name (\"-\" when none matched) and outcome (a decision reason, or no_route, invalid_path, missing_token, invalid_org_id, default_allow, unavailable).",
	}, []string{"route", "outcome"})
	s.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "sigil_authorizer_extauthz_check_duration_seconds",
		Help:    "Time to answer an Envoy ext_authz check, by route name.",
		Buckets: []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
	}, []string{"route"})
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(s.checks, s.latency)
	}
	return s
}

// Check answers one ext_authz request.
func (s *service) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	start := time.Now()
	http := req.GetAttributes().GetRequest().GetHttp()
	m := s.policy.Match(http.GetMethod(), http.GetPath())
	routeName := unmatchedRoute
	if m.Route != nil {
		routeName = m.Route.Name
	}
	defer func() { s.latency.WithLabelValues(routeName).Observe(time.Since(start).Seconds()) }()

	// Readiness first, as for CheckPermission: a stale authorizer answers
	// nothing, not even the policy's default.
	if err := check.Ready(s.follower); err != nil {
		s.record(ctx, routeName, outcomeUnavailable, 0)
		return nil, err
	}

	switch m.Outcome {
	case routes.Invalid:
		s.record(ctx, routeName, outcomeInvalidPath, 400)
		return denied(typev3.StatusCode_BadRequest, codes.InvalidArgument, "invalid_request", outcomeInvalidPath, ""), nil
	case routes.NoRoute:
		if s.policy.Default == routes.DefaultAllow {
			s.record(ctx, routeName, outcomeDefaultAllow, 200)
			return passThrough(), nil
		}
		s.record(ctx, routeName, outcomeNoRoute, 403)
		return denied(typev3.StatusCode_Forbidden, codes.PermissionDenied, "permission_denied", outcomeNoRoute, ""), nil
	}

	tok, ok := bearer(headerValue(http, HeaderAuthorization))
	if !ok {
		s.record(ctx, routeName, outcomeMissingToken, 401)
		return denied(typev3.StatusCode_Unauthorized, codes.Unauthenticated, "unauthenticated", outcomeMissingToken, "Bearer"), nil
	}
	var orgID string
	if h := m.Route.OrgHeader; h != "" {
		orgID = headerValue(http, h)
		if len(orgID) > check.MaxOrgIDLen {
			s.record(ctx, routeName, outcomeInvalidOrg, 400)
			return denied(typev3.StatusCode_BadRequest, codes.InvalidArgument, "invalid_request", outcomeInvalidOrg, ""), nil
		}
	}

	// The decision, exactly as CheckPermission makes it.
	d := s.decider.Decide(tok, m.Route.Permission, m.Resource, orgID)
	s.metrics.Decided(d.Reason)
	s.metrics.Observe(start)
	reason := check.DenyReason(d.Reason).String()
	if d.Allowed() && d.Claims != nil {
		s.record(ctx, routeName, d.Reason.String(), 200)
		return allowed(d.Claims), nil
	}
	switch d.Reason {
	case decision.OrgMismatch, decision.PermissionNotGranted, decision.ResourceNotGranted:
		s.record(ctx, routeName, d.Reason.String(), 403)
		return denied(typev3.StatusCode_Forbidden, codes.PermissionDenied, "permission_denied", reason, ""), nil
	default:
		// Every other reason says the token itself is not good.
		s.record(ctx, routeName, d.Reason.String(), 401)
		return denied(typev3.StatusCode_Unauthorized, codes.Unauthenticated, "invalid_token", reason, `Bearer error="invalid_token"`), nil
	}
}

// record counts and logs one outcome. The log line names the route and the
// outcome, never the token, the path or any header.
func (s *service) record(ctx context.Context, route, outcome string, httpStatus int) {
	s.checks.WithLabelValues(route, outcome).Inc()
	s.logger.DebugContext(ctx, "ext_authz decision", "route", route, "outcome", outcome, "http_status", httpStatus)
}

// headerValue returns the request header name (lower case), from the
// headers map Envoy fills by default or from header_map when Envoy is set to
// send raw headers.
func headerValue(http *authv3.AttributeContext_HttpRequest, name string) string {
	if v, ok := http.GetHeaders()[name]; ok {
		return v
	}
	for _, h := range http.GetHeaderMap().GetHeaders() {
		if strings.EqualFold(h.GetKey(), name) {
			if v := h.GetValue(); v != "" {
				return v
			}
			return string(h.GetRawValue())
		}
	}
	return ""
}

// bearer extracts the credential of "Bearer <token>" (scheme case-insensitive).
func bearer(v string) (string, bool) {
	const scheme = "bearer "
	if len(v) <= len(scheme) || !strings.EqualFold(v[:len(scheme)], scheme) {
		return "", false
	}
	tok := strings.TrimSpace(v[len(scheme):])
	if tok == "" {
		return "", false
	}
	if len(tok) > token.MaxLen {
		// Passed on: the decision engine reports it as MALFORMED.
		return tok[:token.MaxLen+1], true
	}
	return tok, true
}

func overwrite(key, value string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: key, Value: value},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

// allowed lets the request through, naming the token and its organization
// to the product and removing the PAT.
func allowed(c *token.Claims) *authv3.CheckResponse {
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(codes.OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers:         []*corev3.HeaderValueOption{overwrite(HeaderTokenID, c.ID.String()), overwrite(HeaderOrgID, c.OrgID)},
			HeadersToRemove: []string{HeaderAuthorization},
		}},
	}
}

// passThrough lets an unmatched request through under default: allow; the
// product must not believe any x-sigil-* header a client sent.
func passThrough() *authv3.CheckResponse {
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(codes.OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			HeadersToRemove: []string{HeaderAuthorization, HeaderTokenID, HeaderOrgID},
		}},
	}
}

// denied builds a denial with a small JSON body. The values are constants
// of this package or enum names, so the body needs no escaping.
func denied(httpStatus typev3.StatusCode, code codes.Code, errName, reason, wwwAuthenticate string) *authv3.CheckResponse {
	headers := []*corev3.HeaderValueOption{overwrite("content-type", "application/json")}
	if wwwAuthenticate != "" {
		headers = append(headers, overwrite("www-authenticate", wwwAuthenticate))
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code), Message: reason},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: httpStatus},
			Headers: headers,
			Body:    `{"error":"` + errName + `","reason":"` + reason + `"}` + "\n",
		}},
	}
}
