package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// BenchmarkMintVsHealth measures, on one real authority over loopback TCP,
// durable mints per second under 50 concurrent clients, then health checks
// per second from the same 50 clients, and reports both and their ratio.
// Run with a fixed count, e.g. -benchtime=5000x.
func BenchmarkMintVsHealth(b *testing.B) {
	p := startProc(b, b.TempDir())
	ctx := p.op()
	health := healthpb.NewHealthClient(p.conn)
	const clients = 50
	var seq atomic.Int64
	run := func(n int, call func(i int64) error) time.Duration {
		var next atomic.Int64
		var wg sync.WaitGroup
		var firstErr atomic.Value
		start := time.Now()
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= int64(n) {
					if err := call(seq.Add(1)); err != nil {
						firstErr.CompareAndSwap(nil, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if err, _ := firstErr.Load().(error); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	b.ResetTimer()
	mintTime := run(b.N, func(i int64) error {
		_, err := p.client.CreateToken(ctx, mintReq("bench", fmt.Sprint("t", i), "bench"))
		return err
	})
	healthTime := run(b.N, func(int64) error {
		_, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{})
		return err
	})
	b.StopTimer()
	mints := float64(b.N) / mintTime.Seconds()
	checks := float64(b.N) / healthTime.Seconds()
	b.ReportMetric(mints, "mints/s")
	b.ReportMetric(checks, "health/s")
	b.ReportMetric(mints/checks, "mint/health")
	b.ReportMetric(0, "ns/op")
}
