package server

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sigil-auth/sigil/pkg/grpcserver"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/pkg/token"
	"github.com/sigil-auth/sigil/services/authorizer/internal/decision"
)

// BenchmarkGRPC compares CheckPermission with the health check of the same
// server over loopback TCP, with 50 concurrent callers on one connection
// each way, the shape of a ghz run. The ratio of the two ns/op is the cost
// of a decision relative to a no-op RPC through the same interceptor chain.
func BenchmarkGRPC(b *testing.B) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	codec, _ := token.NewCodec("")
	id, _ := token.NewID()
	tok, err := codec.Mint(token.Claims{ID: id, OrgID: "org-a", KeyID: "k1", IssuedAt: time.Now().Add(-time.Hour), ExpiresAt: time.Now().Add(time.Hour),
		Grants: []scope.Grant{{Permissions: []string{"domain:view"}, Resources: []string{"domains/example.com"}}}}, priv)
	if err != nil {
		b.Fatal(err)
	}
	st := staticState{pub: pub}
	dec, _ := decision.New(decision.Options{Codec: codec, State: st, Leeway: 30 * time.Second, CacheSize: 1000})
	// The chain and metrics of the real authorizer: RPC metrics, decision
	// metrics, the access log at its default level, the receive bounds.
	reg := prometheus.NewRegistry()
	srv := grpcserver.New(grpcserver.Options{Registerer: reg, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)),
		MaxRecvMsgSize: MaxCheckPermissionsRequestSize, MethodMaxRecvSize: MethodMaxRecvSize()})
	srv.RegisterService(&sigilv1.AuthorizerService_ServiceDesc, New(Options{Decider: dec, Follower: st, Registerer: reg}))
	srv.SetServing(true)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	defer srv.Shutdown(time.Second)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	client := sigilv1.NewAuthorizerServiceClient(conn)
	health := healthpb.NewHealthClient(conn)
	req := &sigilv1.CheckPermissionRequest{Token: tok, Permission: "domain:view", Resource: "domains/example.com", OrgId: "org-a"}
	ctx := context.Background()
	if r, err := client.CheckPermission(ctx, req); err != nil || !r.GetAllowed() {
		b.Fatalf("setup: %v %v", r, err)
	}
	const callers = 50
	par := max(1, callers/testingProcs())

	b.Run("CheckPermission", func(b *testing.B) {
		b.SetParallelism(par)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if r, err := client.CheckPermission(ctx, req); err != nil || !r.GetAllowed() {
					b.Errorf("check: %v %v", r, err)
					return
				}
			}
		})
	})
	b.Run("Health", func(b *testing.B) {
		b.SetParallelism(par)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := health.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
					b.Errorf("health: %v", err)
					return
				}
			}
		})
	})
}
