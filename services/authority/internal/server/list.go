package server

import (
	"context"
	"errors"
	"fmt"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// ListTokens lists an organization's tokens, newest first.
func (s *Server) ListTokens(ctx context.Context, req *sigilv1.ListTokensRequest) (*sigilv1.ListTokensResponse, error) {
	var v violations
	checkIdent(&v, "org_id", req.GetOrgId(), true)
	checkIdent(&v, "created_by", req.GetCreatedBy(), false)
	if _, ok := sigilv1.TokenState_name[int32(req.GetState())]; !ok {
		v.add("state", "unknown state %d", req.GetState())
	}
	size := checkPageSize(&v, req.GetPageSize())
	checkPageToken(&v, req.GetPageToken())
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
	now := s.now()
	toks, next, err := s.store.ListTokens(ctx, store.ListFilter{
		OrgID: req.GetOrgId(), CreatedBy: req.GetCreatedBy(), State: tokenStateFromProto(req.GetState()),
		Now: now, PageSize: size, PageToken: req.GetPageToken(),
	})
	if err != nil {
		if errors.Is(err, store.ErrBadPageToken) {
			return nil, invalid("page_token", "not a page token from a previous response")
		}
		return nil, s.toStatus(ctx, fmt.Errorf("list tokens: %w", err))
	}
	resp := &sigilv1.ListTokensResponse{NextPageToken: next, Tokens: make([]*sigilv1.TokenInfo, len(toks))}
	for i, t := range toks {
		resp.Tokens[i] = tokenInfo(t, now)
	}
	return resp, nil
}
