package server

import (
	"context"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/services/authority/internal/manage"
)

// RotateToken mints a new secret for a token and revokes the old one in the
// same transaction, with the tokens minted through it (rules:
// manage.Manager.RotateToken).
func (s *Server) RotateToken(ctx context.Context, req *sigilv1.RotateTokenRequest) (*sigilv1.RotateTokenResponse, error) {
	c, err := s.authenticate(ctx, manage.AccessManage)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	now := s.now()
	var v violations
	checkTokenRef(&v, req.GetTokenId(), req.GetSelf())
	expire := s.expiry(&v, now, req.GetExpiresAt(), req.GetTtl())
	if err := v.err(); err != nil {
		return nil, err
	}
	secret, next, rev, descendants, err := s.mgr.RotateToken(ctx, c, manage.Ref{ID: req.GetTokenId(), Self: req.GetSelf()}, expire)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	s.metrics.minted.Inc()
	s.metrics.revoked.Add(float64(1 + descendants))
	return &sigilv1.RotateTokenResponse{Token: secret, Info: tokenInfo(next, now), Revision: rev, DescendantsRevoked: descendants}, nil
}
