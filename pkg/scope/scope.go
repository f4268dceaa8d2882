// Package scope holds the permission model of Sigil: the catalog of
// permissions and their implications, grants, their validation, the subset
// test that forbids escalation, and the matching of a request against grants.
//
// Names are compared byte for byte. A permission is "product:action"; a
// resource is a path of collection/id pairs such as "domains/example.com" or
// "domains/example.com/records/www" (see ValidateResource). A grant on a
// resource covers that resource and everything under it, on segment
// boundaries only.
package scope

// Grant is a set of permissions, optionally limited to a set of resources.
// An empty Resources means every resource of the organization.
type Grant struct {
	Permissions []string
	Resources   []string
}

// Result is the outcome of matching a request against grants.
type Result int

const (
	// Allowed means a grant covers the permission on the resource.
	Allowed Result = iota
	// PermissionNotGranted means no grant carries the permission.
	PermissionNotGranted
	// ResourceNotGranted means a grant carries the permission, but none
	// covers the resource (or the request has no resource and every grant
	// with the permission is limited to resources, or the requested resource
	// is not a well-formed resource name).
	ResourceNotGranted
)

// String returns the name of the result, for logs and test failures.
func (r Result) String() string {
	switch r {
	case Allowed:
		return "allowed"
	case PermissionNotGranted:
		return "permission not granted"
	case ResourceNotGranted:
		return "resource not granted"
	default:
		return "unknown result"
	}
}

// Permission is one entry of a catalog.
type Permission struct {
	Name        string   // product:action
	Product     string   // product part of Name
	Description string   // what it allows
	Implies     []string // permissions directly implied, sorted
}

// Limits on grants, checked by Expand. They bound the size of a token and
// the cost of Match and Subset.
const (
	// MaxGrants is the largest number of grants Expand accepts.
	MaxGrants = 64
	// MaxPermissionsPerGrant is the largest number of permissions a grant
	// may list (before implications are expanded).
	MaxPermissionsPerGrant = 64
	// MaxResourcesPerGrant is the largest number of resources a grant may
	// list.
	MaxResourcesPerGrant = 256
)
