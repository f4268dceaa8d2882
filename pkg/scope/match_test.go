package scope

import (
	"strconv"
	"testing"
)

// token is a realistic token: organization-wide read, renewals and DNS on
// two domains, and certificate management on one certificate.
var token = []Grant{
	{Permissions: []string{"billing:view", "domain:view", "organization:view"}},
	{Permissions: []string{"domain:renew", "domain:tech", "domain:view"}, Resources: []string{"domains/example.com", "domains/example.org"}},
	{Permissions: []string{"certificate:manage", "certificate:view"}, Resources: []string{"certificates/7f3a9c"}},
}

// matchCases seed FuzzMatch too.
var matchCases = []struct {
	name       string
	grants     []Grant
	permission string
	resource   string
	want       Result
}{
	{"unrestricted without resource", token, "domain:view", "", Allowed},
	{"unrestricted on any resource", token, "billing:view", "invoices/2026-11", Allowed},
	{"unrestricted on nested resource", token, "domain:view", "domains/other.net/records/www", Allowed},
	{"restricted needs a resource", token, "domain:renew", "", ResourceNotGranted},
	{"restricted exact resource", token, "domain:renew", "domains/example.com", Allowed},
	{"restricted second resource", token, "domain:tech", "domains/example.org", Allowed},
	{"restricted child resource", token, "domain:tech", "domains/example.com/records/www", Allowed},
	{"restricted grandchild resource", token, "domain:tech", "domains/example.com/records/www/values/1", Allowed},
	{"restricted other resource", token, "domain:renew", "domains/other.net", ResourceNotGranted},
	{"suffix is not a child", token, "domain:renew", "domains/example.com.evil", ResourceNotGranted},
	{"prefix is not a parent", token, "domain:renew", "domains/example.co", ResourceNotGranted},
	{"longer id sharing prefix", token, "domain:renew", "domains/example.comx/records/www", ResourceNotGranted},
	{"other collection same id", token, "domain:renew", "hostings/example.com", ResourceNotGranted},
	{"parent of granted not covered", token, "certificate:manage", "certificates", ResourceNotGranted},
	{"permission not carried", token, "cloud:manage", "", PermissionNotGranted},
	{"permission not carried with resource", token, "cloud:manage", "servers/1", PermissionNotGranted},
	{"unknown permission", token, "domain:fly", "domains/example.com", PermissionNotGranted},
	{"empty permission", token, "", "", PermissionNotGranted},
	{"implication is not expanded by match", []Grant{{Permissions: []string{"domain:renew"}}}, "domain:view", "", PermissionNotGranted},
	{"no grants", nil, "domain:view", "", PermissionNotGranted},
	{"dot dot escapes granted resource", token, "domain:tech", "domains/example.com/../other.net", ResourceNotGranted},
	{"dot dot id under granted resource", token, "domain:tech", "domains/example.com/records/..", ResourceNotGranted},
	{"dot id under granted resource", token, "domain:tech", "domains/example.com/records/.", ResourceNotGranted},
	{"empty segment under granted resource", token, "domain:tech", "domains/example.com//x", ResourceNotGranted},
	{"trailing slash on granted resource", token, "domain:tech", "domains/example.com/", ResourceNotGranted},
	{"collection under granted resource", token, "domain:tech", "domains/example.com/records", ResourceNotGranted},
	{"wildcard under granted resource", token, "domain:tech", "domains/example.com/records/*", ResourceNotGranted},
	{"malformed resource with unrestricted grant", token, "domain:view", "domains/../x", ResourceNotGranted},
	{"malformed resource without permission", token, "cloud:view", "domains/../x", PermissionNotGranted},
	{"too long resource", token, "domain:view", "domains/" + string(make([]byte, MaxResourceLen)), ResourceNotGranted},
	{
		"restricted then unrestricted grant",
		[]Grant{
			{Permissions: []string{"hosting:view"}, Resources: []string{"instances/1"}},
			{Permissions: []string{"hosting:view"}},
		},
		"hosting:view", "", Allowed,
	},
	{
		"two restricted grants, second covers",
		[]Grant{
			{Permissions: []string{"hosting:view"}, Resources: []string{"instances/1"}},
			{Permissions: []string{"hosting:manage", "hosting:view"}, Resources: []string{"instances/2"}},
		},
		"hosting:view", "instances/2/vhosts/a", Allowed,
	},
	{
		"resource granted for another permission only",
		[]Grant{
			{Permissions: []string{"hosting:view"}, Resources: []string{"instances/1"}},
			{Permissions: []string{"hosting:manage"}, Resources: []string{"instances/2"}},
		},
		"hosting:manage", "instances/1", ResourceNotGranted,
	},
	{
		"case sensitive ids",
		[]Grant{{Permissions: []string{"domain:view"}, Resources: []string{"domains/example.com"}}},
		"domain:view", "domains/EXAMPLE.com", ResourceNotGranted,
	},
	{
		"invalid grant resource never matches empty",
		[]Grant{{Permissions: []string{"domain:view"}, Resources: []string{""}}},
		"domain:view", "domains/x", ResourceNotGranted,
	},
}

func TestMatch(t *testing.T) {
	for _, tc := range matchCases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Match(tc.grants, tc.permission, tc.resource); got != tc.want {
				t.Errorf("Match(%q, %q) = %v, want %v", tc.permission, tc.resource, got, tc.want)
			}
		})
	}
}

