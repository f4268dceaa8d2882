package server

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"sync"
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

// usageServers returns nTokens check requests and two CheckPermission
// servers over them, with usage reporting off ([0]) and on ([1]), their
// claims caches warm (the steady state), and the reporter of [1].
func usageServers(b *testing.B, nTokens int) ([]*sigilv1.CheckPermissionRequest, [2]sigilv1.AuthorizerServiceServer, *usage.Reporter) {
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
	rep := usage.New(usage.Options{Registerer: prometheus.NewRegistry()})
	var srvs [2]sigilv1.AuthorizerServiceServer
	for i, rec := range []decision.Recorder{nil, rep} {
		dec, _ := decision.New(decision.Options{Codec: codec, State: st, Leeway: 30 * time.Second, CacheSize: 2 * nTokens, Usage: rec})
		srvs[i] = New(Options{Decider: dec, Follower: st, Registerer: prometheus.NewRegistry()})
		for _, r := range reqs {
			if resp, err := srvs[i].CheckPermission(context.Background(), r); err != nil || !resp.GetAllowed() {
				b.Fatalf("setup: %v %v", resp, err)
			}
		}
	}
	return reqs, srvs, rep
}

func benchUsage(b *testing.B, nTokens int) {
	reqs, srvs, rep := usageServers(b, nTokens)
	ctx := context.Background()
	for i, name := range []string{"usage=off", "usage=on"} {
		srv := srvs[i]
		b.Run(name, func(b *testing.B) {
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
	}
	if rep.Pending() == 0 {
		b.Fatal("usage=on recorded nothing")
	}
}

// BenchmarkCheckPermissionUsageCost interleaves the two servers of
// BenchmarkCheckPermission call by call, each caller alternating between
// reporting off and on and timing every call, so that the load of a shared
// machine weighs on both alike. It reports each side's mean ns per call
// and the cost of reporting in percent of the check (cost-%).
func BenchmarkCheckPermissionUsageCost(b *testing.B) {
	for _, n := range []int{1, 10_000} {
		b.Run(fmt.Sprintf("tokens=%d", n), func(b *testing.B) {
			reqs, srvs, rep := usageServers(b, n)
			ctx := context.Background()
			var mu sync.Mutex
			var total [2]time.Duration
			var calls [2]int64
			b.SetParallelism(8)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				var sum [2]time.Duration
				var cnt [2]int64
				i := 0
				for pb.Next() {
					i++
					side, r := i&1, reqs[(i>>1)%len(reqs)]
					start := time.Now()
					resp, err := srvs[side].CheckPermission(ctx, r)
					sum[side] += time.Since(start)
					cnt[side]++
					if err != nil || !resp.GetAllowed() {
						b.Errorf("check: %v %v", resp, err)
						return
					}
				}
				mu.Lock()
				for s := range 2 {
					total[s] += sum[s]
					calls[s] += cnt[s]
				}
				mu.Unlock()
			})
			if calls[0] == 0 || calls[1] == 0 {
				return
			}
			off := float64(total[0]) / float64(calls[0])
			on := float64(total[1]) / float64(calls[1])
			b.ReportMetric(off, "off-ns/call")
			b.ReportMetric(on, "on-ns/call")
			b.ReportMetric((on/off-1)*100, "cost-%")
			if rep.Pending() == 0 {
				b.Fatal("usage=on recorded nothing")
			}
		})
	}
}
