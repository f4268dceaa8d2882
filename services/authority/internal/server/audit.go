package server

import (
	"context"
	"fmt"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

// ListAuditEvents lists an organization's audit log, oldest first: the
// operator, or a PAT holding organization:tokens in its organization.
func (s *Server) ListAuditEvents(ctx context.Context, req *sigilv1.ListAuditEventsRequest) (*sigilv1.ListAuditEventsResponse, error) {
	var v violations
	checkIdent(&v, "org_id", req.GetOrgId(), true)
	size := checkPageSize(&v, req.GetPageSize())
	after := decodeAuditPage(&v, req.GetPageToken())
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
	recs, err := s.store.ListAudit(ctx, req.GetOrgId(), after, size+1)
	if err != nil {
		return nil, s.toStatus(ctx, fmt.Errorf("list audit: %w", err))
	}
	resp := &sigilv1.ListAuditEventsResponse{}
	if len(recs) > size {
		recs = recs[:size]
		resp.NextPageToken = encodeAuditPage(recs[len(recs)-1].Revision)
	}
	resp.Events = make([]*sigilv1.AuditEvent, len(recs))
	for i, r := range recs {
		resp.Events[i] = auditToProto(r)
	}
	return resp, nil
}
