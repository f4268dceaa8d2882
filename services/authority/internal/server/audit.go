package server

import (
	"context"
	"errors"
	"fmt"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// ListAuditEvents lists an organization's audit log, oldest first: the
// operator, or a PAT holding organization:tokens in its organization.
func (s *Server) ListAuditEvents(ctx context.Context, req *sigilv1.ListAuditEventsRequest) (*sigilv1.ListAuditEventsResponse, error) {
	var v violations
	checkIdent(&v, "org_id", req.GetOrgId(), true)
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
	recs, next, err := s.store.ListAudit(ctx, store.AuditFilter{OrgID: req.GetOrgId(), PageSize: size, PageToken: req.GetPageToken()})
	if errors.Is(err, store.ErrBadPageToken) {
		return nil, invalid("page_token", "not a page token from a previous response")
	}
	if err != nil {
		return nil, s.toStatus(ctx, fmt.Errorf("list audit: %w", err))
	}
	resp := &sigilv1.ListAuditEventsResponse{NextPageToken: next}
	resp.Events = make([]*sigilv1.AuditEvent, len(recs))
	for i, r := range recs {
		resp.Events[i] = auditToProto(r)
	}
	return resp, nil
}
