package authz

import (
	"context"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

// fakeChecker answers with resp/err and records the last request.
type fakeChecker struct {
	resp *sigilv1.CheckPermissionResponse
	err  error
	last *(*sigilv1.CheckPermissionRequest)
}

func (f fakeChecker) CheckPermission(_ context.Context, req *sigilv1.CheckPermissionRequest) (*sigilv1.CheckPermissionResponse, error) {
	if f.last != nil {
		*f.last = req
	}
	return f.resp, f.err
}
