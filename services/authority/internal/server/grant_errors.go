package server

import (
	"errors"
	"strings"

	"github.com/sigil-auth/sigil/pkg/scope"
)

// grantViolation names the field and the problem of a scope validation
// error (the field path pkg/scope reports, such as grants[1].permissions[0]).
func grantViolation(err error) (field, desc string) {
	var ve *scope.ValidationError
	if errors.As(err, &ve) {
		field = ve.Field
		if field == "" {
			field = "grants"
		}
		return field, ve.Description()
	}
	return "grants", strings.TrimPrefix(err.Error(), "scope: ")
}
