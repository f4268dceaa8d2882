package server

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/pkg/token"
	"github.com/sigil-auth/sigil/services/authorizer/internal/decision"
	"github.com/sigil-auth/sigil/services/authorizer/internal/usage"
)

// BenchmarkCheckPermission measures the CheckPermission handler (readiness,
// validation, decision on cached claims, metrics) in process, with usage
// reporting off and on, side by side in one run: the ratio of the two is
// the cost of recording uses on the check path. Many callers at once
// (SetParallelism) check one hot token, the worst case for contention, so
// the uses all land on one token.
func BenchmarkCheckPermission(b *testing.B) {
	benchUsage(b, 1)
}

// BenchmarkCheckPermissionManyTokens is BenchmarkCheckPermission over
// 10,000 tokens checked in turn: uses spread over the buffer's shards and
// the already-recorded table.
func BenchmarkCheckPermissionManyTokens(b *testing.B) {
	benchUsage(b, 10_000)
}

func benchUsage(b *testing.B, nTokens int) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	codec, _ := token.NewCodec("")
	reqs := make([]*sigilv1.CheckPermissionRequest, nTokens)
	for i := range reqs {
		id, _ := token.NewID()
		tok, err := codec.Mint(token.Claims{ID: id, OrgID: "org-a", KeyID: "k1", IssuedAt: time.Now().Add(-time.Hour), ExpiresAt: time.Now().Add(time.Hour),
			Grants: []scope.Grant{{Permissions: []string{"domain:view"}, Resources: []string{"domains/example.com"}}}}, priv)
		if err != nil {
			b.Fatal(err)
		}
		reqs[i] = &sigilv1.CheckPermissionRequest{Token: tok, Permission: "domain:view", Resource: "domains/example.com", OrgId: "org-a"}
	}
	st := staticState{pub: pub}
	ctx := context.Background()
	for _, on := range []bool{false, true} {
		var rec decision.Recorder
		var rep *usage.Reporter
		if on {
			rep = usage.New(usage.Options{Registerer: prometheus.NewRegistry()})
			rec = rep
		}
		dec, _ := decision.New(decision.Options{Codec: codec, State: st, Leeway: 30 * time.Second, CacheSize: 2 * nTokens, Usage: rec})
		srv := New(Options{Decider: dec, Follower: st, Registerer: prometheus.NewRegistry()})
		for _, r := range reqs { // warm the claims cache: the steady state
			if resp, err := srv.CheckPermission(ctx, r); err != nil || !resp.GetAllowed() {
				b.Fatalf("setup: %v %v", resp, err)
			}
		}
		b.Run(fmt.Sprintf("usage=%s", map[bool]string{false: "off", true: "on"}[on]), func(b *testing.B) {
			b.SetParallelism(8)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					i++
					if i == len(reqs) {
						i = 0
					}
					if resp, err := srv.CheckPermission(ctx, reqs[i]); err != nil || !resp.GetAllowed() {
						b.Errorf("check: %v %v", resp, err)
						return
					}
				}
			})
		})
		if on && rep.Pending() == 0 {
			b.Fatal("usage=on recorded nothing")
		}
	}
}
