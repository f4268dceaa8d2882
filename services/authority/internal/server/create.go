package server

import (
	"context"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/services/authority/internal/manage"
)

// CreateToken mints a token (rules: manage.Manager.CreateToken).
func (s *Server) CreateToken(ctx context.Context, req *sigilv1.CreateTokenRequest) (*sigilv1.CreateTokenResponse, error) {
	c, err := s.authenticate(ctx, manage.AccessManage)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	now := s.now()
	var v violations
	checkIdent(&v, "org_id", req.GetOrgId(), true)
	checkIdent(&v, "name", req.GetName(), true)
	checkText(&v, "description", req.GetDescription(), maxDescriptionLen, true)
	checkIdent(&v, "created_by", req.GetCreatedBy(), false)
	s.checkNoSecret(&v, "org_id", req.GetOrgId())
	s.checkNoSecret(&v, "name", req.GetName())
	s.checkNoSecret(&v, "description", req.GetDescription())
	s.checkNoSecret(&v, "created_by", req.GetCreatedBy())
	grants := s.grants(&v, req.GetGrants())
	expire := s.expiry(&v, now, req.GetExpiresAt(), req.GetTtl())
	if err := v.err(); err != nil {
		return nil, err
	}
	secret, t, err := s.mgr.CreateToken(ctx, c, manage.NewToken{
		OrgID: req.GetOrgId(), Name: req.GetName(), Description: req.GetDescription(),
		CreatedBy: req.GetCreatedBy(), Grants: grants, Expire: expire,
	})
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	s.metrics.minted.Inc()
	return &sigilv1.CreateTokenResponse{Token: secret, Info: tokenInfo(t, now)}, nil
}
