package server

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/services/authority/internal/manage"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// ListTokens lists an organization's tokens, newest first.
func (s *Server) ListTokens(ctx context.Context, req *sigilv1.ListTokensRequest) (*sigilv1.ListTokensResponse, error) {
	c, err := s.authenticate(ctx, manage.AccessManage)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	var v violations
	checkIdent(&v, "org_id", req.GetOrgId(), true)
	checkIdent(&v, "created_by", req.GetCreatedBy(), false)
	if _, ok := sigilv1.TokenState_name[int32(req.GetState())]; !ok {
		v.add("state", "unknown state")
	}
	size := checkPageSize(&v, req.GetPageSize())
	checkPageToken(&v, req.GetPageToken())
	unusedSince := optionalTime(&v, "unused_since", req.GetUnusedSince())
	expireBefore := optionalTime(&v, "expire_before", req.GetExpireBefore())
	if err := v.err(); err != nil {
		return nil, err
	}
	now := s.now()
	toks, next, err := s.mgr.ListTokens(ctx, c, store.ListFilter{
		OrgID: req.GetOrgId(), CreatedBy: req.GetCreatedBy(), State: tokenStateFromProto(req.GetState()),
		Now: now, PageSize: size, PageToken: req.GetPageToken(),
		UnusedSince: unusedSince, ExpireBefore: expireBefore,
	})
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	resp := &sigilv1.ListTokensResponse{NextPageToken: next, Tokens: make([]*sigilv1.TokenInfo, len(toks))}
	for i, t := range toks {
		resp.Tokens[i] = tokenInfo(t, now)
	}
	return resp, nil
}

// optionalTime returns a filter time: zero when unset.
func optionalTime(v *violations, field string, t *timestamppb.Timestamp) time.Time {
	if t == nil {
		return time.Time{}
	}
	if err := t.CheckValid(); err != nil || t.GetSeconds() <= 0 {
		v.add(field, "not a valid time")
		return time.Time{}
	}
	return t.AsTime()
}
