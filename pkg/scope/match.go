package scope

// Match decides a (permission, resource) request against grants.
//
// With resource "", only a grant that carries the permission and has no
// resources allows the request. Otherwise a grant that carries the
// permission allows it when the grant has no resources, or when one of its
// resources equals resource or is an ancestor of it on a segment boundary:
// "domains/example.com" covers "domains/example.com/records/www" but not
// "domains/example.com.evil". A resource that is not well formed (see
// ValidateResource: "..", ".", empty segments, wildcards and so on) is never
// allowed, not even by a grant without resources; callers that want to
// report it as bad input call ValidateResource first.
//
// Match expects grants as Expand returns them (a token's grants, minted by
// the authority); it does not expand implications. It allocates nothing.
func Match(grants []Grant, permission, resource string) Result {
	result := PermissionNotGranted
	checked, valid := false, false
	for i := range grants {
		g := &grants[i]
		if !hasPermission(g.Permissions, permission) {
			continue
		}
		result = ResourceNotGranted
		if !checked {
			checked = true
			valid = resource == "" || resourceReason(resource) == ""
			if !valid {
				return ResourceNotGranted
			}
		}
		if len(g.Resources) == 0 {
			return Allowed
		}
		if resource == "" {
			continue
		}
		for _, q := range g.Resources {
			if covers(q, resource) {
				return Allowed
			}
		}
	}
	return result
}

func hasPermission(perms []string, p string) bool {
	for _, q := range perms {
		if q == p {
			return true
		}
	}
	return false
}

// covers reports whether the granted resource q is r or an ancestor of r on
// a segment boundary.
func covers(q, r string) bool {
	if q == "" || len(q) > len(r) || r[:len(q)] != q {
		return false
	}
	return len(r) == len(q) || r[len(q)] == '/'
}

// Subset reports whether every request allowed by child is allowed by
// parent, which is what minting a token through another token requires.
//
// A child grant without resources needs, for each of its permissions, a
// parent grant with that permission and without resources. A child grant
// on resources needs, for each permission and resource, Match(parent,
// permission, resource) == Allowed; so a child resource that is not well
// formed makes Subset false. Grants are compared as given: expand both
// sides with the same catalog first.
func Subset(child, parent []Grant) bool {
	if subsetCost(child, parent) <= maxDirectSubsetCost {
		return subsetDirect(child, parent)
	}
	return subsetIndexed(child, parent)
}

// maxDirectSubsetCost is the number of string comparisons up to which
// Subset checks each child pair with Match (no allocation). Beyond it, a
// child and parent at the size limits would cost billions of comparisons,
// so Subset indexes the parent in maps instead.
const maxDirectSubsetCost = 1 << 16

func subsetCost(child, parent []Grant) int {
	parentSize := 0
	for _, g := range parent {
		parentSize += len(g.Permissions) + len(g.Resources)
	}
	pairs := 0
	for _, g := range child {
		pairs += len(g.Permissions) * max(1, len(g.Resources))
		if pairs*parentSize > maxDirectSubsetCost {
			return pairs * parentSize
		}
	}
	return pairs * parentSize
}

func subsetDirect(child, parent []Grant) bool {
	for _, g := range child {
		for _, p := range g.Permissions {
			if len(g.Resources) == 0 {
				if !hasUnrestricted(parent, p) {
					return false
				}
				continue
			}
			for _, r := range g.Resources {
				if Match(parent, p, r) != Allowed {
					return false
				}
			}
		}
	}
	return true
}

func hasUnrestricted(grants []Grant, p string) bool {
	for _, g := range grants {
		if len(g.Resources) == 0 && hasPermission(g.Permissions, p) {
			return true
		}
	}
	return false
}

// permissionIndex is what a parent allows for one permission.
type permissionIndex struct {
	everywhere bool
	resources  map[string]struct{}
}

// subsetIndexed is subsetDirect with the parent indexed by permission and
// resource: each child pair costs a few map lookups (one per '/' in the
// resource) instead of a scan of the parent.
func subsetIndexed(child, parent []Grant) bool {
	index := make(map[string]*permissionIndex)
	for _, g := range parent {
		for _, p := range g.Permissions {
			e := index[p]
			if e == nil {
				e = &permissionIndex{resources: make(map[string]struct{})}
				index[p] = e
			}
			if len(g.Resources) == 0 {
				e.everywhere = true
			}
			for _, r := range g.Resources {
				e.resources[r] = struct{}{}
			}
		}
	}
	for _, g := range child {
		for _, p := range g.Permissions {
			e := index[p]
			if e == nil {
				return false
			}
			if len(g.Resources) == 0 {
				if !e.everywhere {
					return false
				}
				continue
			}
			for _, r := range g.Resources {
				if resourceReason(r) != "" {
					return false
				}
				if !e.everywhere && !e.coversResource(r) {
					return false
				}
			}
		}
	}
	return true
}

// coversResource reports whether r or one of its ancestors on a '/'
// boundary is in the index, as covers would find by scanning.
func (e *permissionIndex) coversResource(r string) bool {
	if _, ok := e.resources[r]; ok {
		return true
	}
	for i := 1; i < len(r); i++ {
		if r[i] == '/' {
			if _, ok := e.resources[r[:i]]; ok {
				return true
			}
		}
	}
	return false
}
