package server

import (
	"context"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/services/authority/internal/manage"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// RevokeToken revokes one token: the operator any, a PAT itself, a PAT
// holding organization:tokens those of its organization. Revoking a revoked
// token returns its original revocation. Tokens minted through it,
// transitively, are revoked with it (descendants_revoked).
func (s *Server) RevokeToken(ctx context.Context, req *sigilv1.RevokeTokenRequest) (*sigilv1.RevokeTokenResponse, error) {
	c, err := s.authenticate(ctx, manage.AccessManage)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	var v violations
	if req.GetToken() != "" {
		checkTokenString(&v, req.GetToken(), req.GetTokenId(), req.GetSelf())
	} else {
		checkTokenRef(&v, req.GetTokenId(), req.GetSelf())
	}
	checkText(&v, "reason", req.GetReason(), maxReasonLen, false)
	s.checkNoSecret(&v, "reason", req.GetReason())
	if err := v.err(); err != nil {
		return nil, err
	}
	var (
		t           store.Token
		rev         uint64
		descendants int64
		revoked     bool
	)
	if req.GetToken() != "" {
		t, rev, descendants, revoked, err = s.mgr.RevokeTokenString(ctx, c, req.GetToken(), req.GetReason())
	} else {
		t, rev, descendants, revoked, err = s.mgr.RevokeToken(ctx, c, manage.Ref{ID: req.GetTokenId(), Self: req.GetSelf()}, req.GetReason())
	}
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	if revoked {
		s.metrics.revoked.Inc()
	}
	s.metrics.revoked.Add(float64(descendants))
	return &sigilv1.RevokeTokenResponse{Info: tokenInfo(t, s.now()), Revision: rev, DescendantsRevoked: descendants}, nil
}

// RevokeTokens revokes, atomically, every live token of an organization or
// only those made for created_by: the operator, or a PAT holding
// organization:tokens in its organization (which may revoke itself too).
// The count includes the tokens minted through them, revoked with them.
func (s *Server) RevokeTokens(ctx context.Context, req *sigilv1.RevokeTokensRequest) (*sigilv1.RevokeTokensResponse, error) {
	c, err := s.authenticate(ctx, manage.AccessManage)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	var v violations
	checkIdent(&v, "org_id", req.GetOrgId(), true)
	checkIdent(&v, "created_by", req.GetCreatedBy(), false)
	checkText(&v, "reason", req.GetReason(), maxReasonLen, false)
	s.checkNoSecret(&v, "org_id", req.GetOrgId()) // stored in the audit record
	s.checkNoSecret(&v, "reason", req.GetReason())
	if err := v.err(); err != nil {
		return nil, err
	}
	n, rev, err := s.mgr.RevokeTokens(ctx, c, req.GetOrgId(), req.GetCreatedBy(), req.GetReason())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	s.metrics.revoked.Add(float64(n))
	return &sigilv1.RevokeTokensResponse{RevokedCount: n, Revision: rev}, nil
}
