package main

// End-to-end tests of the Envoy ext_authz API: the real authority and an
// authorizer started with --routes, driven over TCP with the generated
// envoy.service.auth.v3 client, as an Envoy sidecar would.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sigil-auth/sigil/internal/testproc"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/services/authorizer/internal/extauthz/envoytest"
)

const e2eRoutes = `
default: deny
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
`

// startSidecarAuthorizer starts an authorizer with the e2e route policy.
func startSidecarAuthorizer(t testing.TB, a *authority) (*authorizer, authv3.AuthorizationClient) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "routes.yaml")
	if err := os.WriteFile(path, []byte(e2eRoutes), 0o600); err != nil {
		t.Fatal(err)
	}
	z := startAuthorizer(t, a, "--routes", path)
	return z, authv3.NewAuthorizationClient(z.conn)
}

// mintGrants creates a token in org-a with the given grant.
func (a *authority) mintGrants(t testing.TB, perms []string, resources ...string) (tok, id string) {
	t.Helper()
	nameSeq.Lock()
	nameSeq.n++
	name := fmt.Sprintf("e2e-sidecar-%d", nameSeq.n)
	nameSeq.Unlock()
	resp, err := a.client.CreateToken(a.op(t), &sigilv1.CreateTokenRequest{
		OrgId: "org-a", Name: name, CreatedBy: "alice",
		Grants: []*sigilv1.Grant{{Permissions: perms, Resources: resources}},
		Expiry: &sigilv1.CreateTokenRequest_Ttl{Ttl: durationpb.New(10 * 24 * time.Hour)},
	})
	if err != nil {
		t.Fatalf("CreateToken: %v", err)
	}
	return resp.GetToken(), resp.GetInfo().GetTokenId()
}

func httpCheck(method, path string, headers map[string]string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: method, Path: path, Headers: headers, Host: "api.example", Scheme: "https", Protocol: "HTTP/1.1"},
	}}}
}

// verdict is an ext_authz answer reduced to what Envoy acts on.
type verdict struct {
	allowed bool
	set     map[string]string // upstream headers set (allowed)
	removed []string          // upstream headers removed (allowed)
	http    int               // HTTP status (denied)
	www     string            // WWW-Authenticate (denied)
	reason  string            // body reason (denied)
}