func TestMatchDoesNotAllocate(t *testing.T) {
	for _, tc := range matchCases {
		t.Run(tc.name, func(t *testing.T) {
			var got Result
			allocs := testing.AllocsPerRun(100, func() {
				got = Match(tc.grants, tc.permission, tc.resource)
			})
			if allocs != 0 {
				t.Errorf("Match allocates %v times per call", allocs)
			}
			if got != tc.want {
				t.Errorf("Match = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSubsetDoesNotAllocateWhenSmall(t *testing.T) {
	child := []Grant{{Permissions: []string{"domain:view"}, Resources: []string{"domains/example.com/records/www"}}}
	allocs := testing.AllocsPerRun(100, func() {
		if !Subset(child, token) {
			t.Fatal("Subset = false")
		}
	})
	if allocs != 0 {
		t.Errorf("Subset allocates %v times per call", allocs)
	}
}

func TestSubset(t *testing.T) {
	for _, tc := range []struct {
		name          string
		child, parent []Grant
		want          bool
	}{
		{"identical", token, token, true},
		{"empty child", nil, token, true},
		{"empty parent", token, nil, false},
		{"both empty", nil, nil, true},
		{
			"child narrower resource",
			[]Grant{{Permissions: []string{"domain:renew"}, Resources: []string{"domains/example.com"}}},
			token, true,
		},
		{
			"child descendant resource",
			[]Grant{{Permissions: []string{"domain:tech"}, Resources: []string{"domains/example.org/records/www"}}},
			token, true,
		},
		{
			"child resource restricts unrestricted parent",
			[]Grant{{Permissions: []string{"billing:view"}, Resources: []string{"invoices/1"}}},
			token, true,
		},
		{
			"child unrestricted where parent restricted",
			[]Grant{{Permissions: []string{"domain:renew"}}},
			token, false,
		},
		{
			"child unrestricted where parent unrestricted",
			[]Grant{{Permissions: []string{"organization:view", "domain:view"}}},
			token, true,
		},
		{
			"child parent resource of granted",
			[]Grant{{Permissions: []string{"domain:tech"}}, {Permissions: []string{"domain:tech"}, Resources: []string{"domains/example.com"}}},
			[]Grant{{Permissions: []string{"domain:tech"}, Resources: []string{"domains/example.com/records/www"}}},
			false,
		},
		{
			"child ancestor of parent resource",
			[]Grant{{Permissions: []string{"domain:tech"}, Resources: []string{"domains/example.com"}}},
			[]Grant{{Permissions: []string{"domain:tech"}, Resources: []string{"domains/example.com/records/www"}}},
			false,
		},
		{
			"child sibling resource",
			[]Grant{{Permissions: []string{"domain:renew"}, Resources: []string{"domains/example.com.evil"}}},
			token, false,
		},
		{
			"child permission not in parent",
			[]Grant{{Permissions: []string{"cloud:view"}}},
			token, false,
		},
		{
			"one bad permission among good",
			[]Grant{{Permissions: []string{"domain:view", "organization:tokens"}}},
			token, false,
		},
		{
			"permission and resource from different parent grants",
			[]Grant{{Permissions: []string{"certificate:manage"}, Resources: []string{"domains/example.com"}}},
			token, false,
		},
		{
			"child spread over parent grants",
			[]Grant{{Permissions: []string{"domain:view"}, Resources: []string{"domains/example.com", "certificates/7f3a9c"}}, {Permissions: []string{"certificate:view"}, Resources: []string{"certificates/7f3a9c/files/pem"}}},
			token, true,
		},
		{
			"child resource covered by two parent grants together",
			[]Grant{{Permissions: []string{"hosting:view"}, Resources: []string{"instances/1", "instances/2"}}},
			[]Grant{{Permissions: []string{"hosting:view"}, Resources: []string{"instances/1"}}, {Permissions: []string{"hosting:view"}, Resources: []string{"instances/2"}}},
			true,
		},
		{
			"child grant without permissions allows nothing",
			[]Grant{{Resources: []string{"domains/x"}}},
			nil, true,
		},
		{
			"malformed child resource",
			[]Grant{{Permissions: []string{"domain:view"}, Resources: []string{"domains/../x"}}},
			token, false,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Subset(tc.child, tc.parent); got != tc.want {
				t.Errorf("Subset = %v, want %v", got, tc.want)
			}
			if got := subsetDirect(tc.child, tc.parent); got != tc.want {
				t.Errorf("subsetDirect = %v, want %v", got, tc.want)
			}
			if got := subsetIndexed(tc.child, tc.parent); got != tc.want {
				t.Errorf("subsetIndexed = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestSubsetLarge drives the indexed path through Subset at the size limits.
func TestSubsetLarge(t *testing.T) {
	perms := make([]string, 0, len(apiCatalog))
	for _, row := range apiCatalog {
		perms = append(perms, row.name)
	}
	resources := make([]string, MaxResourcesPerGrant)
	for i := range resources {
		resources[i] = "domains/d" + strconv.Itoa(i) + ".example"
	}
	children := make([]string, MaxResourcesPerGrant)
	for i := range children {
		children[i] = resources[i] + "/records/www"
	}
	parent := []Grant{{Permissions: perms, Resources: resources}}
	child := make([]Grant, MaxGrants)
	for i := range child {
		child[i] = Grant{Permissions: perms, Resources: children}
	}
	if cost := subsetCost(child, parent); cost <= maxDirectSubsetCost {
		t.Fatalf("cost %d does not exercise the indexed path", cost)
	}
	if !Subset(child, parent) {
		t.Errorf("Subset = false, want true")
	}
	child[MaxGrants-1].Resources = append(children[:MaxResourcesPerGrant-1:MaxResourcesPerGrant-1], "domains/other")
	if Subset(child, parent) {
		t.Errorf("Subset = true with one resource outside the parent, want false")
	}
}
