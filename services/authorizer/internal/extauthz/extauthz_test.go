package extauthz

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sigil-auth/sigil/internal/testproc"
	"github.com/sigil-auth/sigil/pkg/grpcserver"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/pkg/token"
	"github.com/sigil-auth/sigil/services/authorizer/internal/authoritytest"
	"github.com/sigil-auth/sigil/services/authorizer/internal/check"
	"github.com/sigil-auth/sigil/services/authorizer/internal/decision"
	"github.com/sigil-auth/sigil/services/authorizer/internal/routes"
	"github.com/sigil-auth/sigil/services/authorizer/internal/server"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeState is the follower and the decision state: one key k1, a revoked
// set and a readiness switch.
type fakeState struct {
	pub     ed25519.PublicKey
	mu      sync.Mutex
	revoked map[token.ID]bool
	ready   bool
	synced  bool
}

func (s *fakeState) Lookup(id string) (ed25519.PublicKey, bool, bool) {
	if id == "k1" {
		return s.pub, false, true
	}
	return nil, false, false
}

func (s *fakeState) Inspect(keyID string, id token.ID) (ed25519.PublicKey, bool, bool, bool, uint64) {
	pub, _, ok := s.Lookup(keyID)
	s.mu.Lock()
	defer s.mu.Unlock()
	return pub, ok, false, s.revoked[id], 10
}
func (s *fakeState) Revision() uint64 { return 10 }
func (s *fakeState) Ready() bool      { s.mu.Lock(); defer s.mu.Unlock(); return s.ready }
func (s *fakeState) Synced() bool     { s.mu.Lock(); defer s.mu.Unlock(); return s.synced }
func (s *fakeState) WaitFor(ctx context.Context, rev uint64) error {
	<-ctx.Done()
	return ctx.Err()
}

const policySrc = `
routes:
  - name: domain-renew
    method: POST
    template: /v5/domain/domains/{fqdn}/renew
    permission: domain:renew
    resource: domains/{fqdn}
    org_header: x-organization-id
  - name: domain-view
    method: GET
    template: /v5/domain/domains/{fqdn}
    permission: domain:view
    resource: domains/{fqdn}
  - name: certificates-list
    method: GET
    template: /v5/certificate/issued-certs
    permission: certificate:view
`

type env struct {
	state   *fakeState
	codec   *token.Codec
	priv    ed25519.PrivateKey
	client  authv3.AuthorizationClient
	checkPB sigilv1.AuthorizerServiceClient
	reg     *prometheus.Registry
	logs    *testproc.Buffer
}

func newEnv(t testing.TB, src string) *env {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{state: &fakeState{pub: pub, revoked: map[token.ID]bool{}, ready: true, synced: true}, priv: priv,
		reg: prometheus.NewRegistry(), logs: &testproc.Buffer{}}
	e.codec, _ = token.NewCodec("")
	dec, err := decision.New(decision.Options{Codec: e.codec, State: e.state, Leeway: 30 * time.Second, CacheSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := routes.Parse("test.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	metrics := check.NewMetrics(e.reg)
	srv := grpcserver.New(grpcserver.Options{Logger: logger, MaxRecvMsgSize: MaxCheckRequestSize})
	srv.RegisterService(&sigilv1.AuthorizerService_ServiceDesc, server.New(server.Options{Decider: dec, Follower: e.state, Metrics: metrics}))
	srv.RegisterService(&ServiceDesc, New(Options{
		Policy: pol, Decider: dec, Follower: e.state, Metrics: metrics, Registerer: e.reg, Logger: logger,
	}))
	cc := authoritytest.Serve(t, srv)
	e.client = authv3.NewAuthorizationClient(cc)
	e.checkPB = sigilv1.NewAuthorizerServiceClient(cc)
	return e
}

func (e *env) mint(t testing.TB, org string, grants ...scope.Grant) (string, token.ID) {
	t.Helper()
	id, _ := token.NewID()
	now := time.Now()
	tok, err := e.codec.Mint(token.Claims{ID: id, OrgID: org, KeyID: "k1", IssuedAt: now.Add(-time.Hour), ExpiresAt: now.Add(24 * time.Hour), Grants: grants}, e.priv)
	if err != nil {
		t.Fatal(err)
	}
	return tok, id
}

// Request builds an ext_authz request as Envoy sends it.
func Request(method, path string, headers map[string]string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: method, Path: path, Headers: headers, Host: "api.example", Scheme: "http"},
	}}}
}

