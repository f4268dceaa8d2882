package app

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

// replicasClient sends ReportTokenUse to the authority replicas in turn:
// the first that answers other than UNAVAILABLE or DEADLINE_EXCEEDED
// decides (revisions and stores are shared, so any replica records the
// uses). The other methods go to the first replica; the usage reporter
// calls none of them.
type replicasClient struct {
	sigilv1.TokenAuthorityServiceClient
	all []sigilv1.TokenAuthorityServiceClient
}

// newReplicasClient returns a client over the replicas' connections.
func newReplicasClient(conns []*grpc.ClientConn) sigilv1.TokenAuthorityServiceClient {
	all := make([]sigilv1.TokenAuthorityServiceClient, len(conns))
	for i, c := range conns {
		all[i] = sigilv1.NewTokenAuthorityServiceClient(c)
	}
	if len(all) == 1 {
		return all[0]
	}
	return &replicasClient{TokenAuthorityServiceClient: all[0], all: all}
}

func (r *replicasClient) ReportTokenUse(ctx context.Context, in *sigilv1.ReportTokenUseRequest, opts ...grpc.CallOption) (*sigilv1.ReportTokenUseResponse, error) {
	var err error
	for _, c := range r.all {
		var resp *sigilv1.ReportTokenUseResponse
		resp, err = c.ReportTokenUse(ctx, in, opts...)
		switch status.Code(err) {
		case codes.Unavailable, codes.DeadlineExceeded:
			if ctx.Err() != nil {
				return nil, err
			}
			continue
		}
		return resp, err
	}
	return nil, err
}
