package scope

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// apiCatalog is the built-in catalog written out again, so that a change to
// it (which changes what existing tokens allow) has to change the test too.
var apiCatalog = []struct {
	name, description string
	implies           []string
}{
	{"organization:view", "see the organization and its members", nil},
	{"organization:manage", "change organization settings and members", []string{"organization:view"}},
	{"organization:tokens", "create, list, rotate and revoke the organization's tokens, read its audit log", nil},
	{"billing:view", "see invoices, prices and balances", nil},
	{"billing:manage", "change billing options", []string{"billing:view"}},
	{"payment:prepaid", "pay from the prepaid account or the saved card", nil},
	{"payment:deferred", "pay on payment terms", nil},
	{"domain:view", "see domains and their configuration", nil},
	{"domain:renew", "renew domains", []string{"domain:view"}},
	{"domain:tech", "change technical configuration (DNS, nameservers, DNSSEC)", []string{"domain:view"}},
	{"domain:contactadmin", "change domain contacts", []string{"domain:view"}},
	{"domain:mailbox", "manage mailboxes and forwarding", []string{"domain:view"}},
	{"domain:transfer", "change ownership, transfer out", []string{"domain:view"}},
	{"hosting:view", "see web hosting", nil},
	{"hosting:manage", "manage web hosting", []string{"hosting:view"}},
	{"cloud:view", "see cloud resources", nil},
	{"cloud:manage", "create, change and delete cloud resources", []string{"cloud:view"}},
	{"certificate:view", "see and download SSL certificates", nil},
	{"certificate:manage", "order, renew and revoke SSL certificates", []string{"certificate:view"}},
}

func TestBuiltin(t *testing.T) {
	c := Builtin()
	perms := c.Permissions()
	if len(perms) != len(apiCatalog) {
		t.Fatalf("Builtin has %d permissions, want %d", len(perms), len(apiCatalog))
	}
	if !slices.IsSortedFunc(perms, func(a, b Permission) int { return strings.Compare(a.Name, b.Name) }) {
		t.Errorf("Permissions() not sorted by name")
	}
	for _, row := range apiCatalog {
		t.Run(row.name, func(t *testing.T) {
			p, ok := c.Lookup(row.name)
			if !ok {
				t.Fatalf("Lookup(%q) not found", row.name)
			}
			product, _, _ := strings.Cut(row.name, ":")
			if p.Name != row.name || p.Product != product || p.Description != row.description || !slices.Equal(p.Implies, row.implies) {
				t.Errorf("Lookup(%q) = %+v, want name %q product %q description %q implies %q",
					row.name, p, row.name, product, row.description, row.implies)
			}
			i := slices.IndexFunc(perms, func(q Permission) bool { return q.Name == row.name })
			if i < 0 {
				t.Fatalf("Permissions() lacks %q", row.name)
			}
			if got := perms[i]; got.Description != row.description || !slices.Equal(got.Implies, row.implies) || got.Product != product {
				t.Errorf("Permissions()[%d] = %+v", i, got)
			}
		})
	}
}

func TestBuiltinImplied(t *testing.T) {
	c := Builtin()
	for _, tc := range []struct {
		name string
		want []string
	}{
		{"domain:renew", []string{"domain:renew", "domain:view"}},
		{"domain:tech", []string{"domain:tech", "domain:view"}},
		{"domain:transfer", []string{"domain:transfer", "domain:view"}},
		{"domain:view", []string{"domain:view"}},
		{"organization:manage", []string{"organization:manage", "organization:view"}},
		{"organization:tokens", []string{"organization:tokens"}},
		{"billing:manage", []string{"billing:manage", "billing:view"}},
		{"payment:deferred", []string{"payment:deferred"}},
		{"certificate:manage", []string{"certificate:manage", "certificate:view"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := c.Implied(tc.name)
			if !ok || !slices.Equal(got, tc.want) {
				t.Errorf("Implied(%q) = %q, %v; want %q, true", tc.name, got, ok, tc.want)
			}
		})
	}
	if got, ok := c.Implied("domain:fly"); ok || got != nil {
		t.Errorf("Implied(unknown) = %q, %v; want nil, false", got, ok)
	}
	if _, ok := c.Lookup("domain:fly"); ok {
		t.Errorf("Lookup(unknown) found")
	}
}

func TestCatalogReturnsCopies(t *testing.T) {
	c := Builtin()
	perms := c.Permissions()
	i := slices.IndexFunc(perms, func(p Permission) bool { return p.Name == "domain:renew" })
	perms[i].Implies[0] = "billing:manage"
	p, _ := c.Lookup("domain:renew")
	p.Implies[0] = "billing:manage"
	imp, _ := c.Implied("domain:renew")
	imp[0] = "billing:manage"
	if got, _ := c.Lookup("domain:renew"); !slices.Equal(got.Implies, []string{"domain:view"}) {
		t.Errorf("catalog changed through a returned slice: Implies = %q", got.Implies)
	}
	if got, _ := c.Implied("domain:renew"); !slices.Equal(got, []string{"domain:renew", "domain:view"}) {
		t.Errorf("catalog changed through a returned slice: Implied = %q", got)
	}
}

