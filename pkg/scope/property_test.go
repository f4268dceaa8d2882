package scope

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// The universe of the property test: few enough names that random grant
// sets often nest, with resources that share prefixes without being
// ancestors ("domains/a" and "domains/ab", "domains/a.evil").
var (
	propPermissions = []string{"domain:view", "domain:renew", "cloud:view"}
	propResources   = []string{
		"domains/a",
		"domains/a/records/w",
		"domains/a/records/w/values/1",
		"domains/a/records/x",
		"domains/ab",
		"domains/a.evil",
		"domains/b",
		"domains/b/records/w",
		"servers/a",
	}
)

// randomGrants returns 0 to 3 grants over the universe; about a third have
// no resources.
func randomGrants(r *rand.Rand) []Grant {
	grants := make([]Grant, r.IntN(4))
	for i := range grants {
		grants[i] = Grant{
			Permissions: pick(r, propPermissions, 1+r.IntN(2)),
		}
		if r.IntN(3) != 0 {
			grants[i].Resources = pick(r, propResources, 1+r.IntN(3))
		}
	}
	return grants
}

// narrow returns grants that tend to be a subset of parent: some of its
// grants, with fewer permissions and resources moved down the tree. It can
// still step outside parent (a restriction lifted, a resource swapped), so
// both outcomes of Subset occur.
func narrow(r *rand.Rand, parent []Grant) []Grant {
	var child []Grant
	for _, g := range parent {
		if r.IntN(4) == 0 {
			continue
		}
		c := Grant{Permissions: pick(r, g.Permissions, 1+r.IntN(len(g.Permissions)))}
		for _, res := range g.Resources {
			switch r.IntN(6) {
			case 0: // dropped
			case 1, 2: // a descendant or a sibling sharing a prefix
				c.Resources = append(c.Resources, propResources[r.IntN(len(propResources))])
			default:
				c.Resources = append(c.Resources, res)
			}
		}
		if len(g.Resources) > 0 && len(c.Resources) == 0 && r.IntN(4) != 0 {
			c.Resources = []string{g.Resources[0]}
		}
		child = append(child, c)
	}
	if r.IntN(8) == 0 {
		child = append(child, randomGrants(r)...)
	}
	return child
}

func pick(r *rand.Rand, from []string, n int) []string {
	out := slices.Clone(from)
	r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out[:min(n, len(out))]
}

// requests returns every (permission, resource) request over the universe,
// the empty resource and the resources of grants.
func requests(grants ...[]Grant) (perms, resources []string) {
	resources = append([]string{""}, propResources...)
	for _, gs := range grants {
		for _, g := range gs {
			resources = append(resources, g.Resources...)
		}
	}
	slices.Sort(resources)
	return propPermissions, slices.Compact(resources)
}

// TestSubsetProperty checks Subset against its definition: whenever
// Subset(child, parent) holds, every request the child allows is allowed by
// the parent; whenever it does not, some request over the universe shows
// why. It also checks that both implementations of Subset agree.
func TestSubsetProperty(t *testing.T) {
	r := rand.New(rand.NewPCG(20261129, 1))
	const rounds = 20000
	subsets, trivial := 0, 0
	for round := range rounds {
		parent := randomGrants(r)
		var child []Grant
		if r.IntN(5) == 0 {
			child = randomGrants(r)
		} else {
			child = narrow(r, parent)
		}
		got := Subset(child, parent)
		if direct, indexed := subsetDirect(child, parent), subsetIndexed(child, parent); direct != got || indexed != got {
			t.Fatalf("round %d: Subset = %v, subsetDirect = %v, subsetIndexed = %v\nchild  %v\nparent %v", round, got, direct, indexed, child, parent)
		}
		perms, resources := requests(child, parent)
		witness, allowsSome := false, false
		for _, p := range perms {
			for _, res := range resources {
				if Match(child, p, res) != Allowed {
					continue
				}
				allowsSome = true
				if Match(parent, p, res) != Allowed {
					witness = true
					if got {
						t.Fatalf("round %d: Subset = true, but child allows (%q, %q) and parent does not\nchild  %v\nparent %v", round, p, res, child, parent)
					}
				}
			}
		}
		if !got && !witness {
			t.Fatalf("round %d: Subset = false, but no request allowed by child is denied by parent\nchild  %v\nparent %v", round, child, parent)
		}
		switch {
		case got && !allowsSome:
			trivial++
		case got:
			subsets++
		}
	}
	// Both outcomes must be common, and the subsets must mostly be children
	// that allow something, or the property above tests little.
	if subsets < rounds/4 || subsets+trivial > rounds*4/5 {
		t.Errorf("%d of %d random cases are subsets allowing something (%d allow nothing); the generator is off balance", subsets, rounds, trivial)
	}
	t.Logf("%d of %d random cases are subsets allowing something, %d allow nothing", subsets, rounds, trivial)
}

// TestExpandProperty checks that expanding never loses a request: whatever
// the listed grants allow (read with the catalog's implications), the
// expanded grants allow, and the expanded grants are a superset of the
// listed ones.
func TestExpandProperty(t *testing.T) {
	c := Builtin()
	r := rand.New(rand.NewPCG(20261129, 2))
	for round := range 5000 {
		in := randomGrants(r)
		if len(in) == 0 {
			continue
		}
		out, err := c.Expand(in)
		if err != nil {
			t.Fatalf("round %d: Expand(%v): %v", round, in, err)
		}
		if !Subset(in, out) {
			t.Fatalf("round %d: listed grants %v are not a subset of expanded %v", round, in, out)
		}
		_, resources := requests(in)
		for _, g := range in {
			for _, p := range g.Permissions {
				implied, _ := c.Implied(p)
				for _, q := range implied {
					for _, res := range resources {
						if Match([]Grant{{Permissions: []string{p}, Resources: g.Resources}}, p, res) == Allowed &&
							Match(out, q, res) != Allowed {
							t.Fatalf("round %d: %q on %q implied by %q but not allowed by %v", round, q, res, p, out)
						}
					}
				}
			}
		}
	}
}
