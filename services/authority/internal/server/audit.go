package server

import (
	"context"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/services/authority/internal/manage"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// ListAuditEvents lists an organization's audit log, oldest first: the
// operator, or a PAT holding organization:tokens in its organization.
func (s *Server) ListAuditEvents(ctx context.Context, req *sigilv1.ListAuditEventsRequest) (*sigilv1.ListAuditEventsResponse, error) {
	c, err := s.authenticate(ctx, manage.AccessManage)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	var v violations
	checkIdent(&v, "org_id", req.GetOrgId(), true)
	size := checkPageSize(&v, req.GetPageSize())
	checkPageToken(&v, req.GetPageToken())
	if err := v.err(); err != nil {
		return nil, err
	}
	recs, next, err := s.mgr.ListAudit(ctx, c, store.AuditFilter{OrgID: req.GetOrgId(), PageSize: size, PageToken: req.GetPageToken()})
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	resp := &sigilv1.ListAuditEventsResponse{NextPageToken: next, Events: make([]*sigilv1.AuditEvent, len(recs))}
	for i, r := range recs {
		resp.Events[i] = auditToProto(r)
	}
	return resp, nil
}
