package forwardauth

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/sigil-auth/sigil/pkg/authz"
	"github.com/sigil-auth/sigil/pkg/grpcserver"
	domainsv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/examples/domains/v1"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/pkg/token"
	"github.com/sigil-auth/sigil/services/authorizer/internal/check"
	"github.com/sigil-auth/sigil/services/authorizer/internal/decision"
	"github.com/sigil-auth/sigil/services/authorizer/internal/extauthz"
	"github.com/sigil-auth/sigil/services/authorizer/internal/routes"
	"github.com/sigil-auth/sigil/services/authorizer/internal/server"
)

// fakeState is the follower and the decision state: one key k1, a revoked
// set and a readiness switch.
type fakeState struct {
	pub     ed25519.PublicKey
	mu      sync.Mutex
	revoked map[token.ID]bool
	ready   bool
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
func (s *fakeState) Synced() bool     { return true }
func (s *fakeState) WaitFor(ctx context.Context, rev uint64) error {
	<-ctx.Done()
	return ctx.Err()
}
func (s *fakeState) setReady(r bool) { s.mu.Lock(); s.ready = r; s.mu.Unlock() }

// The policy of the parity test: the same operations as the domains
// example's proto annotations.
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
    org_header: x-organization-id
  - name: domain-list
    method: GET
    template: /v5/domain/domains
    permission: domain:view
    org_header: x-organization-id
`

// env is one decision engine behind the three APIs.
type env struct {
	state   *fakeState
	codec   *token.Codec
	priv    ed25519.PrivateKey
	ext     authv3.AuthorizationClient
	fwd     string // forward-auth base URL
	product domainsv1.DomainServiceClient
}

// productServer answers with what pkg/authz gave the handler.
type productServer struct {
	domainsv1.UnimplementedDomainServiceServer
}

func (productServer) ListDomains(ctx context.Context, _ *domainsv1.ListDomainsRequest) (*domainsv1.ListDomainsResponse, error) {
	return &domainsv1.ListDomainsResponse{OrgId: authz.OrgID(ctx) + "|" + authz.TokenID(ctx)}, nil
}
func (productServer) GetDomain(ctx context.Context, r *domainsv1.GetDomainRequest) (*domainsv1.GetDomainResponse, error) {
	return &domainsv1.GetDomainResponse{Domain: &domainsv1.Domain{Fqdn: authz.OrgID(ctx) + "|" + authz.TokenID(ctx)}}, nil
}
func (productServer) RenewDomain(ctx context.Context, r *domainsv1.RenewDomainRequest) (*domainsv1.RenewDomainResponse, error) {
	return &domainsv1.RenewDomainResponse{TokenId: authz.OrgID(ctx) + "|" + authz.TokenID(ctx)}, nil
}

func serveTCP(t *testing.T, serve func(net.Listener) error, stop func()) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = serve(lis); close(done) }()
	t.Cleanup(func() { stop(); <-done })
	return lis.Addr().String()
}

func newEnv(t *testing.T) *env {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{state: &fakeState{pub: pub, revoked: map[token.ID]bool{}, ready: true}, priv: priv}
	e.codec, _ = token.NewCodec("")
	dec, err := decision.New(decision.Options{Codec: e.codec, State: e.state, Leeway: 30 * time.Second, CacheSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := routes.Parse("test.yaml", []byte(policySrc))
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)
	metrics := check.NewMetrics(nil)
	opts := extauthz.Options{Policy: pol, Decider: dec, Follower: e.state, Metrics: metrics, Logger: logger}

	// The authorizer's gRPC APIs: CheckPermission and ext_authz.
	srv := grpcserver.New(grpcserver.Options{Logger: logger, MaxRecvMsgSize: extauthz.MaxCheckRequestSize})
	srv.RegisterService(&sigilv1.AuthorizerService_ServiceDesc, server.New(server.Options{Decider: dec, Follower: e.state, Metrics: metrics}))
	srv.RegisterService(&extauthz.ServiceDesc, extauthz.New(opts))
	authzAddr := serveTCP(t, srv.Serve, func() { srv.Shutdown(time.Second) })
	conn, err := grpc.NewClient(authzAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	e.ext = authv3.NewAuthorizationClient(conn)

	// Forward-auth on the same decider.
	hs := httptest.NewServer(Handler(extauthz.NewEngine(opts, "forwardauth")))
	t.Cleanup(hs.Close)
	e.fwd = hs.URL

	// The product, guarded by pkg/authz calling that authorizer.
	pool, err := authz.NewPool(authz.PoolOptions{Addrs: []string{authzAddr}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	g, err := authz.New(authz.Options{
		Services: []protoreflect.ServiceDescriptor{domainsv1.File_sigil_examples_domains_v1_domains_proto.Services().ByName("DomainService")},
		Checker:  pool, OrgIDKey: "x-organization-id",
	})
	if err != nil {
		t.Fatal(err)
	}
	ps := grpc.NewServer(grpc.UnaryInterceptor(g.UnaryServerInterceptor()))
	domainsv1.RegisterDomainServiceServer(ps, productServer{})
	productAddr := serveTCP(t, ps.Serve, ps.Stop)
	pconn, err := grpc.NewClient(productAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pconn.Close() })
	e.product = domainsv1.NewDomainServiceClient(pconn)
	return e
}

func (e *env) mint(t *testing.T, org string, expires time.Time, grants ...scope.Grant) (string, token.ID) {
	t.Helper()
	id, _ := token.NewID()
	tok, err := e.codec.Mint(token.Claims{ID: id, OrgID: org, KeyID: "k1", IssuedAt: expires.Add(-48 * time.Hour), ExpiresAt: expires, Grants: grants}, e.priv)
	if err != nil {
		t.Fatal(err)
	}
	return tok, id
}

// outcome is a decision reduced to what all three APIs can say.
type outcome struct {
	Kind    string // allow, unauthenticated, permission_denied, unavailable
	Reason  string // upper case: a DenyReason name or MISSING_TOKEN
	TokenID string // allowed: "org|token id" as the product sees it
}

// op is one operation, in HTTP and in gRPC.
type op struct {
	method, path string
	call         func(ctx context.Context, c domainsv1.DomainServiceClient) (string, error)
}

func renew(fqdn string) op {
	return op{"POST", "/v5/domain/domains/" + fqdn + "/renew", func(ctx context.Context, c domainsv1.DomainServiceClient) (string, error) {
		r, err := c.RenewDomain(ctx, &domainsv1.RenewDomainRequest{Domain: &domainsv1.DomainRef{Fqdn: fqdn}, Years: 1})
		return r.GetTokenId(), err
	}}
}

func view(fqdn string) op {
	return op{"GET", "/v5/domain/domains/" + fqdn, func(ctx context.Context, c domainsv1.DomainServiceClient) (string, error) {
		r, err := c.GetDomain(ctx, &domainsv1.GetDomainRequest{Fqdn: fqdn})
		return r.GetDomain().GetFqdn(), err
	}}
}

func list() op {
	return op{"GET", "/v5/domain/domains", func(ctx context.Context, c domainsv1.DomainServiceClient) (string, error) {
		r, err := c.ListDomains(ctx, &domainsv1.ListDomainsRequest{})
		return r.GetOrgId(), err
	}}
}

func (e *env) viaExtAuthz(t *testing.T, o op, h map[string]string) outcome {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := e.ext.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: o.method, Path: o.path, Headers: h},
	}}})
	if status.Code(err) == codes.Unavailable {
		return outcome{Kind: "unavailable"}
	}
	if err != nil {
		t.Fatalf("ext_authz: %v", err)
	}
	if ok := resp.GetOkResponse(); ok != nil {
		set := map[string]string{}
		for _, hv := range ok.GetHeaders() {
			set[hv.GetHeader().GetKey()] = hv.GetHeader().GetValue()
		}
		return outcome{Kind: "allow", TokenID: set["x-sigil-org-id"] + "|" + set["x-sigil-token-id"]}
	}
	var body struct{ Reason string }
	_ = json.Unmarshal([]byte(resp.GetDeniedResponse().GetBody()), &body)
	return outcome{Kind: httpKind(int(resp.GetDeniedResponse().GetStatus().GetCode())), Reason: strings.ToUpper(body.Reason)}
}

func httpKind(code int) string {
	switch code {
	case 200:
		return "allow"
	case 401:
		return "unauthenticated"
	case 403:
		return "permission_denied"
	case 503:
		return "unavailable"
	}
	return "http-" + http.StatusText(code)
}

func (e *env) viaForwardAuth(t *testing.T, o op, h map[string]string) outcome {
	req, err := http.NewRequest("GET", e.fwd+Path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(HeaderOriginalMethod, o.method)
	req.Header.Set(HeaderOriginalURI, o.path)
	for k, v := range h {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := outcome{Kind: httpKind(resp.StatusCode)}
	if resp.StatusCode == 200 {
		out.TokenID = resp.Header.Get(HeaderOrgID) + "|" + resp.Header.Get(HeaderTokenID)
		return out
	}
	if resp.StatusCode == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("401 without WWW-Authenticate: Bearer")
	}
	var body struct{ Reason string }
	if err := json.Unmarshal(b, &body); err != nil {
		t.Fatalf("body %q: %v", b, err)
	}
	if out.Kind != "unavailable" {
		out.Reason = strings.ToUpper(body.Reason)
	}
	return out
}

func (e *env) viaAuthz(t *testing.T, o op, h map[string]string) outcome {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var kv []string
	for k, v := range h {
		kv = append(kv, k, v)
	}
	got, err := o.call(metadata.AppendToOutgoingContext(ctx, kv...), e.product)
	switch status.Code(err) {
	case codes.OK:
		return outcome{Kind: "allow", TokenID: got}
	case codes.Unauthenticated:
		return outcome{Kind: "unauthenticated", Reason: authz.Reason(err)}
	case codes.PermissionDenied:
		return outcome{Kind: "permission_denied", Reason: authz.Reason(err)}
	case codes.Unavailable:
		return outcome{Kind: "unavailable"}
	}
	t.Fatalf("pkg/authz: %v", err)
	return outcome{}
}

// TestSameDecisionsEverywhere runs each case through Envoy ext_authz, HTTP
// forward-auth and a product guarded by pkg/authz, and wants one answer.
func TestSameDecisionsEverywhere(t *testing.T) {
	e := newEnv(t)
	future := time.Now().Add(24 * time.Hour)
	renewer, renewerID := e.mint(t, "org-a", future, scope.Grant{Permissions: []string{"domain:renew", "domain:view"}, Resources: []string{"domains/example.com"}})
	viewer, viewerID := e.mint(t, "org-a", future, scope.Grant{Permissions: []string{"domain:view"}})
	expired, _ := e.mint(t, "org-a", time.Now().Add(-time.Hour), scope.Grant{Permissions: []string{"domain:renew"}})
	revoked, revokedID := e.mint(t, "org-a", future, scope.Grant{Permissions: []string{"domain:renew"}})
	e.state.mu.Lock()
	e.state.revoked[revokedID] = true
	e.state.mu.Unlock()
	bearer := func(tok string, org ...string) map[string]string {
		h := map[string]string{"authorization": "Bearer " + tok}
		if len(org) > 0 {
			h["x-organization-id"] = org[0]
		}
		return h
	}
	allowAs := func(id token.ID) outcome { return outcome{Kind: "allow", TokenID: "org-a|" + id.String()} }
	cases := []struct {
		name    string
		op      op
		headers map[string]string
		stale   bool
		want    outcome
	}{
		{"allowed", renew("example.com"), bearer(renewer, "org-a"), false, allowAs(renewerID)},
		{"allowed, no org header", renew("example.com"), bearer(renewer), false, allowAs(renewerID)},
		{"allowed without resource", list(), bearer(viewer), false, allowAs(viewerID)},
		{"allowed on any resource", view("example.org"), bearer(viewer), false, allowAs(viewerID)},
		{"wrong permission", renew("example.com"), bearer(viewer, "org-a"), false, outcome{"permission_denied", "DENY_REASON_PERMISSION_NOT_GRANTED", ""}},
		{"wrong resource", renew("example.org"), bearer(renewer, "org-a"), false, outcome{"permission_denied", "DENY_REASON_RESOURCE_NOT_GRANTED", ""}},
		{"other org", renew("example.com"), bearer(renewer, "org-b"), false, outcome{"permission_denied", "DENY_REASON_ORG_MISMATCH", ""}},
		{"no token", renew("example.com"), map[string]string{"x-organization-id": "org-a"}, false, outcome{"unauthenticated", "MISSING_TOKEN", ""}},
		{"malformed token", view("example.com"), bearer("sigil_pat_garbage"), false, outcome{"unauthenticated", "DENY_REASON_MALFORMED", ""}},
		{"forged token", view("example.com"), bearer(viewer[:len(viewer)-4] + "AAAA"), false, outcome{"unauthenticated", "DENY_REASON_MALFORMED", ""}},
		{"expired token", renew("example.com"), bearer(expired), false, outcome{"unauthenticated", "DENY_REASON_EXPIRED", ""}},
		{"revoked token", renew("example.com"), bearer(revoked), false, outcome{"unauthenticated", "DENY_REASON_REVOKED", ""}},
		{"stale authorizer", renew("example.com"), bearer(renewer, "org-a"), true, outcome{Kind: "unavailable"}},
		{"stale authorizer, no token", renew("example.com"), nil, true, outcome{Kind: "unavailable"}},
	}
	// The one intended difference: pkg/authz refuses a call without a
	// token before asking any authorizer (there is nothing to check), so it
	// says UNAUTHENTICATED where the authorizer's own APIs, readiness first,
	// say unavailable. Both deny.
	exceptions := map[string]map[string]outcome{
		"stale authorizer, no token": {"pkg/authz": {"unauthenticated", "MISSING_TOKEN", ""}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.state.setReady(!c.stale)
			defer e.state.setReady(true)
			got := map[string]outcome{
				"ext_authz":    e.viaExtAuthz(t, c.op, c.headers),
				"forward-auth": e.viaForwardAuth(t, c.op, c.headers),
				"pkg/authz":    e.viaAuthz(t, c.op, c.headers),
			}
			for api, o := range got {
				want := c.want
				if x, ok := exceptions[c.name][api]; ok {
					want = x
				}
				if o != want {
					t.Errorf("%s: %+v, want %+v", api, o, want)
				}
			}
		})
	}
}

// TestForwardAuthRequest covers what is particular to forward-auth: how
// the original request is read, and the answer's headers.
func TestForwardAuthRequest(t *testing.T) {
	e := newEnv(t)
	tok, id := e.mint(t, "org-a", time.Now().Add(time.Hour), scope.Grant{Permissions: []string{"domain:view"}})
	do := func(h map[string]string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", e.fwd+Path, strings.NewReader("ignored body"))
		for k, v := range h {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	auth := "Bearer " + tok
	for _, c := range []struct {
		name string
		h    map[string]string
		want int
	}{
		{"nginx headers", map[string]string{HeaderOriginalMethod: "GET", HeaderOriginalURI: "/v5/domain/domains/example.com?x=1", "Authorization": auth}, 200},
		{"traefik/caddy headers", map[string]string{HeaderForwardedMethod: "GET", HeaderForwardedURI: "/v5/domain/domains/example.com", "Authorization": auth}, 200},
		{"both, agreeing", map[string]string{HeaderOriginalMethod: "GET", HeaderOriginalURI: "/v5/domain/domains", HeaderForwardedMethod: "GET", HeaderForwardedURI: "/v5/domain/domains", "Authorization": auth}, 200},
		{"both, disagreeing (smuggled)", map[string]string{HeaderOriginalMethod: "GET", HeaderOriginalURI: "/v5/domain/domains", HeaderForwardedMethod: "POST", HeaderForwardedURI: "/v5/domain/domains/example.com/renew", "Authorization": auth}, 400},
		{"no original request", map[string]string{"Authorization": auth}, 400},
		{"method only", map[string]string{HeaderOriginalMethod: "GET", "Authorization": auth}, 400},
		{"unknown route", map[string]string{HeaderOriginalMethod: "DELETE", HeaderOriginalURI: "/v5/domain/domains/example.com", "Authorization": auth}, 403},
		{"invalid path", map[string]string{HeaderOriginalMethod: "GET", HeaderOriginalURI: "/v5/domain/domains/a%2Fb", "Authorization": auth}, 400},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp := do(c.h)
			if resp.StatusCode != c.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, c.want)
			}
			if c.want == 200 && (resp.Header.Get(HeaderTokenID) != id.String() || resp.Header.Get(HeaderOrgID) != "org-a") {
				t.Fatalf("headers %v", resp.Header)
			}
			if c.want != 200 && (resp.Header.Get(HeaderTokenID) != "" || resp.Header.Get("Content-Type") != "application/json") {
				t.Fatalf("denial headers %v", resp.Header)
			}
		})
	}
	// Other paths are not served.
	resp, err := http.Get(e.fwd + "/v1/authz/extra")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("/v1/authz/extra: %d, want 404", resp.StatusCode)
	}
}
