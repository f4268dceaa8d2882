// Package extauthz implements Envoy's external authorization API
// (envoy.service.auth.v3.Authorization) on the authorizer's decision engine,
// so that an Envoy sidecar checks PATs in front of a product API. Which
// permission a request needs comes from the route policy (package routes).
package extauthz

import (
	"context"
	"log/slog"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/prometheus/client_golang/prometheus"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	extauthzv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/extauthz/v1"
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
	// Policy maps requests to permissions. Required unless Live is set.
	Policy *routes.Policy
	// Live, when set, is used instead of Policy: a policy reloaded on
	// SIGHUP.
	Live *routes.Live
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

// Service is Envoy's Authorization service on an Engine: the decision is
// the Engine's (shared with HTTP forward-auth), this type only turns it
// into Envoy's answer. Register it with ServiceDesc.
//
// Answers:
//   - allowed: OK, x-sigil-token-id and x-sigil-org-id set upstream
//     (overwriting whatever the client sent) and authorization removed;
//   - no route under default: allow: the request goes through with no
//     token check and with authorization and the x-sigil-* headers removed;
//   - every deny (401, 403, 400) with its JSON body (see Verdict);
//   - not synced or stale: the gRPC call fails with UNAVAILABLE, which
//     Envoy (failure_mode_allow: false) turns into a denial.
type Service struct {
	engine *Engine
}

// New returns the Authorization service.
func New(opts Options) *Service {
	return &Service{engine: NewEngine(opts, "extauthz")}
}

// checker is what ServiceDesc serves.
type checker interface {
	Check(context.Context, *extauthzv1.CheckRequest) (*authv3.CheckResponse, error)
}

// ServiceDesc is Envoy's envoy.service.auth.v3.Authorization service (the
// name, method and answer Envoy calls and reads, and what server
// reflection describes) with its Check request decoded as
// extauthzv1.CheckRequest: the fields the decision reads, with Envoy's
// numbers and types, decoded by the standard protobuf decoder, and the
// rest of Envoy's request kept undecoded. Register a Service with it.
var ServiceDesc = grpc.ServiceDesc{
	ServiceName: authv3.Authorization_ServiceDesc.ServiceName,
	HandlerType: (*checker)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Check", Handler: checkHandler}},
	Streams:     []grpc.StreamDesc{},
	Metadata:    authv3.Authorization_ServiceDesc.Metadata,
}

// checkHandler is the generated handler's shape, with the request type
// of ServiceDesc.
func checkHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	in := new(extauthzv1.CheckRequest)
	if err := dec(in); err != nil {
		return nil, err
	}
	if interceptor == nil {
		return srv.(checker).Check(ctx, in)
	}
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: authv3.Authorization_Check_FullMethodName}
	handler := func(ctx context.Context, req any) (any, error) {
		return srv.(checker).Check(ctx, req.(*extauthzv1.CheckRequest))
	}
	return interceptor(ctx, in, info, handler)
}

// Check answers one ext_authz request.
func (s *Service) Check(ctx context.Context, req *extauthzv1.CheckRequest) (*authv3.CheckResponse, error) {
	http := req.GetAttributes().GetRequest().GetHttp()
	v, err := s.engine.Decide(ctx, http.GetMethod(), http.GetPath(), func(name string) string { return headerValue(http, name) })
	if err != nil {
		return nil, err
	}
	switch {
	case v.Allowed:
		return allowed(v.TokenID, v.OrgID), nil
	case v.PassThrough:
		return passThrough(), nil
	}
	return denied(typev3.StatusCode(v.HTTPStatus), v.Code, v.Error, v.Reason, v.WWWAuthenticate), nil
}

// headerValue returns the request header name (lower case), from the
// headers Envoy sends by default or from header_map when Envoy is set to
// send raw headers. In headers, as in the map it is in Envoy's message,
// the last entry of a name counts.
func headerValue(http *extauthzv1.HttpRequest, name string) string {
	headers := http.GetHeaders()
	for i := len(headers) - 1; i >= 0; i-- {
		if headers[i].GetKey() == name {
			return headers[i].GetValue()
		}
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

// allowedResponse is every part of an allowed answer in one allocation
// (instead of eleven): the answer of every request that goes through. Each
// answer has its own, so nothing is shared between calls.
type allowedResponse struct {
	resp    authv3.CheckResponse
	status  rpcstatus.Status
	ok      authv3.CheckResponse_OkResponse
	http    authv3.OkHttpResponse
	headers [2]*corev3.HeaderValueOption
	options [2]corev3.HeaderValueOption
	values  [2]corev3.HeaderValue
	remove  [1]string
}

// allowed lets the request through, naming the token and its organization
// to the product and removing the PAT.
func allowed(tokenID, orgID string) *authv3.CheckResponse {
	a := &allowedResponse{}
	a.values[0].Key, a.values[0].Value = HeaderTokenID, tokenID
	a.values[1].Key, a.values[1].Value = HeaderOrgID, orgID
	for i := range a.options {
		a.options[i].Header = &a.values[i]
		a.options[i].AppendAction = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		a.headers[i] = &a.options[i]
	}
	a.remove[0] = HeaderAuthorization
	a.http.Headers, a.http.HeadersToRemove = a.headers[:], a.remove[:]
	a.ok.OkResponse = &a.http
	a.status.Code = int32(codes.OK)
	a.resp.Status, a.resp.HttpResponse = &a.status, &a.ok
	return &a.resp
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
			Body:    Body(errName, reason),
		}},
	}
}
