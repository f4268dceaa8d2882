package grpcserver

import (
	"context"
	"io"
	"log/slog"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/stats"
)

// BenchmarkChain measures what the chain costs: the same Health.Check over
// loopback TCP, 50 concurrent callers on one connection, against a bare
// grpc-go server, servers with one piece each (a no-op stats handler, the
// recovery interceptor, go-grpc-middleware's Prometheus interceptor that
// the chain's metrics replaced), and the whole chain New builds, with and
// without metrics and with a per-method size bound on the method. Compare
// the sub-benchmarks of one run (BENCHMARKS.md).
func BenchmarkChain(b *testing.B) {
	quiet := slog.New(slog.NewJSONHandler(io.Discard, nil)) // info: OK calls are not logged
	rec := recovery.UnaryServerInterceptor()
	grpcpromMetrics := func() grpc.UnaryServerInterceptor {
		m := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram())
		prometheus.NewRegistry().MustRegister(m)
		return m.UnaryServerInterceptor()
	}
	servers := []struct {
		name string
		opts func() []grpc.ServerOption
	}{
		{"bare", func() []grpc.ServerOption { return nil }},
		{"stats_handler", func() []grpc.ServerOption { return []grpc.ServerOption{grpc.StatsHandler(nopStats{})} }},
		{"recovery", func() []grpc.ServerOption { return []grpc.ServerOption{grpc.UnaryInterceptor(rec)} }},
		{"grpcprom_metrics", func() []grpc.ServerOption { return []grpc.ServerOption{grpc.UnaryInterceptor(grpcpromMetrics())} }},
	}
	for _, c := range servers {
		b.Run(c.name, func(b *testing.B) {
			srv := grpc.NewServer(c.opts()...)
			hs := health.NewServer()
			healthpb.RegisterHealthServer(srv, hs)
			benchHealth(b, srv.Serve, srv.Stop)
		})
	}
	chains := []struct {
		name string
		opts func() Options
	}{
		{"full_chain", func() Options { return Options{Logger: quiet, Registerer: prometheus.NewRegistry()} }},
		{"full_chain_without_metrics", func() Options { return Options{Logger: quiet} }},
		{"full_chain_with_method_bound", func() Options {
			return Options{Logger: quiet, Registerer: prometheus.NewRegistry(),
				MethodMaxRecvSize: map[string]int{"/grpc.health.v1.Health/Check": 1024}}
		}},
	}
	for _, c := range chains {
		b.Run(c.name, func(b *testing.B) {
			srv := New(c.opts())
			srv.SetServing(true)
			benchHealth(b, srv.Serve, func() { srv.Shutdown(0) })
		})
	}
}

// nopStats is a stats handler that does nothing: what grpc-go spends on
// any installed handler.
type nopStats struct{}

func (nopStats) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context   { return ctx }
func (nopStats) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (nopStats) HandleConn(context.Context, stats.ConnStats)                       {}
func (nopStats) HandleRPC(context.Context, stats.RPCStats)                         {}

func benchHealth(b *testing.B, serve func(net.Listener) error, stop func()) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = serve(lis) }()
	defer stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)
	ctx := context.Background()
	if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(max(1, 50/runtime.GOMAXPROCS(0)))
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU(b)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	// CPU time (client and server, all threads) per call: on a shared
	// machine it moves far less than the wall time per call.
	b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
}

// processCPU returns the CPU time (user and system) the process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
