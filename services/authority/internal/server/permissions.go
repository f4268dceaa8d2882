package server

import (
	"context"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/services/authority/internal/manage"
)

// ListPermissions lists the permission catalog to the operator and any PAT.
func (s *Server) ListPermissions(ctx context.Context, _ *sigilv1.ListPermissionsRequest) (*sigilv1.ListPermissionsResponse, error) {
	c, err := s.authenticate(ctx, manage.AccessManage)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	ps, err := s.mgr.ListPermissions(c)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	resp := &sigilv1.ListPermissionsResponse{Permissions: make([]*sigilv1.Permission, len(ps))}
	for i, p := range ps {
		resp.Permissions[i] = &sigilv1.Permission{Name: p.Name, Product: p.Product, Description: p.Description, Implies: p.Implies}
	}
	return resp, nil
}
