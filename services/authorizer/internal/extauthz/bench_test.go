package extauthz

import (
	"context"
	"log/slog"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/sigil-auth/sigil/internal/testproc"
	extauthzv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/extauthz/v1"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/services/authorizer/internal/check"
	"github.com/sigil-auth/sigil/services/authorizer/internal/decision"
	"github.com/sigil-auth/sigil/services/authorizer/internal/routes"
	"github.com/sigil-auth/sigil/services/authorizer/internal/server"
)

// direct is the ext_authz service and CheckPermission on one decision
// engine, called in process (no gRPC), with a token allowed domain:renew on
// domains/example.com in org-a and the two requests asking for it.
type direct struct {
	ext      *Service
	cp       sigilv1.AuthorizerServiceServer
	envoyReq *authv3.CheckRequest     // as Envoy sends it
	extReq   *extauthzv1.CheckRequest // as the service receives it
	cpReq    *sigilv1.CheckPermissionRequest
	logs     *testproc.Buffer
	reg      *prometheus.Registry
}

// newDirect builds the services as the authorizer does, logging at level
// (Info: the debug line is off, as in production by default).
func newDirect(t testing.TB, level slog.Level) *direct {
	t.Helper()
	e := newEnv(t, policySrc) // for the state, the codec and the key
	dec := newDecider(t, e)
	pol, err := routes.Parse("test.yaml", []byte(policySrc))
	if err != nil {
		t.Fatal(err)
	}
	d := &direct{logs: &testproc.Buffer{}, reg: prometheus.NewRegistry()}
	logger := slog.New(slog.NewJSONHandler(d.logs, &slog.HandlerOptions{Level: level}))
	metrics := check.NewMetrics(d.reg)
	d.cp = server.New(server.Options{Decider: dec, Follower: e.state, Metrics: metrics})
	d.ext = New(Options{Policy: pol, Decider: dec, Follower: e.state, Metrics: metrics, Registerer: d.reg, Logger: logger})
	tok, _ := e.mint(t, "org-a", scope.Grant{Permissions: []string{"domain:renew"}, Resources: []string{"domains/example.com"}})
	d.envoyReq = Request("POST", "/v5/domain/domains/example.com/renew", map[string]string{
		"authorization": "Bearer " + tok, "x-organization-id": "org-a", "user-agent": "bench", "accept": "application/json",
	})
	d.extReq = received(t, d.envoyReq)
	d.cpReq = &sigilv1.CheckPermissionRequest{Token: tok, Permission: "domain:renew", Resource: "domains/example.com", OrgId: "org-a"}
	// The first calls verify the token and fill the decision cache.
	if resp, err := d.ext.Check(context.Background(), d.extReq); err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("ext_authz: %v, %v", resp, err)
	}
	if resp, err := d.cp.CheckPermission(context.Background(), d.cpReq); err != nil || !resp.GetAllowed() {
		t.Fatalf("CheckPermission: %v, %v", resp, err)
	}
	return d
}

// BenchmarkCheck compares, in process and in the same run, the ext_authz
// service's Check with CheckPermission for the same decision (an allowed,
// cached token): the server-side work of each call without gRPC.
// Run it with: go test ./services/authorizer/internal/extauthz -run '^$' -bench 'Check$' -count 10
func BenchmarkCheck(b *testing.B) {
	d := newDirect(b, slog.LevelInfo)
	ctx := context.Background()
	b.Run("CheckPermission", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if resp, err := d.cp.CheckPermission(ctx, d.cpReq); err != nil || !resp.GetAllowed() {
				b.Fatalf("CheckPermission: %v, %v", resp, err)
			}
		}
	})
	b.Run("ExtAuthzCheck", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if resp, err := d.ext.Check(ctx, d.extReq); err != nil || resp.GetOkResponse() == nil {
				b.Fatalf("Check: %v, %v", resp, err)
			}
		}
	})
}

// received returns req as the service receives it: encoded as Envoy
// sends it and decoded as ServiceDesc decodes it.
func received(t testing.TB, req *authv3.CheckRequest) *extauthzv1.CheckRequest {
	t.Helper()
	b, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	in := new(extauthzv1.CheckRequest)
	if err := proto.Unmarshal(b, in); err != nil {
		t.Fatal(err)
	}
	return in
}

// newDecider returns a decision engine of its own on e's state and key.
func newDecider(t testing.TB, e *env) *decision.Decider {
	t.Helper()
	dec, err := decision.New(decision.Options{Codec: e.codec, State: e.state, Leeway: 30 * time.Second, CacheSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	return dec
}
