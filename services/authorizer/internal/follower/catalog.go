package follower

import (
	"fmt"
	"slices"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/pkg/scope"
)

// MaxCatalogPermissions bounds the permissions of a streamed catalog; a
// larger one is malformed.
const MaxCatalogPermissions = 1 << 14

// Catalog returns the authority's permission catalog, as the latest stream
// sent it, or nil when no stream has sent one yet (or the authority predates
// it). The catalog is immutable. Nil means "not known": the check APIs then
// do not refuse permissions as unknown; they are not ready before the
// first snapshot anyway, and an authority that streams no catalog leaves
// an unknown permission an ordinary PERMISSION_NOT_GRANTED denial.
func (f *Follower) Catalog() *scope.Catalog { return f.catalog.Load() }

// applyCatalog replaces the catalog with a streamed one. A malformed one
// is counted and drops the stream (the previous catalog stays).
func (f *Follower) applyCatalog(pc *sigilv1.PermissionCatalog) error {
	c, err := parseCatalog(pc)
	if err != nil {
		f.malformed.Add(1)
		f.logger.Warn("malformed permission catalog on the revocation stream; reconnecting", "error", err.Error())
		return fmt.Errorf("%w: %w", errProtocol, err)
	}
	old := f.catalog.Swap(c)
	if old != nil && sameNames(old, c) {
		return nil
	}
	f.logger.Info("permission catalog received", "permissions", len(pc.GetPermissions()), "changed", old != nil)
	if f.opts.OnCatalog != nil {
		f.opts.OnCatalog(c)
	}
	return nil
}

// parseCatalog builds a catalog from its stream message, strictly: at least
// one and at most MaxCatalogPermissions permissions, each well formed
// (scope.NewCatalog).
func parseCatalog(pc *sigilv1.PermissionCatalog) (*scope.Catalog, error) {
	ps := pc.GetPermissions()
	if len(ps) == 0 {
		return nil, fmt.Errorf("empty permission catalog")
	}
	if len(ps) > MaxCatalogPermissions {
		return nil, fmt.Errorf("permission catalog of %d permissions, more than %d", len(ps), MaxCatalogPermissions)
	}
	perms := make([]scope.Permission, len(ps))
	for i, p := range ps {
		perms[i] = scope.Permission{Name: p.GetName(), Description: p.GetDescription(), Implies: p.GetImplies()}
	}
	c, err := scope.NewCatalog(perms)
	if err != nil {
		return nil, fmt.Errorf("permission catalog: %w", err)
	}
	return c, nil
}

// sameNames reports whether a and b have the same permission names.
func sameNames(a, b *scope.Catalog) bool {
	an, bn := a.Permissions(), b.Permissions()
	return slices.EqualFunc(an, bn, func(x, y scope.Permission) bool { return x.Name == y.Name })
}
