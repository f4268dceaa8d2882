package extauthz

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/services/authorizer/internal/check"
	"github.com/sigil-auth/sigil/services/authorizer/internal/routes"
)

// maxAllowedAllocs is what an allowed, cached ext_authz Check allocates
// with debug logging off: the answer (one allocation for all its parts),
// the token id's text and the rendered resource. The route match, the
// metrics and the debug line allocate nothing.
const maxAllowedAllocs = 3

func TestAllowedCheckAllocations(t *testing.T) {
	d := newDirect(t, slog.LevelInfo)
	ctx := context.Background()
	got := testing.AllocsPerRun(200, func() {
		if resp, err := d.ext.Check(ctx, d.extReq); err != nil || resp.GetOkResponse() == nil {
			t.Fatalf("Check: %v, %v", resp, err)
		}
	})
	if got > maxAllowedAllocs {
		t.Fatalf("allowed Check: %v allocations, want at most %d", got, maxAllowedAllocs)
	}
	if d.logs.String() != "" {
		t.Fatalf("decision logged with debug off:\n%s", d.logs.String())
	}
}

// With debug on, each decision still logs its line (route, outcome,
// status), and never the token.
func TestDebugLineWhenDebugOn(t *testing.T) {
	d := newDirect(t, slog.LevelDebug)
	if _, err := d.ext.Check(context.Background(), d.extReq); err != nil {
		t.Fatal(err)
	}
	logs := d.logs.String()
	for _, want := range []string{`"msg":"ext_authz decision"`, `"route":"domain-renew"`, `"outcome":"allowed"`, `"http_status":200`} {
		if !strings.Contains(logs, want) {
			t.Errorf("debug line lacks %s:\n%s", want, logs)
		}
	}
	if tok := strings.TrimPrefix(d.envoyReq.GetAttributes().GetRequest().GetHttp().GetHeaders()["authorization"], "Bearer "); strings.Contains(logs, tok) {
		t.Fatal("a token reached the logs")
	}
}

// The allowed answer built in one allocation is the message it always was.
func TestAllowedAnswer(t *testing.T) {
	want := &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(codes.OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers: []*corev3.HeaderValueOption{
				{Header: &corev3.HeaderValue{Key: HeaderTokenID, Value: "tid"}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD},
				{Header: &corev3.HeaderValue{Key: HeaderOrgID, Value: "org-a"}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD},
			},
			HeadersToRemove: []string{HeaderAuthorization},
		}},
	}
	got := allowed("tid", "org-a")
	if !proto.Equal(got, want) {
		t.Fatalf("allowed = %v\nwant %v", got, want)
	}
	// Each answer is its own: changing one leaves the next untouched.
	got.GetOkResponse().HeadersToRemove[0] = "x"
	got.GetOkResponse().Headers[0].Header.Value = "changed"
	if next := allowed("tid", "org-a"); !proto.Equal(next, want) {
		t.Fatalf("an answer shares state with the next: %v", next)
	}
}

// The per-route metric children are resolved once and survive a reload of
// the routes file: counts go on under the same series, and a route nobody
// called exports no series (as with a label lookup per request).
func TestMetricsAcrossReload(t *testing.T) {
	e := newEnv(t, policySrc)
	tok, _ := e.mint(t, "org-a", scope.Grant{Permissions: []string{"domain:view"}})
	path := filepath.Join(t.TempDir(), "routes.yaml")
	if err := os.WriteFile(path, []byte(policySrc), 0o600); err != nil {
		t.Fatal(err)
	}
	live, err := routes.LoadLive(path)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	eng := NewEngine(Options{Live: live, Decider: newDecider(t, e), Follower: e.state, Metrics: check.NewMetrics(nil), Registerer: reg}, "extauthz")
	header := func(name string) string {
		if name == HeaderAuthorization {
			return "Bearer " + tok
		}
		return ""
	}
	decide := func(method, path string) Verdict {
		t.Helper()
		v, err := eng.Decide(context.Background(), method, path, header)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for range 2 {
		if v := decide("GET", "/v5/domain/domains/example.com"); !v.Allowed {
			t.Fatalf("before reload: %+v", v)
		}
	}
	decide("GET", "/nowhere")
	// The same routes in another order, plus one.
	reloaded := strings.Replace(policySrc, "routes:\n", "routes:\n  - name: extra\n    method: GET\n    template: /extra\n    permission: domain:view\n", 1)
	if err := os.WriteFile(path, []byte(reloaded), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := live.Reload(); err != nil {
		t.Fatal(err)
	}
	if v := decide("GET", "/v5/domain/domains/example.com"); !v.Allowed || v.Route != "domain-view" {
		t.Fatalf("after reload: %+v", v)
	}
	if v := decide("GET", "/extra"); !v.Allowed || v.Route != "extra" {
		t.Fatalf("new route: %+v", v)
	}
	decide("GET", "/nowhere")
	for _, c := range []struct {
		route, outcome string
		want           float64
	}{
		{"domain-view", "allowed", 3},
		{"extra", "allowed", 1},
		{"-", "no_route", 2},
	} {
		if got := testutil.ToFloat64(eng.checks.WithLabelValues(c.route, c.outcome)); got != c.want {
			t.Errorf("checks{route=%s,outcome=%s} = %v, want %v", c.route, c.outcome, got, c.want)
		}
	}
	if n := testutil.CollectAndCount(eng.checks); n != 3 {
		t.Errorf("%d checks series, want 3 (no series for routes never called)", n)
	}
	if n := testutil.CollectAndCount(eng.latency); n != 3 {
		t.Errorf("%d latency series, want 3 (domain-view, extra, -)", n)
	}
}
