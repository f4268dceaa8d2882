//go:build unix

package server

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
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

// BenchmarkCheckPermissionUsageCost measures the throughput cost of usage
// reporting at full CheckPermission load, side by side: the two servers of
// BenchmarkCheckPermission (reporting off and on) take turns in short
// rounds (50ms each, the order flipped every pair so that neither side
// always goes first), each round with 16 callers in a closed loop, which
// keeps every core busy. Each side is charged the CPU time the process
// used during its rounds (getrusage: user + system, every goroutine and
// the GC included). At full load throughput is the cores divided by the
// CPU time per check, so the ratio of CPU per check is the throughput
// ratio; unlike wall time, it does not count the time other processes of
// a shared machine took the cores. Each pair of rounds gives a ratio; it
// reports the medians of each side's CPU ns per check and the cost, the
// median ratio (cost-%: 100 × (on/off − 1)), so that a burst of load in
// one round does not move it. Run it with -benchtime 1x (each iteration
// is a whole measurement of 40 pairs).
func BenchmarkCheckPermissionUsageCost(b *testing.B) {
	const (
		callers = 16
		round   = 50 * time.Millisecond
		pairs   = 40
	)
	for _, n := range []int{1, 10_000} {
		b.Run(fmt.Sprintf("tokens=%d", n), func(b *testing.B) {
			reqs, srvs, rep := usageServers(b, n)
			ctx := context.Background()
			// runRound runs one round on a side and returns its CPU ns per
			// check.
			runRound := func(side int) float64 {
				var stop atomic.Bool
				var done atomic.Int64
				var wg sync.WaitGroup
				start := cpuTime(b)
				for g := range callers {
					wg.Go(func() {
						k := 0
						for i := g * 613; !stop.Load(); i++ {
							resp, err := srvs[side].CheckPermission(ctx, reqs[i%len(reqs)])
							if err != nil || !resp.GetAllowed() {
								b.Errorf("check: %v %v", resp, err)
								return
							}
							k++
						}
						done.Add(int64(k))
					})
				}
				time.Sleep(round)
				stop.Store(true)
				wg.Wait()
				return float64((cpuTime(b) - start).Nanoseconds()) / float64(max(1, done.Load()))
			}
			var ratios, offs, ons []float64
			b.ResetTimer()
			for b.Loop() {
				for p := range pairs {
					var ns [2]float64
					first := p & 1
					ns[first] = runRound(first)
					ns[1-first] = runRound(1 - first)
					offs, ons = append(offs, ns[0]), append(ons, ns[1])
					ratios = append(ratios, ns[1]/ns[0])
				}
			}
			b.ReportMetric(median(offs), "off-cpu-ns/check")
			b.ReportMetric(median(ons), "on-cpu-ns/check")
			b.ReportMetric(100*(median(ratios)-1), "cost-%")
			if rep.Pending() == 0 {
				b.Fatal("usage=on recorded nothing")
			}
		})
	}
}

// median returns the median of xs (sorting them).
func median(xs []float64) float64 {
	sort.Float64s(xs)
	n := len(xs)
	if n%2 == 1 {
		return xs[n/2]
	}
	return (xs[n/2-1] + xs[n/2]) / 2
}

// cpuTime returns the CPU time (user and system) the process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
