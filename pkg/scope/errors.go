package scope

import "strconv"

// ValidationError reports one invalid value: which field holds it, the value
// and why it is rejected. Expand returns one for the first problem found, so
// that the authority can turn it into a google.rpc.BadRequest field
// violation with errors.As.
type ValidationError struct {
	// Field is the path of the offending value in the request, such as
	// "grants", "grants[1].permissions[0]" or "resource".
	Field string
	// Value is the offending value, verbatim; empty when the problem is a
	// count or a missing value.
	Value string
	// Reason says what is wrong, in lower case.
	Reason string
}

// Error returns a lower-case message naming the field and, when there is
// one, the value (quoted, and shortened when long).
func (e *ValidationError) Error() string {
	return "scope: " + e.Description()
}

// Description returns the message of Error without the package prefix,
// for a field violation's description.
func (e *ValidationError) Description() string {
	return describe(e.Field, e.Value, e.Reason)
}

// maxQuoted bounds how much of a value an error message repeats: enough to
// recognise it, not enough to flood a log line.
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
