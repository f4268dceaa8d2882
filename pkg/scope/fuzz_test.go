package scope

import (
	"errors"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// resourceOracle is the resource syntax written a second way, as a regular
// expression, to cross-check the hand-written scanner.
var resourceOracle = regexp.MustCompile(`^[a-z][a-z0-9_-]*/[A-Za-z0-9._~:@+-]+(/[a-z][a-z0-9_-]*/[A-Za-z0-9._~:@+-]+)*$`)

var permissionOracle = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,31}:[a-z][a-z0-9_-]{0,31}$`)

func FuzzValidateResource(f *testing.F) {
	for _, tc := range resourceCases {
		f.Add(tc.in)
	}
	for _, tc := range matchCases {
		f.Add(tc.resource)
	}
	f.Fuzz(func(t *testing.T, r string) {
		err := ValidateResource(r)
		segs := strings.Split(r, "/")
		dots := slices.ContainsFunc(segs, func(s string) bool { return s == "." || s == ".." })
		oracle := len(r) <= MaxResourceLen && resourceOracle.MatchString(r) && !dots
		if (err == nil) != oracle {
			t.Fatalf("ValidateResource(%q) = %v, oracle says valid = %v", r, err, oracle)
		}
		one := []Grant{{Permissions: []string{"a:b"}, Resources: []string{r}}}
		all := []Grant{{Permissions: []string{"a:b"}}}
		if err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) || ve.Field != "resource" || ve.Value != r || ve.Reason == "" {
				t.Fatalf("ValidateResource(%q) = %#v", r, err)
			}
			// A malformed resource is never allowed, whatever the grants.
			if r != "" && (Match(one, "a:b", r) == Allowed || Match(all, "a:b", r) == Allowed) {
				t.Fatalf("Match allows malformed resource %q", r)
			}
			return
		}
		if len(segs) < 2 || len(segs)%2 != 0 {
			t.Fatalf("accepted %q with %d segments", r, len(segs))
		}
		for i, s := range segs {
			if s == "" || s == "." || s == ".." || strings.ContainsAny(s, "*%? \t\n\\") {
				t.Fatalf("accepted %q with segment %d %q", r, i, s)
			}
		}
		if Match(one, "a:b", r) != Allowed || Match(all, "a:b", r) != Allowed {
			t.Fatalf("Match does not allow valid %q granted exactly or everywhere", r)
		}
		// Every ancestor on a pair boundary covers it; nothing else of the
		// same length does.
		for i := 2; i < len(segs); i += 2 {
			anc := strings.Join(segs[:i], "/")
			if Match([]Grant{{Permissions: []string{"a:b"}, Resources: []string{anc}}}, "a:b", r) != Allowed {
				t.Fatalf("ancestor %q does not cover %q", anc, r)
			}
			longer := []Grant{{Permissions: []string{"a:b"}, Resources: []string{anc + "x"}}}
			if Match(longer, "a:b", r) == Allowed && !strings.HasPrefix(r, anc+"x") {
				t.Fatalf("%q covers %q", anc+"x", r)
			}
		}
	})
}

func FuzzValidatePermission(f *testing.F) {
	for _, tc := range permissionCases {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, p string) {
		err := ValidatePermission(p)
		if want := permissionOracle.MatchString(p); (err == nil) != want {
			t.Fatalf("ValidatePermission(%q) = %v, oracle says valid = %v", p, err, want)
		}
	})
}

// FuzzMatch checks that Match never panics and agrees with a slow
// reference built on ValidateResource and strings.
func FuzzMatch(f *testing.F) {
	for _, tc := range matchCases {
		granted := ""
		for _, g := range tc.grants {
			granted += strings.Join(g.Resources, ",") + ";"
		}
		f.Add(tc.permission, tc.resource, granted)
	}
	f.Fuzz(func(t *testing.T, permission, resource, granted string) {
		var grants []Grant
		for _, g := range strings.Split(granted, ";") {
			gr := Grant{Permissions: []string{permission, "x:y"}}
			if g != "" {
				gr.Resources = strings.Split(g, ",")
			}
			grants = append(grants, gr)
		}
		got := Match(grants, permission, resource)
		want := PermissionNotGranted
		if len(grants) > 0 {
			want = ResourceNotGranted
			if resource == "" || ValidateResource(resource) == nil {
				for _, g := range grants {
					if len(g.Resources) == 0 {
						want = Allowed
					}
					for _, q := range g.Resources {
						if resource != "" && q != "" && (resource == q || strings.HasPrefix(resource, q+"/")) {
							want = Allowed
						}
					}
				}
			}
		}
		if got != want {
			t.Fatalf("Match(%q, %q) over %q = %v, want %v", permission, resource, granted, got, want)
		}
	})
}

// FuzzExpand builds grants from fuzz strings (a comma-separated list per
// field, grants separated by ';') and checks Expand never panics and that
// what it accepts is normalized and matches.
func FuzzExpand(f *testing.F) {
	f.Add("domain:renew", "domains/example.com")
	f.Add("domain:view,domain:view,billing:manage", "domains/b,domains/a,domains/b")
	f.Add("organization:manage;cloud:manage", ";servers/1/disks/2")
	f.Add("", "")
	f.Add(";", ";")
	f.Add("domain:fly", "domains/*")
	for _, tc := range permissionCases {
		f.Add(tc.in, "")
	}
	for _, tc := range resourceCases {
		f.Add("domain:view", tc.in)
	}
	c := Builtin()
	f.Fuzz(func(t *testing.T, perms, resources string) {
		ps, rs := strings.Split(perms, ";"), strings.Split(resources, ";")
		var in []Grant
		for i, p := range ps {
			var g Grant
			if p != "" {
				g.Permissions = strings.Split(p, ",")
			}
			if i < len(rs) && rs[i] != "" {
				g.Resources = strings.Split(rs[i], ",")
			}
			in = append(in, g)
		}
		out, err := c.Expand(in)
		if err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) || ve.Field == "" || ve.Reason == "" || !strings.HasPrefix(ve.Field, "grants") {
				t.Fatalf("Expand error %#v", err)
			}
			if out != nil {
				t.Fatalf("Expand returned grants with an error")
			}
			return
		}
		if len(out) != len(in) {
			t.Fatalf("Expand returned %d grants for %d", len(out), len(in))
		}
		for i, g := range out {
			if !isSortedSet(g.Permissions) || !isSortedSet(g.Resources) {
				t.Fatalf("grant %d not normalized: %v", i, g)
			}
			for _, p := range g.Permissions {
				implied, ok := c.Implied(p)
				if !ok {
					t.Fatalf("grant %d carries unknown %q", i, p)
				}
				for _, q := range implied {
					if !slices.Contains(g.Permissions, q) {
						t.Fatalf("grant %d carries %q but not implied %q", i, p, q)
					}
				}
				if len(g.Resources) == 0 && Match(out, p, "") != Allowed {
					t.Fatalf("Match(%q, \"\") not allowed by %v", p, out)
				}
				for _, r := range g.Resources {
					if ValidateResource(r) != nil || Match(out, p, r) != Allowed {
						t.Fatalf("Match(%q, %q) not allowed by %v", p, r, out)
					}
				}
			}
		}
		if !Subset(in, out) || !Subset(out, out) {
			t.Fatalf("Subset(in, out) or Subset(out, out) false: %v, %v", in, out)
		}
		again, err := c.Expand(out)
		if err != nil || !slices.EqualFunc(again, out, grantEqual) {
			t.Fatalf("Expand not idempotent: %v, %v", again, err)
		}
	})
}

func isSortedSet(s []string) bool {
	for i := 1; i < len(s); i++ {
		if s[i-1] >= s[i] {
			return false
		}
	}
	return true
}

func grantEqual(a, b Grant) bool {
	return slices.Equal(a.Permissions, b.Permissions) && slices.Equal(a.Resources, b.Resources)
}

// FuzzParseCatalog checks that no catalog file makes the loader panic, and
// that any catalog it accepts is consistent: every implication is in the
// catalog, closures are closed, and Expand accepts every permission.
func FuzzParseCatalog(f *testing.F) {
	for _, tc := range catalogFileCases {
		f.Add([]byte(tc.content))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > MaxCatalogFileSize {
			return
		}
		c, err := parseCatalog(data)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error spans lines: %q", err)
			}
			return
		}
		for _, p := range c.Permissions() {
			if ValidatePermission(p.Name) != nil || !strings.HasPrefix(p.Name, p.Product+":") || strings.TrimSpace(p.Description) == "" {
				t.Fatalf("bad permission %+v", p)
			}
			implied, _ := c.Implied(p.Name)
			for _, q := range implied {
				sub, ok := c.Implied(q)
				if !ok {
					t.Fatalf("%q implies unknown %q", p.Name, q)
				}
				for _, s := range sub {
					if !slices.Contains(implied, s) {
						t.Fatalf("closure of %q lacks %q (implied by %q)", p.Name, s, q)
					}
				}
			}
			if _, err := c.Expand([]Grant{{Permissions: []string{p.Name}}}); err != nil {
				t.Fatalf("Expand(%q): %v", p.Name, err)
			}
		}
	})
}