func (e *env) check(t testing.TB, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return e.client.Check(ctx, req)
}

// denial describes a denied answer.
type denial struct {
	HTTP            int
	WWWAuthenticate string
	Error, Reason   string
}

// describe returns the upstream header changes of an OK answer, or the
// denial.
func describe(t testing.TB, resp *authv3.CheckResponse) (set map[string]string, removed []string, d *denial) {
	t.Helper()
	if ok := resp.GetOkResponse(); ok != nil {
		if resp.GetStatus().GetCode() != int32(codes.OK) {
			t.Fatalf("ok response with status %v", resp.GetStatus())
		}
		set = map[string]string{}
		for _, h := range ok.GetHeaders() {
			if h.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
				t.Errorf("header %s appended, want overwritten", h.GetHeader().GetKey())
			}
			set[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
		}
		return set, ok.GetHeadersToRemove(), nil
	}
	dr := resp.GetDeniedResponse()
	if dr == nil {
		t.Fatalf("neither ok nor denied: %v", resp)
	}
	if resp.GetStatus().GetCode() == int32(codes.OK) {
		t.Fatal("denied response with status OK")
	}
	d = &denial{HTTP: int(dr.GetStatus().GetCode())}
	var ct string
	for _, h := range dr.GetHeaders() {
		switch h.GetHeader().GetKey() {
		case "www-authenticate":
			d.WWWAuthenticate = h.GetHeader().GetValue()
		case "content-type":
			ct = h.GetHeader().GetValue()
		}
	}
	if ct != "application/json" {
		t.Errorf("content-type %q", ct)
	}
	var body struct{ Error, Reason string }
	if err := json.Unmarshal([]byte(dr.GetBody()), &body); err != nil {
		t.Fatalf("body %q: %v", dr.GetBody(), err)
	}
	d.Error, d.Reason = body.Error, body.Reason
	return nil, nil, d
}

