package server

import (
	"errors"
	"strings"

	"github.com/sigil-auth/sigil/pkg/scope"
)

// grantViolation names the field (the path pkg/scope reports, such as
// grants[1].permissions[0]) and the rule of a scope validation error, never
// the value: a pasted token would otherwise land in the message and the
// logs.
func grantViolation(err error) (field, desc string) {
	var ve *scope.ValidationError
	if errors.As(err, &ve) {
		field = ve.Field
		if field == "" {
			field = "grants"
		}
		if ve.Reason == scope.ReasonUnknownPermission {
			return field, ve.Reason + "; see ListPermissions"
		}
		return field, ve.Reason
	}
	return "grants", strings.TrimPrefix(err.Error(), "scope: ")
}
