package scope

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Catalog is a set of permissions with their implications. It is immutable
// once built, so one Catalog may be shared by any number of goroutines.
type Catalog struct {
	perms map[string]*entry
}

type entry struct {
	perm Permission
	// closure is the permission itself and everything it implies,
	// transitively, sorted.
	closure []string
}

// MaxCatalogFileSize is the largest catalog file LoadCatalogFile reads.
const MaxCatalogFileSize = 1 << 20

// builtin is the built-in permission catalog: every permission a client may
// grant, what it allows and what it implies. Clients read it with
// ListPermissions; changing an entry changes what existing tokens allow.
func builtin() []Permission {
	p := func(name, desc string, implies ...string) Permission {
		return Permission{Name: name, Description: desc, Implies: implies}
	}
	return []Permission{
		p("organization:view", "see the organization and its members"),
		p("organization:manage", "change organization settings and members", "organization:view"),
		p("organization:tokens", "create, list, rotate and revoke the organization's tokens, read its audit log"),
		p("billing:view", "see invoices, prices and balances"),
		p("billing:manage", "change billing options", "billing:view"),
		p("payment:prepaid", "pay from the prepaid account or the saved card"),
		p("payment:deferred", "pay on payment terms"),
		p("domain:view", "see domains and their configuration"),
		p("domain:renew", "renew domains", "domain:view"),
		p("domain:tech", "change technical configuration (DNS, nameservers, DNSSEC)", "domain:view"),
		p("domain:contactadmin", "change domain contacts", "domain:view"),
		p("domain:mailbox", "manage mailboxes and forwarding", "domain:view"),
		p("domain:transfer", "change ownership, transfer out", "domain:view"),
		p("hosting:view", "see web hosting"),
		p("hosting:manage", "manage web hosting", "hosting:view"),
		p("cloud:view", "see cloud resources"),
		p("cloud:manage", "create, change and delete cloud resources", "cloud:view"),
		p("certificate:view", "see and download SSL certificates"),
		p("certificate:manage", "order, renew and revoke SSL certificates", "certificate:view"),
	}
}

// Builtin returns the built-in catalog of the API contract.
func Builtin() *Catalog {
	c, err := newCatalog(builtin())
	if err != nil {
		// The table above is a constant; TestBuiltin keeps it valid.
		panic("scope: invalid built-in catalog: " + err.Error())
	}
	return c
}

// NewCatalog returns the catalog of perms, as received from elsewhere (an
// authorizer builds the authority's streamed catalog with it). It is strict:
// a malformed name, a permission defined twice, an implication of an unknown
// permission or a description over 512 bytes is an error naming the
// permission. Product is taken from Name.
func NewCatalog(perms []Permission) (*Catalog, error) {
	for _, p := range perms {
		if len(p.Description) > maxDescription {
			return nil, errors.New(describe("permission", p.Name, fmt.Sprintf("description longer than %d bytes", maxDescription)))
		}
	}
	return newCatalog(perms)
}

// Has reports whether the catalog has the permission name. It allocates
// nothing, for the check path.
func (c *Catalog) Has(name string) bool {
	if c == nil {
		return false
	}
	_, ok := c.perms[name]
	return ok
}

// newCatalog checks perms (syntax, duplicates, implications naming known
// permissions) and computes the transitive closures. Cycles are allowed:
// permissions on a cycle imply each other.
func newCatalog(perms []Permission) (*Catalog, error) {
	c := &Catalog{perms: make(map[string]*entry, len(perms))}
	for _, p := range perms {
		if r := permissionReason(p.Name); r != "" {
			return nil, errors.New(describe("permission", p.Name, r))
		}
		if _, dup := c.perms[p.Name]; dup {
			return nil, errors.New(describe("permission", p.Name, "defined twice"))
		}
		p.Product, _, _ = strings.Cut(p.Name, ":")
		p.Implies = slices.Clone(p.Implies)
		slices.Sort(p.Implies)
		p.Implies = slices.Compact(p.Implies)
		c.perms[p.Name] = &entry{perm: p}
	}
	for _, e := range c.perms {
		for _, imp := range e.perm.Implies {
			if _, ok := c.perms[imp]; !ok {
				return nil, errors.New(describe("permission "+e.perm.Name+" implies", imp, "unknown permission"))
			}
		}
	}
	for _, e := range c.perms {
		e.closure = c.closure(e.perm.Name)
	}
	return c, nil
}

