package app

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sigil-auth/sigil/pkg/grpcserver"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/services/authorizer/internal/authoritytest"
	"github.com/sigil-auth/sigil/services/authorizer/internal/follower"
)

// TestHealthFollowsStateChanges: with the periodic check an hour away,
// health still turns SERVING once a snapshot is applied and confirmed and
// a checkpoint has told the authority's clock, because the watch also
// wakes on the follower's state changes.
func TestHealthFollowsStateChanges(t *testing.T) {
	fake, conn := authoritytest.Start(t)
	fol := follower.New(follower.Options{
		Client:       sigilv1.NewTokenAuthorityServiceClient(conn),
		Credential:   func() (string, error) { return "", nil },
		MaxStaleness: time.Minute,
		Retention:    time.Minute,
		MaxClockSkew: time.Minute,
	})
	srv := grpcserver.New(grpcserver.Options{})
	defer srv.Shutdown(0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{}, 2)
	go func() { _ = fol.Run(ctx); done <- struct{}{} }()
	go func() { watchHealth(ctx, fol, srv, slog.New(slog.DiscardHandler), time.Hour); done <- struct{}{} }()
	defer func() { cancel(); <-done; <-done }()

	hc := healthClient(t, srv)
	s := fake.Next(t)
	if st := healthOf(t, hc); st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health before the snapshot: %v", st)
	}
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	s.Send(t, authoritytest.Chunk("e1", 5, []*sigilv1.SigningKey{authoritytest.Key("k1", sigilv1.SigningKeyState_SIGNING_KEY_STATE_ACTIVE, pub)}),
		authoritytest.SnapshotEnd("e1", 5))
	// Synced and confirmed, but no checkpoint yet has told the authority's
	// clock: not ready.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, confirmed := fol.Staleness(); confirmed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("snapshot not confirmed within 10 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st := healthOf(t, hc); st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health before the first checkpoint: %v", st)
	}
	// The checkpoint at the snapshot's revision applies nothing new but
	// makes the state ready: that too must wake the watch.
	s.Send(t, authoritytest.Checkpoint(5, time.Now()))
	deadline = time.Now().Add(10 * time.Second)
	for healthOf(t, hc) != healthpb.HealthCheckResponse_SERVING {
		if time.Now().After(deadline) {
			t.Fatalf("health not SERVING 10 s after the snapshot (ready %v): the watch did not wake", fol.Ready())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// healthClient serves srv on loopback and returns a health client of it.
func healthClient(t *testing.T, srv *grpcserver.Server) healthpb.HealthClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return healthpb.NewHealthClient(cc)
}

func healthOf(t *testing.T, hc healthpb.HealthClient) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetStatus()
}
