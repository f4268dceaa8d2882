package app

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

// recordingAuthority answers ReportTokenUse with the number of uses sent.
type recordingAuthority struct {
	sigilv1.UnimplementedTokenAuthorityServiceServer
	calls int
}

func (r *recordingAuthority) ReportTokenUse(_ context.Context, in *sigilv1.ReportTokenUseRequest) (*sigilv1.ReportTokenUseResponse, error) {
	r.calls++
	return &sigilv1.ReportTokenUseResponse{Recorded: int32(len(in.GetUses()))}, nil
}

// TestReplicasClientSkipsUnreachableReplica: with the first replica down
// (nothing listens: UNAVAILABLE), a usage report goes to the second.
func TestReplicasClientSkipsUnreachableReplica(t *testing.T) {
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	rec := &recordingAuthority{}
	sigilv1.RegisterTokenAuthorityServiceServer(srv, rec)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()

	var conns []*grpc.ClientConn
	for _, addr := range []string{deadAddr, lis.Addr().String()} {
		c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := newReplicasClient(conns).ReportTokenUse(ctx, &sigilv1.ReportTokenUseRequest{Uses: []*sigilv1.TokenUse{{TokenId: "a"}, {TokenId: "b"}}})
	if err != nil {
		t.Fatalf("ReportTokenUse with the first replica down: %v", err)
	}
	if resp.GetRecorded() != 2 || rec.calls != 1 {
		t.Fatalf("recorded %d in %d calls to the live replica, want 2 in 1", resp.GetRecorded(), rec.calls)
	}
}
