package server

import (
	"context"
	"fmt"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// RevokeToken revokes one token: the operator any, a PAT itself, a PAT
// holding organization:tokens those of its organization. Revoking a revoked
// token returns its original revocation.
func (s *Server) RevokeToken(ctx context.Context, req *sigilv1.RevokeTokenRequest) (*sigilv1.RevokeTokenResponse, error) {
	var v violations
	checkTokenRef(&v, req.GetTokenId(), req.GetSelf())
	checkText(&v, "reason", req.GetReason(), maxReasonLen, false)
	s.checkNoSecret(&v, "reason", req.GetReason())
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
	now := s.now()
	wasRevoked := !t.RevokeTime.IsZero()
	id := t.ID
	t, rev, err := s.store.RevokeToken(ctx, id, store.AuditRecord{
		Time: now, Actor: c.actor(), OrgID: t.OrgID, Action: store.AuditTokenRevoked,
		TokenID: id, Name: t.Name, Grants: t.Grants, Reason: req.GetReason(),
	})
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	if !wasRevoked && t.RevokeRev == rev {
		s.metrics.revoked.Inc()
	}
	return &sigilv1.RevokeTokenResponse{Info: tokenInfo(t, now), Revision: rev}, nil
}

// RevokeTokens revokes, atomically, every live token of an organization or
// only those made for created_by: the operator, or a PAT holding
// organization:tokens in its organization (which may revoke itself too).
func (s *Server) RevokeTokens(ctx context.Context, req *sigilv1.RevokeTokensRequest) (*sigilv1.RevokeTokensResponse, error) {
	var v violations
	checkIdent(&v, "org_id", req.GetOrgId(), true)
	checkIdent(&v, "created_by", req.GetCreatedBy(), false)
	checkText(&v, "reason", req.GetReason(), maxReasonLen, false)
	s.checkNoSecret(&v, "reason", req.GetReason())
	if err := v.err(); err != nil {
		return nil, err
	}
	c, err := s.authenticateManager(ctx)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	if err := c.canManage(req.GetOrgId()); err != nil {
		return nil, s.toStatus(ctx, err)
	}
	n, rev, err := s.store.RevokeTokens(ctx, req.GetOrgId(), req.GetCreatedBy(), store.AuditRecord{
		Time: s.now(), Actor: c.actor(), OrgID: req.GetOrgId(), Action: store.AuditTokensRevoked, Reason: req.GetReason(),
	})
	if err != nil {
		return nil, s.toStatus(ctx, fmt.Errorf("revoke tokens: %w", err))
	}
	s.metrics.revoked.Add(float64(n))
	return &sigilv1.RevokeTokensResponse{RevokedCount: n, Revision: rev}, nil
}