func TestNilCatalog(t *testing.T) {
	var c *Catalog
	if got := c.Permissions(); got != nil {
		t.Errorf("Permissions() = %v, want nil", got)
	}
	if _, ok := c.Lookup("domain:view"); ok {
		t.Errorf("Lookup on nil catalog found a permission")
	}
	if _, err := c.Expand([]Grant{{Permissions: []string{"domain:view"}}}); err == nil {
		t.Errorf("Expand on nil catalog succeeded")
	}
}

const goodCatalogFile = `products:
  - name: dns
    actions:
      - name: view
        description: see DNS zones
      - name: edit
        description: change DNS zones
        implies: [dns:view]
      - name: admin
        description: everything about DNS
        implies: [dns:edit, domain:tech]
  - name: domain
    actions:
      - name: dnssec
        description: manage DNSSEC keys
        implies: [domain:tech]
`

// catalogFileCases seed FuzzParseCatalog too. wantErr lists substrings the
// error must contain (after the file name).
var catalogFileCases = []struct {
	name    string
	content string
	wantErr []string
}{
	{name: "good", content: goodCatalogFile},
	{
		name: "cycle is allowed",
		content: `products:
  - name: a
    actions:
      - {name: x, description: x, implies: [a:y]}
      - {name: y, description: y, implies: [a:x]}
`,
	},
	{
		name: "implication named before its definition",
		content: `products:
  - name: a
    actions:
      - {name: x, description: x, implies: [b:y]}
  - name: b
    actions:
      - {name: y, description: y}
`,
	},
	{
		name: "unknown top-level field",
		content: `products: []
version: 2
`,
		wantErr: []string{"field version not found"},
	},
	{
		name: "unknown action field",
		content: `products:
  - name: dns
    actions:
      - name: view
        description: see
        scope: all
`,
		wantErr: []string{"field scope not found"},
	},
	{
		name: "duplicate product",
		content: `products:
  - name: dns
    actions: [{name: view, description: see}]
  - name: dns
    actions: [{name: edit, description: edit}]
`,
		wantErr: []string{`products[1].name "dns": product listed twice`},
	},
	{
		name: "duplicate action",
		content: `products:
  - name: dns
    actions:
      - {name: view, description: see}
      - {name: view, description: see again}
`,
		wantErr: []string{`products[0].actions[1] "dns:view": already defined at products[0].actions[0]`},
	},
	{
		name: "duplicate mapping key",
		content: `products:
  - name: dns
    name: dns2
    actions: [{name: view, description: see}]
`,
		wantErr: []string{"already defined"},
	},
	{
		name: "unknown implication",
		content: `products:
  - name: dns
    actions:
      - {name: edit, description: edit, implies: [dns:view]}
`,
		wantErr: []string{`products[0].actions[0].implies[0] "dns:view": unknown permission`},
	},
	{
		name: "malformed implication",
		content: `products:
  - name: dns
    actions:
      - {name: edit, description: edit, implies: ["DNS:view"]}
`,
		wantErr: []string{`products[0].actions[0].implies[0] "DNS:view": product must be`},
	},
	{
		name: "redefines built-in permission",
		content: `products:
  - name: domain
    actions:
      - {name: view, description: see everything}
`,
		wantErr: []string{`products[0].actions[0] "domain:view": redefines a built-in permission`},
	},
	{
		name: "bad product name",
		content: `products:
  - name: DNS
    actions: [{name: view, description: see}]
`,
		wantErr: []string{`products[0].name "DNS": must be a lower-case letter`},
	},
	{
		name: "product name with colon",
		content: `products:
  - name: "dns:x"
    actions: [{name: view, description: see}]
`,
		wantErr: []string{`products[0].name "dns:x"`},
	},
	{
		name: "bad action name",
		content: `products:
  - name: dns
    actions: [{name: "*", description: see}]
`,
		wantErr: []string{`products[0].actions[0].name "*": must be a lower-case letter`},
	},
	{
		name: "missing description",
		content: `products:
  - name: dns
    actions: [{name: view}]
`,
		wantErr: []string{"products[0].actions[0].description: permission dns:view needs a description"},
	},
	{
		name: "product without actions",
		content: `products:
  - name: dns
`,
		wantErr: []string{"products[0].actions: product dns has no actions"},
	},
	{name: "empty file", content: "", wantErr: []string{"empty file"}},
	{name: "no products", content: "products: []\n", wantErr: []string{"at least one product"}},
	{
		name:    "two documents",
		content: goodCatalogFile + "---\n" + goodCatalogFile,
		wantErr: []string{"more than one YAML document"},
	},
	{name: "not a mapping", content: "- dns\n", wantErr: []string{"cannot unmarshal"}},
	{name: "syntax error", content: "products: [\n", wantErr: []string{"yaml:"}},
}