// closure walks the implications from name with a visited set.
func (c *Catalog) closure(name string) []string {
	seen := map[string]bool{name: true}
	stack := []string{name}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, imp := range c.perms[n].perm.Implies {
			if !seen[imp] {
				seen[imp] = true
				stack = append(stack, imp)
			}
		}
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Permissions returns every permission, sorted by name. The slice and its
// contents are copies: changing them does not change the catalog.
func (c *Catalog) Permissions() []Permission {
	if c == nil {
		return nil
	}
	out := make([]Permission, 0, len(c.perms))
	for _, e := range c.perms {
		p := e.perm
		p.Implies = slices.Clone(p.Implies)
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b Permission) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Lookup returns the permission with that name and whether the catalog has
// it. The returned value is a copy.
func (c *Catalog) Lookup(name string) (Permission, bool) {
	if c == nil {
		return Permission{}, false
	}
	e, ok := c.perms[name]
	if !ok {
		return Permission{}, false
	}
	p := e.perm
	p.Implies = slices.Clone(p.Implies)
	return p, true
}

// Implied returns name and every permission it implies, transitively,
// sorted; ok is false when the catalog does not have name.
func (c *Catalog) Implied(name string) (perms []string, ok bool) {
	if c == nil {
		return nil, false
	}
	e, ok := c.perms[name]
	if !ok {
		return nil, false
	}
	return slices.Clone(e.closure), true
}

// catalogFile is the YAML layout of a catalog file:
//
//	products:
//	  - name: dns
//	    actions:
//	      - name: view
//	        description: see DNS zones
//	      - name: edit
//	        description: change DNS zones
//	        implies: [dns:view]
type catalogFile struct {
	Products []catalogProduct `yaml:"products"`
}

type catalogProduct struct {
	Name    string          `yaml:"name"`
	Actions []catalogAction `yaml:"actions"`
}

type catalogAction struct {
	Name        string   `yaml:"name"`
	Description string   `yaml:"description"`
	Implies     []string `yaml:"implies"`
}

// maxDescription bounds a permission's description, in bytes.
const maxDescription = 512

// LoadCatalogFile returns the built-in catalog extended by the products and
// actions of a catalog file (YAML, at most MaxCatalogFileSize bytes). The
// file is strict: unknown fields, duplicate products or actions, malformed
// names, empty descriptions, implications of unknown permissions and
// redefinitions of built-in permissions are errors, each naming the file and
// the offending value. A file may add actions to a built-in product, and its
// permissions may imply built-in ones.
func LoadCatalogFile(path string) (*Catalog, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("scope: catalog file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("scope: catalog file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("scope: catalog file %s: not a regular file", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxCatalogFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("scope: catalog file %s: %w", path, err)
	}
	if len(data) > MaxCatalogFileSize {
		return nil, fmt.Errorf("scope: catalog file %s: larger than %d bytes", path, MaxCatalogFileSize)
	}
	c, err := parseCatalog(data)
	if err != nil {
		return nil, fmt.Errorf("scope: catalog file %s: %s", path, err)
	}
	return c, nil
}

// parseCatalog decodes a catalog file and adds it to the built-in catalog.
// Its errors do not name the file: LoadCatalogFile adds it.
func parseCatalog(data []byte) (*Catalog, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var file catalogFile
	if err := dec.Decode(&file); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty file")
		}
		return nil, errors.New(oneLine(err.Error()))
	}
	var extra catalogFile
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("more than one YAML document")
	}
	if len(file.Products) == 0 {
		return nil, errors.New("products: at least one product is required")
	}

	perms := builtin()
	builtins := make(map[string]bool, len(perms))
	for _, p := range perms {
		builtins[p.Name] = true
	}
	products := make(map[string]bool)
	added := make(map[string]string) // permission → field that defined it
	for i, prod := range file.Products {
		field := "products[" + strconv.Itoa(i) + "]"
		if !namePartOK(prod.Name) {
			return nil, errors.New(describe(field+".name", prod.Name, "must be a lower-case letter followed by at most 31 of a-z 0-9 _ -"))
		}
		if products[prod.Name] {
			return nil, errors.New(describe(field+".name", prod.Name, "product listed twice"))
		}
		products[prod.Name] = true
		if len(prod.Actions) == 0 {
			return nil, errors.New(describe(field+".actions", "", "product "+prod.Name+" has no actions"))
		}
		for j, act := range prod.Actions {
			afield := field + ".actions[" + strconv.Itoa(j) + "]"
			if !namePartOK(act.Name) {
				return nil, errors.New(describe(afield+".name", act.Name, "must be a lower-case letter followed by at most 31 of a-z 0-9 _ -"))
			}
			name := prod.Name + ":" + act.Name
			if builtins[name] {
				return nil, errors.New(describe(afield, name, "redefines a built-in permission"))
			}
			if prev, dup := added[name]; dup {
				return nil, errors.New(describe(afield, name, "already defined at "+prev))
			}
			added[name] = afield
			if strings.TrimSpace(act.Description) == "" {
				return nil, errors.New(describe(afield+".description", "", "permission "+name+" needs a description"))
			}
			if len(act.Description) > maxDescription {
				return nil, errors.New(describe(afield+".description", "", "permission "+name+": longer than "+strconv.Itoa(maxDescription)+" bytes"))
			}
			for k, imp := range act.Implies {
				if r := permissionReason(imp); r != "" {
					return nil, errors.New(describe(afield+".implies["+strconv.Itoa(k)+"]", imp, r))
				}
			}
			perms = append(perms, Permission{Name: name, Description: act.Description, Implies: act.Implies})
		}
	}
	// Implications may name permissions defined later in the file, so they
	// are checked once everything is known.
	known := make(map[string]bool, len(perms))
	for _, p := range perms {
		known[p.Name] = true
	}
	for i, prod := range file.Products {
		for j, act := range prod.Actions {
			for k, imp := range act.Implies {
				if !known[imp] {
					f := "products[" + strconv.Itoa(i) + "].actions[" + strconv.Itoa(j) + "].implies[" + strconv.Itoa(k) + "]"
					return nil, errors.New(describe(f, imp, "unknown permission"))
				}
			}
		}
	}
	return newCatalog(perms)
}

// oneLine joins a multi-line YAML error into one line for logs.
func oneLine(s string) string {
	fields := strings.FieldsFunc(s, func(r rune) bool { return r == '\n' })
	for i := range fields {
		fields[i] = strings.TrimSpace(fields[i])
	}
	return strings.Join(fields, " ")
}
