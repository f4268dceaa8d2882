package scope

import (
	"errors"
	"slices"
	"strconv"
)

// Expand validates grants against the catalog and returns them normalized,
// with implications expanded (what a token carries).
//
// Validation stops at the first problem and returns it as a
// *ValidationError whose Field is the path of the offending value, such as
// "grants[1].permissions[0]". It requires between 1 and MaxGrants grants,
// each with 1 to MaxPermissionsPerGrant permissions known to the catalog and
// at most MaxResourcesPerGrant well-formed resource names.
//
// The result keeps the grants in their order. Each grant's permissions are
// the transitive closure of its listed permissions, and its permissions and
// resources are sorted and free of duplicates. The result shares no memory
// with grants.
func (c *Catalog) Expand(grants []Grant) ([]Grant, error) {
	if c == nil {
		return nil, errors.New("scope: no catalog")
	}
	if len(grants) == 0 {
		return nil, &ValidationError{Field: "grants", Reason: "at least one grant is required"}
	}
	if len(grants) > MaxGrants {
		return nil, &ValidationError{Field: "grants", Reason: "at most " + strconv.Itoa(MaxGrants) + " grants, got " + strconv.Itoa(len(grants))}
	}
	out := make([]Grant, len(grants))
	for i, g := range grants {
		field := "grants[" + strconv.Itoa(i) + "]"
		switch {
		case len(g.Permissions) == 0:
			return nil, &ValidationError{Field: field + ".permissions", Reason: "at least one permission is required"}
		case len(g.Permissions) > MaxPermissionsPerGrant:
			return nil, &ValidationError{Field: field + ".permissions", Reason: "at most " + strconv.Itoa(MaxPermissionsPerGrant) + " permissions, got " + strconv.Itoa(len(g.Permissions))}
		case len(g.Resources) > MaxResourcesPerGrant:
			return nil, &ValidationError{Field: field + ".resources", Reason: "at most " + strconv.Itoa(MaxResourcesPerGrant) + " resources, got " + strconv.Itoa(len(g.Resources))}
		}
		var perms []string
		for j, p := range g.Permissions {
			if r := permissionReason(p); r != "" {
				return nil, &ValidationError{Field: field + ".permissions[" + strconv.Itoa(j) + "]", Value: p, Reason: r}
			}
			e, ok := c.perms[p]
			if !ok {
				return nil, &ValidationError{Field: field + ".permissions[" + strconv.Itoa(j) + "]", Value: p, Reason: ReasonUnknownPermission}
			}
			perms = append(perms, e.closure...)
		}
		for k, r := range g.Resources {
			if reason := resourceReason(r); reason != "" {
				return nil, &ValidationError{Field: field + ".resources[" + strconv.Itoa(k) + "]", Value: r, Reason: reason}
			}
		}
		out[i].Permissions = sortedSet(perms)
		if len(g.Resources) > 0 {
			out[i].Resources = sortedSet(slices.Clone(g.Resources))
		}
	}
	return out, nil
}

// sortedSet sorts s in place and removes duplicates, clipping the result so
// that an append by the caller never writes into s's spare capacity.
func sortedSet(s []string) []string {
	slices.Sort(s)
	return slices.Clip(slices.Compact(s))
}
