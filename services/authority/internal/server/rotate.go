package server

import (
	"context"
	"fmt"
	"time"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// RotateToken mints a new secret with the same name, description, grants and
// creator, and revokes the old token in the same transaction. Callers as for
// RevokeToken; a PAT caller gets the new secret, so the rotated token's grants
// must be within its own and the new expiry no later than its own (a token
// rotating itself therefore cannot extend its life). The new token's parent
// is the calling PAT, or the old token's parent when the operator rotates.
func (s *Server) RotateToken(ctx context.Context, req *sigilv1.RotateTokenRequest) (*sigilv1.RotateTokenResponse, error) {
	now := s.now()
	var v violations
	checkTokenRef(&v, req.GetTokenId(), req.GetSelf())
	expire := s.expiry(&v, now, req.GetExpiresAt(), req.GetTtl())
	if err := v.err(); err != nil {
		return nil, err
	}
	c, err := s.authenticateManager(ctx)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	old, err := s.target(ctx, c, req.GetTokenId(), req.GetSelf())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	if err := c.checkNoEscalation(old.Grants, expire); err != nil {
		return nil, s.toStatus(ctx, err)
	}
	if old.StateAt(now) != store.StateActive {
		return nil, s.toStatus(ctx, fmt.Errorf("token %s: %w", old.ID, store.ErrNotActive))
	}
	parent := old.ParentID
	if c.kind == callerPAT {
		parent = c.token.ID
	}
	next := store.Token{
		OrgID: old.OrgID, Name: old.Name, Description: old.Description, Grants: old.Grants,
		CreatedBy: old.CreatedBy, ParentID: parent, CreateTime: now.Truncate(time.Second), ExpireTime: expire,
	}
	secret, next, rev, err := s.mintAndStore(ctx, next, func(t store.Token) (uint64, error) {
		return s.store.RotateToken(ctx, old.ID, t, store.AuditRecord{
			Time: now, Actor: c.actor(), OrgID: old.OrgID, Action: store.AuditTokenRotated,
			TokenID: old.ID, Name: old.Name, Grants: old.Grants, Reason: "rotated to " + t.ID,
		})
	})
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	s.metrics.minted.Inc()
	s.metrics.revoked.Inc()
	return &sigilv1.RotateTokenResponse{Token: secret, Info: tokenInfo(next, now), Revision: rev}, nil
}
