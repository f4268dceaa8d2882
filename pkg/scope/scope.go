// Package scope holds the permission model of Sigil: the catalog of
// permissions and their implications, grants, their validation, the subset
// test that forbids escalation, and the matching of a request against grants.
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
	// with the permission is limited to resources).
	ResourceNotGranted
)

// Permission is one entry of a catalog.
type Permission struct {
	Name        string   // product:action
	Product     string   // product part of Name
	Description string   // what it allows
	Implies     []string // permissions directly implied
}

// Catalog is a set of permissions with their implications.
type Catalog struct {
	// Implementation: pkg/scope owner.
}

// Builtin returns the built-in catalog of the API contract.
func Builtin() *Catalog { panic("scope: unimplemented") }

// LoadCatalogFile returns the built-in catalog extended by the products and
// actions of a catalog file.
func LoadCatalogFile(path string) (*Catalog, error) { panic("scope: unimplemented") }

// Permissions returns every permission, sorted by name.
func (c *Catalog) Permissions() []Permission { panic("scope: unimplemented") }

// Expand validates grants against the catalog and returns them normalized,
// with implications expanded (what a token carries).
func (c *Catalog) Expand(grants []Grant) ([]Grant, error) { panic("scope: unimplemented") }

// ValidateResource checks the syntax of a resource name.
func ValidateResource(resource string) error { panic("scope: unimplemented") }

// ValidatePermission checks the syntax of a permission name.
func ValidatePermission(permission string) error { panic("scope: unimplemented") }

// Subset reports whether every request allowed by child is allowed by parent.
func Subset(child, parent []Grant) bool { panic("scope: unimplemented") }

// Match decides a (permission, resource) request against grants.
func Match(grants []Grant, permission, resource string) Result { panic("scope: unimplemented") }
