package server

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/grpc/metadata"

	"github.com/sigil-auth/sigil/services/authority/internal/manage"
)

// Every handler authenticates first (not in an interceptor, so that each
// RPC states in its own code which callers it admits): an anonymous or
// unknown caller learns nothing about the request's rules. Then it
// validates the request, and then the rules of package manage authorize
// and act.

// bearer extracts the credential of the authorization metadata ("" when
// there is none).
func bearer(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	switch {
	case len(vals) == 0:
		return "", nil
	case len(vals) > 1:
		return "", fmt.Errorf("%w: several authorization values", manage.ErrUnauthenticated)
	}
	v := vals[0]
	const p = "bearer "
	if len(v) <= len(p) || !strings.EqualFold(v[:len(p)], p) {
		return "", fmt.Errorf("%w: authorization is not a bearer credential", manage.ErrUnauthenticated)
	}
	cred := strings.TrimSpace(v[len(p):])
	if cred == "" {
		return "", fmt.Errorf("%w: empty bearer credential", manage.ErrUnauthenticated)
	}
	return cred, nil
}

// authenticate identifies the caller and admits it to an RPC needing a.
func (s *Server) authenticate(ctx context.Context, a manage.Access) (*manage.Caller, error) {
	cred, err := bearer(ctx)
	if err != nil {
		return nil, err
	}
	c, err := s.mgr.Authenticate(ctx, cred)
	if err != nil {
		return nil, err
	}
	if err := s.mgr.Admit(c, a); err != nil {
		return nil, err
	}
	return c, nil
}
