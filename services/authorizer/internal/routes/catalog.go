package routes

import (
	"fmt"

	"github.com/sigil-auth/sigil/pkg/scope"
)

// UnknownPermissions returns the routes whose permission is not in c, in
// file order; none when c is nil (the authority's catalog is not known).
func (p *Policy) UnknownPermissions(c *scope.Catalog) []*Route {
	if c == nil {
		return nil
	}
	var out []*Route
	for _, r := range p.Routes {
		if !c.Has(r.Permission) {
			out = append(out, r)
		}
	}
	return out
}

// UnknownPermissionError describes a route of the file at path whose
// permission is not in the authority's catalog, naming the file, the route
// and the permission.
func UnknownPermissionError(path string, r *Route) error {
	return fmt.Errorf("routes %s: routes[%d].permission (route %q): unknown permission %q (not in the authority's catalog)", path, r.Index, r.Name, r.Permission)
}

// CheckCatalog returns an UnknownPermissionError for the first route of p
// (read from path) whose permission is not in c; nil when every one is or
// c is nil.
func (p *Policy) CheckCatalog(path string, c *scope.Catalog) error {
	if bad := p.UnknownPermissions(c); len(bad) > 0 {
		return UnknownPermissionError(path, bad[0])
	}
	return nil
}