func TestLoadCatalogFile(t *testing.T) {
	for _, tc := range catalogFileCases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "catalog.yaml")
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := LoadCatalogFile(path)
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("LoadCatalogFile succeeded, want error containing %q", tc.wantErr)
				}
				msg := err.Error()
				if !strings.HasPrefix(msg, "scope: catalog file "+path+": ") {
					t.Errorf("error %q does not name the file", msg)
				}
				for _, want := range tc.wantErr {
					if !strings.Contains(msg, want) {
						t.Errorf("error %q does not contain %q", msg, want)
					}
				}
				if strings.Contains(msg, "\n") {
					t.Errorf("error %q spans lines", msg)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadCatalogFile: %v", err)
			}
			// Everything built in is still there.
			for _, row := range apiCatalog {
				if _, ok := c.Lookup(row.name); !ok {
					t.Errorf("loaded catalog lacks built-in %q", row.name)
				}
			}
		})
	}
}

func TestLoadCatalogFileContents(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.yaml")
	if err := os.WriteFile(path, []byte(goodCatalogFile), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadCatalogFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(c.Permissions()), len(apiCatalog)+4; got != want {
		t.Errorf("%d permissions, want %d", got, want)
	}
	edit, ok := c.Lookup("dns:edit")
	if want := (Permission{Name: "dns:edit", Product: "dns", Description: "change DNS zones", Implies: []string{"dns:view"}}); !ok ||
		edit.Name != want.Name || edit.Product != want.Product || edit.Description != want.Description || !slices.Equal(edit.Implies, want.Implies) {
		t.Errorf("Lookup(dns:edit) = %+v, %v; want %+v", edit, ok, want)
	}
	for _, tc := range []struct {
		name string
		want []string
	}{
		{"dns:admin", []string{"dns:admin", "dns:edit", "dns:view", "domain:tech", "domain:view"}},
		{"domain:dnssec", []string{"domain:dnssec", "domain:tech", "domain:view"}},
		{"dns:view", []string{"dns:view"}},
	} {
		if got, ok := c.Implied(tc.name); !ok || !slices.Equal(got, tc.want) {
			t.Errorf("Implied(%q) = %q, want %q", tc.name, got, tc.want)
		}
	}
	out, err := c.Expand([]Grant{{Permissions: []string{"dns:admin"}}})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"dns:admin", "dns:edit", "dns:view", "domain:tech", "domain:view"}; !slices.Equal(out[0].Permissions, want) {
		t.Errorf("Expand(dns:admin) = %q, want %q", out[0].Permissions, want)
	}
	// The built-in catalog is not changed by loading a file.
	if _, ok := Builtin().Lookup("dns:view"); ok {
		t.Errorf("Builtin() has dns:view after loading a file")
	}
}

func TestLoadCatalogFileCycle(t *testing.T) {
	c, err := parseCatalog([]byte(catalogFileCases[1].content))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a:x", "a:y"} {
		if got, _ := c.Implied(name); !slices.Equal(got, []string{"a:x", "a:y"}) {
			t.Errorf("Implied(%q) = %q, want [a:x a:y]", name, got)
		}
	}
}

func TestLoadCatalogFileLimits(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name    string
		path    func(t *testing.T) string
		wantErr string
		wantIs  error
	}{
		{
			name: "too big",
			path: func(t *testing.T) string {
				p := filepath.Join(dir, "big.yaml")
				// Valid YAML up to the end, so only the size can reject it.
				body := goodCatalogFile + "#" + strings.Repeat("x", MaxCatalogFileSize) + "\n"
				if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
					t.Fatal(err)
				}
				return p
			},
			wantErr: "larger than 1048576 bytes",
		},
		{
			name:    "missing",
			path:    func(*testing.T) string { return filepath.Join(dir, "missing.yaml") },
			wantErr: "missing.yaml",
			wantIs:  fs.ErrNotExist,
		},
		{
			name:    "directory",
			path:    func(*testing.T) string { return dir },
			wantErr: "not a regular file",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := tc.path(t)
			_, err := LoadCatalogFile(path)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), path) {
				t.Fatalf("LoadCatalogFile(%s) = %v, want error naming the file and containing %q", path, err, tc.wantErr)
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("error %v is not %v", err, tc.wantIs)
			}
		})
	}
}

func TestLoadCatalogFileAtSizeLimit(t *testing.T) {
	p := filepath.Join(t.TempDir(), "exact.yaml")
	body := goodCatalogFile + "#"
	body += strings.Repeat("x", MaxCatalogFileSize-len(body)-1) + "\n"
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCatalogFile(p); err != nil {
		t.Fatalf("file of exactly %d bytes: %v", len(body), err)
	}
}

func TestNewCatalogRejectsBadTables(t *testing.T) {
	for _, tc := range []struct {
		name    string
		perms   []Permission
		wantErr string
	}{
		{"bad name", []Permission{{Name: "x", Description: "d"}}, `permission "x": must be product:action`},
		{"duplicate", []Permission{{Name: "a:b", Description: "d"}, {Name: "a:b", Description: "d"}}, `permission "a:b": defined twice`},
		{"unknown implication", []Permission{{Name: "a:b", Description: "d", Implies: []string{"a:c"}}}, `permission a:b implies "a:c": unknown permission`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := newCatalog(tc.perms); err == nil || err.Error() != tc.wantErr {
				t.Errorf("newCatalog = %v, want %q", err, tc.wantErr)
			}
		})
	}
}
