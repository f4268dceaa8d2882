package routes

import (
	"sync/atomic"

	"github.com/sigil-auth/sigil/pkg/scope"
)

// Live is a route policy read from a file that can be read again while
// serving (on SIGHUP): requests in flight keep the policy they started
// with, later ones get the new one. A file that fails to load, or that
// names a permission not in the authority's catalog (once known), leaves
// the current policy in place.
type Live struct {
	path    string
	cur     atomic.Pointer[Policy]
	catalog atomic.Pointer[scope.Catalog] // the authority's, once known
}

// LoadLive reads the policy file at path.
func LoadLive(path string) (*Live, error) {
	p, err := Load(path)
	if err != nil {
		return nil, err
	}
	l := &Live{path: path}
	l.cur.Store(p)
	return l, nil
}

// Static wraps a policy that is never reloaded.
func Static(p *Policy) *Live {
	l := &Live{}
	l.cur.Store(p)
	return l
}

// Policy returns the current policy.
func (l *Live) Policy() *Policy { return l.cur.Load() }

// Path returns the file the policy is read from ("" for Static).
func (l *Live) Path() string { return l.path }

// SetCatalog records the authority's permission catalog: Reload refuses a
// file naming a permission outside it. The current policy is not checked
// here (UnknownPermissions tells which routes are out).
func (l *Live) SetCatalog(c *scope.Catalog) { l.catalog.Store(c) }

// Catalog returns the catalog given to SetCatalog, or nil.
func (l *Live) Catalog() *scope.Catalog { return l.catalog.Load() }

// Reload reads the file again and, when it parses and every route's
// permission is in the catalog given to SetCatalog (if any), makes it the
// current policy and returns it. On error the current policy stays.
func (l *Live) Reload() (*Policy, error) {
	p, err := Load(l.path)
	if err != nil {
		return nil, err
	}
	if err := p.CheckCatalog(l.path, l.catalog.Load()); err != nil {
		return nil, err
	}
	l.cur.Store(p)
	return p, nil
}
