package server

import (
	"context"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/services/authority/internal/manage"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// ConfirmHistory answers an authorizer's freshness probe: whether the point
// it applied is in the store's history (canResume's rule, so that a probe
// and a reconnection never disagree) and the store's current revision.
//
// The revision is read before the history is looked at: every revocation
// acknowledged before the probe was sent was committed before this handler
// ran, so its revision is at or below the answer. The authorizer counts
// itself fresh from the probe's send time once it has applied that
// revision, which bounds how late a revocation can be applied by its own
// monotonic clock, whatever the link's delay.
func (s *Server) ConfirmHistory(ctx context.Context, req *sigilv1.ConfirmHistoryRequest) (*sigilv1.ConfirmHistoryResponse, error) {
	c, err := s.authenticate(ctx, manage.AccessWatch)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	var v violations
	checkIdent(&v, "epoch", req.GetEpoch(), true)
	if req.GetRevision() == 0 {
		v.add("revision", "required (not 0)")
	}
	if len(req.GetDigest()) != store.DigestSize {
		v.add("digest", "must be %d bytes", store.DigestSize)
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	if err := s.mgr.ConfirmHistory(c); err != nil {
		return nil, s.toStatus(ctx, err)
	}
	// Read, not the watch-fed Revision: with replicas, a revocation
	// acknowledged through another one may not have reached this one's
	// watch yet.
	rev, err := store.CurrentRevision(ctx, s.store)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	in, err := canResume(ctx, s.store, &sigilv1.WatchRevocationsRequest{
		AfterRevision: req.GetRevision(), Epoch: req.GetEpoch(), AfterDigest: req.GetDigest(),
	})
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &sigilv1.ConfirmHistoryResponse{InHistory: in, Revision: rev}, nil
}
