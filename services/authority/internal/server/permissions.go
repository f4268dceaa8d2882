package server

import (
	"context"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

// ListPermissions lists the permission catalog to any authenticated caller.
func (s *Server) ListPermissions(ctx context.Context, _ *sigilv1.ListPermissionsRequest) (*sigilv1.ListPermissionsResponse, error) {
	if _, err := s.authenticate(ctx); err != nil {
		return nil, s.toStatus(ctx, err)
	}
	ps := s.catalog.Permissions()
	resp := &sigilv1.ListPermissionsResponse{Permissions: make([]*sigilv1.Permission, len(ps))}
	for i, p := range ps {
		resp.Permissions[i] = &sigilv1.Permission{Name: p.Name, Product: p.Product, Description: p.Description, Implies: p.Implies}
	}
	return resp, nil
}