func TestCheck(t *testing.T) {
	e := newEnv(t, policySrc)
	good, goodID := e.mint(t, "org-a", scope.Grant{Permissions: []string{"domain:renew", "domain:view"}, Resources: []string{"domains/example.com"}})
	viewOnly, _ := e.mint(t, "org-a", scope.Grant{Permissions: []string{"domain:view"}})
	revoked, revokedID := e.mint(t, "org-a", scope.Grant{Permissions: []string{"domain:renew"}})
	e.state.revoked[revokedID] = true

	auth := func(tok string, extra ...string) map[string]string {
		h := map[string]string{"authorization": "Bearer " + tok, "x-sigil-token-id": "forged", "x-sigil-org-id": "forged"}
		for i := 0; i+1 < len(extra); i += 2 {
			h[extra[i]] = extra[i+1]
		}
		return h
	}
	tests := []struct {
		name    string
		req     *authv3.CheckRequest
		wantOK  bool
		want    denial
		wantOrg string
	}{
		{name: "allowed", req: Request("POST", "/v5/domain/domains/example.com/renew", auth(good)), wantOK: true},
		{name: "allowed with org header", req: Request("POST", "/v5/domain/domains/example.com/renew?x=1", auth(good, "x-organization-id", "org-a")), wantOK: true},
		{name: "lower-case scheme", req: Request("POST", "/v5/domain/domains/example.com/renew", map[string]string{"authorization": "bearer " + good}), wantOK: true},
		{name: "header_map only", req: &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "POST", Path: "/v5/domain/domains/example.com/renew",
			HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: "authorization", RawValue: []byte("Bearer " + good)}}},
		}}}}, wantOK: true},
		{name: "missing token", req: Request("POST", "/v5/domain/domains/example.com/renew", nil), want: denial{401, "Bearer", "unauthenticated", "missing_token"}},
		{name: "not bearer", req: Request("POST", "/v5/domain/domains/example.com/renew", map[string]string{"authorization": "Basic " + good}), want: denial{401, "Bearer", "unauthenticated", "missing_token"}},
		{name: "empty bearer", req: Request("POST", "/v5/domain/domains/example.com/renew", map[string]string{"authorization": "Bearer  "}), want: denial{401, "Bearer", "unauthenticated", "missing_token"}},
		{name: "garbage token", req: Request("POST", "/v5/domain/domains/example.com/renew", auth("garbage")), want: denial{401, `Bearer error="invalid_token"`, "invalid_token", "DENY_REASON_MALFORMED"}},
		{name: "huge token", req: Request("POST", "/v5/domain/domains/example.com/renew", auth(strings.Repeat("a", 1<<16))), want: denial{401, `Bearer error="invalid_token"`, "invalid_token", "DENY_REASON_MALFORMED"}},
		{name: "revoked", req: Request("POST", "/v5/domain/domains/example.com/renew", auth(revoked)), want: denial{401, `Bearer error="invalid_token"`, "invalid_token", "DENY_REASON_REVOKED"}},
		{name: "permission not granted", req: Request("POST", "/v5/domain/domains/example.com/renew", auth(viewOnly)), want: denial{403, "", "permission_denied", "DENY_REASON_PERMISSION_NOT_GRANTED"}},
		{name: "wrong resource", req: Request("POST", "/v5/domain/domains/example.org/renew", auth(good)), want: denial{403, "", "permission_denied", "DENY_REASON_RESOURCE_NOT_GRANTED"}},
		{name: "org mismatch", req: Request("POST", "/v5/domain/domains/example.com/renew", auth(good, "x-organization-id", "org-b")), want: denial{403, "", "permission_denied", "DENY_REASON_ORG_MISMATCH"}},
		{name: "org header too long", req: Request("POST", "/v5/domain/domains/example.com/renew", auth(good, "x-organization-id", strings.Repeat("o", 300))), want: denial{400, "", "invalid_request", "invalid_org_id"}},
		{name: "no route", req: Request("GET", "/v5/unknown", auth(good)), want: denial{403, "", "permission_denied", "no_route"}},
		{name: "method not routed", req: Request("DELETE", "/v5/domain/domains/example.com", auth(good)), want: denial{403, "", "permission_denied", "no_route"}},
		{name: "encoded slash", req: Request("GET", "/v5/domain/domains/example.com%2Frecords", auth(good)), want: denial{400, "", "invalid_request", "invalid_path"}},
		{name: "dot-dot", req: Request("GET", "/v5/domain/domains/%2e%2e/renew", auth(good)), want: denial{400, "", "invalid_request", "invalid_path"}},
		{name: "no resource needs unrestricted grant", req: Request("GET", "/v5/certificate/issued-certs", auth(good)), want: denial{403, "", "permission_denied", "DENY_REASON_PERMISSION_NOT_GRANTED"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := e.check(t, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			set, removed, d := describe(t, resp)
			if !tc.wantOK {
				if d == nil {
					t.Fatalf("allowed, want %+v", tc.want)
				}
				if *d != tc.want {
					t.Fatalf("denial %+v, want %+v", *d, tc.want)
				}
				return
			}
			if d != nil {
				t.Fatalf("denied %+v", *d)
			}
			if set[HeaderTokenID] != goodID.String() || set[HeaderOrgID] != "org-a" || len(set) != 2 {
				t.Errorf("headers set %v, want token id %s and org-a", set, goodID)
			}
			if len(removed) != 1 || removed[0] != "authorization" {
				t.Errorf("headers removed %v, want [authorization]", removed)
			}
		})
	}
	if strings.Contains(e.logs.String(), good) || strings.Contains(e.logs.String(), revoked) {
		t.Fatal("a token reached the logs")
	}
	if !strings.Contains(e.logs.String(), `"route":"domain-renew"`) {
		t.Errorf("no decision log line names the route:\n%s", e.logs.String())
	}
	// Metrics: per route and outcome, and the shared decision counter.
	if got := e.counter(t, "sigil_authorizer_extauthz_checks_total", map[string]string{"route": "domain-renew", "outcome": "allowed"}); got != 4 {
		t.Errorf("domain-renew allowed = %v, want 4", got)
	}
	if got := e.counter(t, "sigil_authorizer_extauthz_checks_total", map[string]string{"route": "-", "outcome": "no_route"}); got != 2 {
		t.Errorf("no_route = %v, want 2", got)
	}
}

