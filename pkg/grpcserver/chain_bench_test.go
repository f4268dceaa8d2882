package grpcserver

import (
	"context"
	"io"
	"log/slog"
	"net"
	"runtime"
	"testing"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// BenchmarkChain measures what each interceptor of the chain costs: the
// same Health.Check over loopback TCP, 50 concurrent callers on one
// connection, against a bare grpc-go server and servers with one more
// interceptor each, up to the whole chain that New builds. Compare the
// sub-benchmarks of one run (BENCHMARKS.md).
func BenchmarkChain(b *testing.B) {
	quiet := slog.New(slog.NewJSONHandler(io.Discard, nil)) // info: OK calls are not logged
	rec := recovery.UnaryServerInterceptor()
	metrics := func() grpc.UnaryServerInterceptor {
		m := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram())
		prometheus.NewRegistry().MustRegister(m)
		return m.UnaryServerInterceptor()
	}
	chains := []struct {
		name  string
		chain func() []grpc.UnaryServerInterceptor
	}{
		{"bare", func() []grpc.UnaryServerInterceptor { return nil }},
		{"recovery", func() []grpc.UnaryServerInterceptor { return []grpc.UnaryServerInterceptor{rec} }},
		{"access_log", func() []grpc.UnaryServerInterceptor {
			return []grpc.UnaryServerInterceptor{accessLog{logger: quiet}.unary}
		}},
		{"metrics", func() []grpc.UnaryServerInterceptor { return []grpc.UnaryServerInterceptor{metrics()} }},
	}
	for _, c := range chains {
		b.Run(c.name, func(b *testing.B) {
			srv := grpc.NewServer(grpc.ChainUnaryInterceptor(c.chain()...))
			hs := health.NewServer()
			healthpb.RegisterHealthServer(srv, hs)
			benchHealth(b, srv.Serve, srv.Stop)
		})
	}
	b.Run("full_chain", func(b *testing.B) {
		srv := New(Options{Logger: quiet, Registerer: prometheus.NewRegistry()})
		srv.SetServing(true)
		benchHealth(b, srv.Serve, func() { srv.Shutdown(0) })
	})
}

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
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
