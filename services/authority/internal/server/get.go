package server

import (
	"context"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// GetToken describes one token: the operator any, a PAT itself (self or
// its own id), a PAT holding organization:tokens those of its organization.
func (s *Server) GetToken(ctx context.Context, req *sigilv1.GetTokenRequest) (*sigilv1.GetTokenResponse, error) {
	var v violations
	checkTokenRef(&v, req.GetTokenId(), req.GetSelf())
	if err := v.err(); err != nil {
		return nil, err
	}
	c, err := s.authenticateManager(ctx)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	t, err := s.target(ctx, c, req.GetTokenId(), req.GetSelf())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &sigilv1.GetTokenResponse{Info: tokenInfo(t, s.now())}, nil
}

// target resolves the token a token_id/self request acts on and checks the
// caller may act on it.
func (s *Server) target(ctx context.Context, c *caller, id string, self bool) (store.Token, error) {
	if self {
		if c.kind != callerPAT {
			return store.Token{}, denied("self needs a personal access token as credential")
		}
		return c.token, nil
	}
	if c.kind == callerPAT && id == c.token.ID {
		return c.token, nil
	}
	if c.kind == callerPAT && c.canManage(c.token.OrgID) != nil {
		// Check before the lookup, so that a token without the right
		// learns nothing about other tokens.
		return store.Token{}, c.canManage(c.token.OrgID)
	}
	t, err := s.store.GetToken(ctx, id)
	if err != nil {
		return store.Token{}, err
	}
	if err := c.canManage(t.OrgID); err != nil {
		return store.Token{}, err
	}
	return t, nil
}
