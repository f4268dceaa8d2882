package server

import (
	"context"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/services/authority/internal/manage"
)

// GetToken describes one token: the operator any, a PAT itself (self or
// its own id), a PAT holding organization:tokens those of its organization.
func (s *Server) GetToken(ctx context.Context, req *sigilv1.GetTokenRequest) (*sigilv1.GetTokenResponse, error) {
	c, err := s.authenticate(ctx, manage.AccessManage)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	var v violations
	checkTokenRef(&v, req.GetTokenId(), req.GetSelf())
	if err := v.err(); err != nil {
		return nil, err
	}
	t, err := s.mgr.GetToken(ctx, c, manage.Ref{ID: req.GetTokenId(), Self: req.GetSelf()})
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &sigilv1.GetTokenResponse{Info: tokenInfo(t, s.now())}, nil
}
