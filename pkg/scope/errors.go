package scope

import "strconv"

// ReasonUnknownPermission is the Reason of a ValidationError for a
// permission that is not in the catalog.
const ReasonUnknownPermission = "unknown permission"

// ValidationError reports one invalid value: which field holds it, the value
// and why it is rejected. Expand returns one for the first problem found, so
// that the authority can turn it into a google.rpc.BadRequest field
// violation with errors.As.
//
// Its messages (Error, Description) name the field and the rule only, never
// the value: a request value may be a pasted secret, and error messages end
// up in responses and logs.
type ValidationError struct {
	// Field is the path of the offending value in the request, such as
	// "grants", "grants[1].permissions[0]" or "resource".
	Field string
	// Value is the offending value, verbatim; empty when the problem is a
	// count or a missing value. It is for programs; never put it in a
	// message.
	Value string
	// Reason says what is wrong, in lower case.
	Reason string
}

// Error returns a lower-case message naming the field and the rule, never
// the value.
func (e *ValidationError) Error() string {
	return "scope: " + e.Description()
}

// Description returns the message of Error without the package prefix:
// "field: reason".
func (e *ValidationError) Description() string {
	return describe(e.Field, "", e.Reason)
}

// maxQuoted bounds how much of a value a catalog file error repeats (the
// operator's own file, never a request): enough to recognise it, not enough
// to flood a log line.
const maxQuoted = 80

func describe(field, value, reason string) string {
	if value == "" {
		return field + ": " + reason
	}
	return field + " " + quote(value) + ": " + reason
}

// quote returns v as a Go string literal, shortened to maxQuoted bytes.
func quote(v string) string {
	if len(v) <= maxQuoted {
		return strconv.Quote(v)
	}
	return strconv.Quote(v[:maxQuoted]) + "..."
}