func extCheck(t testing.TB, c authv3.AuthorizationClient, req *authv3.CheckRequest) (verdict, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.Check(ctx, req)
	if err != nil {
		return verdict{}, err
	}
	var v verdict
	if ok := resp.GetOkResponse(); ok != nil && resp.GetStatus().GetCode() == int32(codes.OK) {
		v.allowed = true
		v.set = map[string]string{}
		for _, h := range ok.GetHeaders() {
			v.set[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
		}
		v.removed = ok.GetHeadersToRemove()
		return v, nil
	}
	d := resp.GetDeniedResponse()
	if d == nil {
		t.Fatalf("answer neither allows nor denies: %v", resp)
	}
	v.http = int(d.GetStatus().GetCode())
	for _, h := range d.GetHeaders() {
		if h.GetHeader().GetKey() == "www-authenticate" {
			v.www = h.GetHeader().GetValue()
		}
	}
	var body struct{ Error, Reason string }
	if err := json.Unmarshal([]byte(d.GetBody()), &body); err != nil {
		t.Fatalf("denial body %q: %v", d.GetBody(), err)
	}
	v.reason = body.Reason
	return v, nil
}

func wantDenied(t testing.TB, c authv3.AuthorizationClient, req *authv3.CheckRequest, httpStatus int, reason string) {
	t.Helper()
	v, err := extCheck(t, c, req)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if v.allowed || v.http != httpStatus || v.reason != reason {
		t.Fatalf("Check = %+v, want HTTP %d reason %s", v, httpStatus, reason)
	}
	if httpStatus == 401 && !strings.HasPrefix(v.www, "Bearer") {
		t.Fatalf("401 without WWW-Authenticate: Bearer (%q)", v.www)
	}
}

func TestE2EExtAuthz(t *testing.T) {
	a := startAuthority(t, t.TempDir(), "127.0.0.1:0")
	z, c := startSidecarAuthorizer(t, a)
	renewer, renewerID := a.mintGrants(t, []string{"domain:renew"}, "domains/example.com")
	viewer, _ := a.mintGrants(t, []string{"domain:view"})
	bearer := func(tok string) map[string]string {
		// A client trying to pass identity headers of its own.
		return map[string]string{"authorization": "Bearer " + tok, "x-organization-id": "org-a",
			"x-sigil-token-id": "forged", "x-sigil-org-id": "org-evil"}
	}
	renew := func(fqdn string, h map[string]string) *authv3.CheckRequest {
		return httpCheck("POST", "/v5/domain/domains/"+fqdn+"/renew?period=1", h)
	}

	t.Run("allowed with headers rewritten", func(t *testing.T) {
		v, err := extCheck(t, c, renew("example.com", bearer(renewer)))
		if err != nil || !v.allowed {
			t.Fatalf("Check = %+v, %v; want allowed", v, err)
		}
		if v.set["x-sigil-token-id"] != renewerID || v.set["x-sigil-org-id"] != "org-a" {
			t.Fatalf("upstream headers %v, want x-sigil-token-id %s and x-sigil-org-id org-a", v.set, renewerID)
		}
		if len(v.removed) != 1 || v.removed[0] != "authorization" {
			t.Fatalf("headers removed %v, want [authorization]", v.removed)
		}
		// domain:renew implies domain:view (expanded at mint).
		if v, err := extCheck(t, c, httpCheck("GET", "/v5/domain/domains/example.com", bearer(renewer))); err != nil || !v.allowed {
			t.Fatalf("view with renew token: %+v, %v", v, err)
		}
	})
	t.Run("401 missing token", func(t *testing.T) {
		wantDenied(t, c, renew("example.com", map[string]string{"x-organization-id": "org-a"}), 401, "missing_token")
	})
	t.Run("401 garbage token", func(t *testing.T) {
		wantDenied(t, c, renew("example.com", bearer("sigil_pat_garbage")), 401, "DENY_REASON_MALFORMED")
		wantDenied(t, c, renew("example.com", bearer(renewer[:len(renewer)-3]+"xyz")), 401, "DENY_REASON_MALFORMED")
	})
	t.Run("403 permission not granted", func(t *testing.T) {
		wantDenied(t, c, renew("example.com", bearer(viewer)), 403, "DENY_REASON_PERMISSION_NOT_GRANTED")
	})
	t.Run("403 wrong resource", func(t *testing.T) {
		wantDenied(t, c, renew("example.org", bearer(renewer)), 403, "DENY_REASON_RESOURCE_NOT_GRANTED")
	})
	t.Run("403 other organization", func(t *testing.T) {
		h := bearer(renewer)
		h["x-organization-id"] = "org-b"
		wantDenied(t, c, renew("example.com", h), 403, "DENY_REASON_ORG_MISMATCH")
	})
	t.Run("unknown route", func(t *testing.T) {
		wantDenied(t, c, httpCheck("DELETE", "/v5/domain/domains/example.com", bearer(renewer)), 403, "no_route")
		wantDenied(t, c, httpCheck("GET", "/v5/billing/info", bearer(renewer)), 403, "no_route")
	})
	t.Run("encoded slash rejected", func(t *testing.T) {
		wantDenied(t, c, httpCheck("GET", "/v5/domain/domains/example.com%2Frecords%2Fwww", bearer(renewer)), 400, "invalid_path")
	})
	t.Run("revoked token denied", func(t *testing.T) {
		tok, id := a.mintGrants(t, []string{"domain:renew"}, "domains/example.com")
		if v, err := extCheck(t, c, renew("example.com", bearer(tok))); err != nil || !v.allowed {
			t.Fatalf("before revocation: %+v, %v", v, err)
		}
		a.revoke(t, id)
		revoked := time.Now()
		for {
			v, err := extCheck(t, c, renew("example.com", bearer(tok)))
			if err != nil {
				t.Fatal(err)
			}
			if !v.allowed {
				if v.http != 401 || v.reason != "DENY_REASON_REVOKED" {
					t.Fatalf("after revocation: %+v, want 401 DENY_REASON_REVOKED", v)
				}
				t.Logf("revocation seen by ext_authz after %v", time.Since(revoked))
				break
			}
			if time.Since(revoked) > 10*time.Second { // a hang, not a latency bound
				t.Fatal("revoked token still allowed 10s after the revocation")
			}
			time.Sleep(time.Millisecond)
		}
	})

	// Metrics are labelled by route; no token reached the logs.
	metrics := scrape(t, z)
	for _, want := range []string{
		`sigil_authorizer_extauthz_checks_total{outcome="allowed",route="domain-renew"}`,
		`sigil_authorizer_extauthz_checks_total{outcome="no_route",route="-"}`,
		`sigil_authorizer_extauthz_checks_total{outcome="permission_not_granted",route="domain-renew"}`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	z.term(t, 10*time.Second)
	for _, tok := range []string{renewer, viewer} {
		if strings.Contains(z.Logs.String(), tok) || strings.Contains(a.Logs.String(), tok) {
			t.Fatal("a token reached the logs")
		}
	}
}

// scrape reads the authorizer's /metrics page.
func scrape(t testing.TB, z *authorizer) string {
	t.Helper()
	var addr string
	for _, line := range strings.Split(z.Logs.String(), "\n") {
		var rec struct {
			Msg         string `json:"msg"`
			MetricsAddr string `json:"metrics_addr"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "listening" {
			addr = rec.MetricsAddr
		}
	}
	if addr == "" {
		t.Fatal("no metrics address logged")
	}
	body, err := httpGet("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	return body
}

func TestE2EExtAuthzStaleAuthorizerUnavailable(t *testing.T) {
	a := startAuthority(t, t.TempDir(), "127.0.0.1:0")
	z, c := startSidecarAuthorizer(t, a) // --max-staleness 2s
	tok, _ := a.mintGrants(t, []string{"domain:view"})
	req := httpCheck("GET", "/v5/domain/domains/example.com", map[string]string{"authorization": "Bearer " + tok})
	if v, err := extCheck(t, c, req); err != nil || !v.allowed {
		t.Fatalf("before: %+v, %v", v, err)
	}
	a.kill()
	killed := time.Now()
	for {
		v, err := extCheck(t, c, req)
		if status.Code(err) == codes.Unavailable {
			break
		}
		if err != nil {
			t.Fatalf("unexpected error %v", err)
		}
		if !v.allowed {
			t.Fatalf("denied %+v while still fresh", v)
		}
		if time.Since(killed) > 10*time.Second {
			t.Fatal("ext_authz still answering 10s after the authority died")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("ext_authz UNAVAILABLE %v after the authority was killed (--max-staleness 2s)", time.Since(killed))
	// The unrouted request is UNAVAILABLE too, not a 403 nor an allow.
	if _, err := extCheck(t, c, httpCheck("GET", "/nowhere", nil)); status.Code(err) != codes.Unavailable {
		t.Fatalf("unrouted request while stale: %v", err)
	}
	z.waitServing(t, false, 10*time.Second)
}

func TestE2EBadRoutesFileStopsStartup(t *testing.T) {
	a := startAuthority(t, t.TempDir(), "127.0.0.1:0")
	path := filepath.Join(t.TempDir(), "routes.yaml")
	if err := os.WriteFile(path, []byte("routes:\n  - method: GET\n    template: /a/{x}\n    permission: domain:view\n    resource: domains/{y}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runBinary(testproc.MustBuild(t, authorizerPkg), "--listen", "127.0.0.1:0", "--metrics-listen", "", "--authority", a.addr, "--routes", path)
	if err == nil {
		t.Fatal("authorizer started with a bad routes file")
	}
	if !strings.Contains(out, path) || !strings.Contains(out, "routes[0].resource") {
		t.Fatalf("error does not name the file and field:\n%s", out)
	}
}

// benchExtRequest is the ext_authz request of the benchmarks: method and
// path with the token, the organization header and two ordinary headers,
// the request attributes an Envoy sidecar sends with them.
func benchExtRequest(tok, method, path string) *authv3.CheckRequest {
	return httpCheck(method, path, map[string]string{
		"authorization": "Bearer " + tok, "x-organization-id": "org-a", "user-agent": "bench", "accept": "application/json",
	})
}

// BenchmarkExtAuthzVsCheckPermission compares, on one real authorizer over
// loopback TCP and in the same run, Envoy's ext_authz Check with
// CheckPermission for the same decision (an allowed, cached token), with
// about 50 concurrent callers on one client connection each way. ext_authz
// is called twice: with the request of the ghz benchmark (method, path,
// 4 headers) and with the same request as an Envoy sidecar fills it
// (envoytest.Shaped: peers, time, 13 headers, metadata).
//
// ns/op is wall time and includes the Go client's own work (marshalling
// Envoy's much larger CheckRequest, decoding the CheckResponse) on the
// same cores; server-ns/op is the authorizer process's own CPU per call
// (user and system, from /proc), which is what an Envoy sidecar on its own
// resources would see. Each run also prints both ratios as throughput
// ratios ext_authz / CheckPermission.
// Run it with: go test ./services/authorizer -run '^$' -bench ExtAuthzVsCheckPermission -benchtime 300000x -count 5
func BenchmarkExtAuthzVsCheckPermission(b *testing.B) {
	a := startAuthority(b, b.TempDir(), "127.0.0.1:0")
	z, c := startSidecarAuthorizer(b, a)
	tok, _ := a.mintGrants(b, []string{"domain:renew"}, "domains/example.com")
	extReq := benchExtRequest(tok, "POST", "/v5/domain/domains/example.com/renew")
	envoyReq := envoytest.Shaped(extReq)
	cpReq := &sigilv1.CheckPermissionRequest{Token: tok, Permission: "domain:renew", Resource: "domains/example.com", OrgId: "org-a"}
	for _, req := range []*authv3.CheckRequest{extReq, envoyReq} {
		if v, err := extCheck(b, c, req); err != nil || !v.allowed {
			b.Fatalf("ext_authz: %+v, %v", v, err)
		}
	}
	parallelism := max(1, 50/runtime.GOMAXPROCS(0))
	// wall and server hold the last (largest) run of each sub-benchmark.
	var wall, server [3]float64
	measure := func(i int, call func() error) func(b *testing.B) {
		return func(b *testing.B) {
			b.SetParallelism(parallelism)
			b.ReportAllocs()
			cpu0 := procCPU(b, z.PID())
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := call(); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			wall[i] = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			server[i] = float64((procCPU(b, z.PID()) - cpu0).Nanoseconds()) / float64(b.N)
			b.ReportMetric(server[i], "server-ns/op")
		}
	}
	b.Run("CheckPermission", measure(0, func() error {
		resp, err := z.client.CheckPermission(context.Background(), cpReq)
		if err != nil || !resp.GetAllowed() {
			return fmt.Errorf("CheckPermission: %v, %v", resp, err)
		}
		return nil
	}))
	for i, sub := range []struct {
		name string
		req  *authv3.CheckRequest
	}{{"ExtAuthzCheck", extReq}, {"ExtAuthzCheckEnvoyShaped", envoyReq}} {
		b.Run(sub.name, measure(i+1, func() error {
			resp, err := c.Check(context.Background(), sub.req)
			if err != nil || resp.GetOkResponse() == nil {
				return fmt.Errorf("Check: %v, %v", resp, err)
			}
			return nil
		}))
	}
	for i, name := range []string{1: "ext_authz", 2: "ext_authz (Envoy-shaped)"} {
		if i > 0 && wall[i] > 0 && server[i] > 0 {
			fmt.Printf("%s / CheckPermission throughput: wall (Go client on the same cores) %.2f, per server CPU %.2f\n",
				name, wall[0]/wall[i], server[0]/server[i])
		}
	}
}

func httpGet(url string) (string, error) {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// runBinary runs bin to completion (bounded) and returns its output.
func runBinary(bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = testproc.Env()
	out, err := cmd.CombinedOutput()
	return string(out), err
}
