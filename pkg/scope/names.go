package scope

// Syntax of names.
//
// A permission is "product:action", each part a lower-case letter followed
// by at most 31 of [a-z0-9_-].
//
// A resource is a path of collection/id pairs, such as "domains/example.com"
// or "domains/example.com/records/www". It is strict so that two spellings
// never name the same thing and no spelling escapes its parent:
//   - at most MaxResourceLen bytes;
//   - an even number (at least two) of segments separated by single '/':
//     no leading or trailing '/', no empty segment;
//   - collection segments (odd positions) are a lower-case letter followed
//     by [a-z0-9_-];
//   - id segments (even positions) use only A-Z a-z 0-9 and . _ ~ : @ + -,
//     and are neither "." nor "..".
//
// No wildcards, no percent-encoding, no spaces, no control or non-ASCII
// bytes. Ids are case-sensitive: a caller that names domains must use one
// case (lower) both when minting and when checking.

const (
	// MaxResourceLen is the longest resource name, in bytes.
	MaxResourceLen = 512
	// maxNamePart is the longest product or action name, in bytes.
	maxNamePart = 32
)

// Reasons, constant so that checking allocates nothing.
const (
	reasonEmpty           = "must not be empty"
	reasonPermissionForm  = "must be product:action"
	reasonProductSyntax   = "product must be a lower-case letter followed by at most 31 of a-z 0-9 _ -"
	reasonActionSyntax    = "action must be a lower-case letter followed by at most 31 of a-z 0-9 _ -"
	reasonResourceTooLong = "longer than 512 bytes"
	reasonEmptySegment    = "empty path segment (leading, trailing or doubled /)"
	reasonOddSegments     = "must be collection/id pairs (an even number of segments)"
	reasonCollection      = "collection must be a lower-case letter followed by a-z 0-9 _ -"
	reasonID              = "id may only contain A-Z a-z 0-9 . _ ~ : @ + -"
	reasonDotID           = `id must not be "." or ".."`
)

// ValidatePermission checks the syntax of a permission name ("product:action")
// and returns a *ValidationError with Field "permission" when it is wrong. It
// does not consult a catalog.
func ValidatePermission(permission string) error {
	if r := permissionReason(permission); r != "" {
		return &ValidationError{Field: "permission", Value: permission, Reason: r}
	}
	return nil
}

// ValidateResource checks the syntax of a resource name (see the package
// documentation of the rules) and returns a *ValidationError with Field
// "resource" when it is wrong.
func ValidateResource(resource string) error {
	if r := resourceReason(resource); r != "" {
		return &ValidationError{Field: "resource", Value: resource, Reason: r}
	}
	return nil
}

// permissionReason returns why p is not a permission name, or "".
func permissionReason(p string) string {
	if p == "" {
		return reasonEmpty
	}
	colon := -1
	for i := 0; i < len(p); i++ {
		if p[i] == ':' {
			if colon >= 0 {
				return reasonPermissionForm
			}
			colon = i
		}
	}
	if colon < 0 {
		return reasonPermissionForm
	}
	if !namePartOK(p[:colon]) {
		return reasonProductSyntax
	}
	if !namePartOK(p[colon+1:]) {
		return reasonActionSyntax
	}
	return ""
}

// namePartOK reports whether s is a product or action name.
func namePartOK(s string) bool {
	if len(s) == 0 || len(s) > maxNamePart || !isLower(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if !isCollectionByte(s[i]) {
			return false
		}
	}
	return true
}

// resourceReason returns why r is not a resource name, or "". It allocates
// nothing: Match calls it on every request.
func resourceReason(r string) string {
	if r == "" {
		return reasonEmpty
	}
	if len(r) > MaxResourceLen {
		return reasonResourceTooLong
	}
	segments := 0
	start := 0
	for i := 0; i <= len(r); i++ {
		if i < len(r) && r[i] != '/' {
			continue
		}
		seg := r[start:i]
		start = i + 1
		if seg == "" {
			return reasonEmptySegment
		}
		if segments%2 == 0 {
			if !isLower(seg[0]) {
				return reasonCollection
			}
			for j := 1; j < len(seg); j++ {
				if !isCollectionByte(seg[j]) {
					return reasonCollection
				}
			}
		} else {
			if seg == "." || seg == ".." {
				return reasonDotID
			}
			for j := 0; j < len(seg); j++ {
				if !isIDByte(seg[j]) {
					return reasonID
				}
			}
		}
		segments++
	}
	if segments%2 != 0 {
		return reasonOddSegments
	}
	return ""
}

func isLower(c byte) bool { return 'a' <= c && c <= 'z' }

func isCollectionByte(c byte) bool {
	return isLower(c) || '0' <= c && c <= '9' || c == '_' || c == '-'
}

func isIDByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '.', '_', '~', ':', '@', '+', '-':
		return true
	}
	return false
}
