package extauthz

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/pkg/token"
	"github.com/sigil-auth/sigil/services/authorizer/internal/authoritytest"
	"github.com/sigil-auth/sigil/services/authorizer/internal/check"
	"github.com/sigil-auth/sigil/services/authorizer/internal/decision"
	"github.com/sigil-auth/sigil/services/authorizer/internal/follower"
	"github.com/sigil-auth/sigil/services/authorizer/internal/routes"
)

// A route whose permission left the authority's catalog (streamed by a
// real follower) is a 403 "unknown_permission", counted under that
// outcome, even for a token that holds the permission; it comes back when
// the catalog has it again.
func TestEngineUnknownPermission(t *testing.T) {
	fake, conn := authoritytest.Start(t)
	fol := follower.New(follower.Options{
		Client: sigilv1.NewTokenAuthorityServiceClient(conn), MaxStaleness: time.Minute, Retention: time.Minute,
		BackoffBase: 5 * time.Millisecond, BackoffMax: 20 * time.Millisecond,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = fol.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	codec, _ := token.NewCodec("")
	dec, err := decision.New(decision.Options{Codec: codec, State: fol, Leeway: 30 * time.Second, CacheSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := routes.Parse("test.yaml", []byte(policySrc))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	eng := NewEngine(Options{Policy: pol, Decider: dec, Follower: fol, Metrics: check.NewMetrics(nil), Registerer: reg}, "forwardauth")

	s := fake.Next(t)
	s.Send(t, authoritytest.BuiltinCatalog(),
		authoritytest.Chunk("e1", 10, []*sigilv1.SigningKey{authoritytest.Key("k1", sigilv1.SigningKeyState_SIGNING_KEY_STATE_ACTIVE, pub)}),
		authoritytest.SnapshotEnd("e1", 10))
	wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer wcancel()
	if err := fol.WaitApplied(wctx, 10); err != nil {
		t.Fatal(err)
	}
	id, _ := token.NewID()
	now := time.Now()
	tok, err := codec.Mint(token.Claims{ID: id, OrgID: "org-a", KeyID: "k1", IssuedAt: now.Add(-time.Hour), ExpiresAt: now.Add(time.Hour),
		Grants: []scope.Grant{{Permissions: []string{"domain:view"}}}}, priv)
	if err != nil {
		t.Fatal(err)
	}
	header := func(name string) string {
		if name == HeaderAuthorization {
			return "Bearer " + tok
		}
		return ""
	}
	decide := func() Verdict {
		t.Helper()
		v, err := eng.Decide(context.Background(), "GET", "/v5/domain/domains/example.com", header)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if v := decide(); !v.Allowed {
		t.Fatalf("with domain:view in the catalog: %+v", v)
	}
	// The authority comes back with a catalog without domain:view.
	s.Send(t, authoritytest.Catalog("domain:renew", "certificate:view"), authoritytest.Checkpoint(11, time.Now()))
	if err := fol.WaitApplied(wctx, 11); err != nil {
		t.Fatal(err)
	}
	v := decide()
	if v.Allowed || v.HTTPStatus != 403 || v.Outcome != "unknown_permission" || v.Reason != "unknown_permission" {
		t.Fatalf("route with an unknown permission: %+v", v)
	}
	if got := testutil.ToFloat64(eng.checks.WithLabelValues("domain-view", "unknown_permission")); got != 1 {
		t.Fatalf("unknown_permission count = %v", got)
	}
	s.Send(t, authoritytest.BuiltinCatalog(), authoritytest.Checkpoint(12, time.Now()))
	if err := fol.WaitApplied(wctx, 12); err != nil {
		t.Fatal(err)
	}
	if v := decide(); !v.Allowed {
		t.Fatalf("catalog restored: %+v", v)
	}
}