// counter returns the value of the counter name with the given labels.
func (e *env) counter(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func TestCheckSharesDecisionMetricsWithCheckPermission(t *testing.T) {
	e := newEnv(t, policySrc)
	tok, _ := e.mint(t, "org-a", scope.Grant{Permissions: []string{"domain:view"}})
	if _, err := e.check(t, Request("GET", "/v5/domain/domains/example.com", map[string]string{"authorization": "Bearer " + tok})); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := e.checkPB.CheckPermission(ctx, &sigilv1.CheckPermissionRequest{Token: tok, Permission: "domain:view"}); err != nil {
		t.Fatal(err)
	}
	if got := e.counter(t, "sigil_authorizer_decisions_total", map[string]string{"reason": "allowed"}); got != 2 {
		t.Fatalf("allowed decisions = %v, want 2 (one per API)", got)
	}
}

func TestCheckUnavailableWhenNotReady(t *testing.T) {
	e := newEnv(t, "default: allow\n"+policySrc)
	tok, _ := e.mint(t, "org-a", scope.Grant{Permissions: []string{"domain:view"}})
	for _, tc := range []struct {
		name          string
		ready, synced bool
		msg           string
	}{
		{"not synced", false, false, "not yet synced"},
		{"stale", false, true, "--max-staleness"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.state.mu.Lock()
			e.state.ready, e.state.synced = tc.ready, tc.synced
			e.state.mu.Unlock()
			// A routed request, and an unrouted one under default: allow.
			for _, req := range []*authv3.CheckRequest{
				Request("GET", "/v5/domain/domains/example.com", map[string]string{"authorization": "Bearer " + tok}),
				Request("GET", "/elsewhere", nil),
			} {
				resp, err := e.check(t, req)
				if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), tc.msg) {
					t.Fatalf("Check = %v, %v; want UNAVAILABLE %q", resp, err, tc.msg)
				}
			}
		})
	}
}

func TestDefaultAllowStripsIdentityHeaders(t *testing.T) {
	e := newEnv(t, "default: allow\n"+policySrc)
	resp, err := e.check(t, Request("GET", "/public/status", map[string]string{"x-sigil-token-id": "forged", "x-sigil-org-id": "forged"}))
	if err != nil {
		t.Fatal(err)
	}
	set, removed, d := describe(t, resp)
	if d != nil {
		t.Fatalf("denied %+v", *d)
	}
	if len(set) != 0 {
		t.Errorf("headers set %v", set)
	}
	want := map[string]bool{"authorization": true, "x-sigil-token-id": true, "x-sigil-org-id": true}
	for _, h := range removed {
		delete(want, h)
	}
	if len(want) != 0 {
		t.Errorf("headers not removed: %v", want)
	}
	// A routed request still needs a token under default: allow.
	resp, err = e.check(t, Request("GET", "/v5/domain/domains/example.com", nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, d := describe(t, resp); d == nil || d.HTTP != 401 {
		t.Fatalf("routed request without token: %+v", d)
	}
}

func TestBearer(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"Bearer abc", "abc", true},
		{"BEARER abc", "abc", true},
		{"bearer   abc  ", "abc", true},
		{"Bearer", "", false},
		{"Bearer ", "", false},
		{"Bearerabc", "", false},
		{"Basic abc", "", false},
		{"", "", false},
	} {
		got, ok := bearer(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("bearer(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
