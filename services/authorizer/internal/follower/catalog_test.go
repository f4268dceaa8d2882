package follower

import (
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/services/authorizer/internal/authoritytest"
)

// The streamed catalog is kept, replaced by the next stream's, reported to
// OnCatalog only when its names change; a malformed one is counted, drops
// the stream and leaves the previous catalog in place.
func TestCatalog(t *testing.T) {
	var mu sync.Mutex
	var seen [][]string
	h := startWith(t, func(o *Options) {
		o.OnCatalog = func(c *scope.Catalog) {
			var names []string
			for _, p := range c.Permissions() {
				names = append(names, p.Name)
			}
			mu.Lock()
			seen = append(seen, names)
			mu.Unlock()
		}
	})
	calls := func() int { mu.Lock(); defer mu.Unlock(); return len(seen) }
	if h.f.Catalog() != nil {
		t.Fatal("catalog known before any stream")
	}
	s := h.next(t)
	s.Send(t, authoritytest.Catalog("domain:view", "domain:renew"), authoritytest.Chunk("e1", 5, nil), authoritytest.SnapshotEnd("e1", 5))
	h.waitRev(t, 5)
	c := h.f.Catalog()
	if !c.Has("domain:view") || !c.Has("domain:renew") || c.Has("domain:veiw") {
		t.Fatalf("catalog %v", c.Permissions())
	}
	if calls() != 1 {
		t.Fatalf("OnCatalog called %d times, want 1", calls())
	}

	// A malformed catalog (an implication of an unknown permission) drops
	// the stream; the catalog stays.
	before := h.f.Stats().Malformed
	bad := authoritytest.Catalog("domain:view")
	bad.GetCatalog().Permissions[0].Implies = []string{"domain:nope"}
	s.Send(t, bad)
	s2 := h.next(t) // the reconnection
	if got := h.f.Stats().Malformed; got != before+1 {
		t.Fatalf("malformed = %d, want %d", got, before+1)
	}
	if h.f.Catalog() != c {
		t.Fatal("a malformed catalog replaced the previous one")
	}

	// The same names again: kept quietly. Other names: reported.
	s2.Send(t, authoritytest.Catalog("domain:renew", "domain:view"), authoritytest.Checkpoint(6, t0))
	h.waitRev(t, 6)
	if calls() != 1 {
		t.Fatalf("OnCatalog called %d times for an unchanged catalog", calls())
	}
	s2.Send(t, authoritytest.Catalog("domain:view"), authoritytest.Checkpoint(7, t0))
	h.waitRev(t, 7)
	if calls() != 2 || h.f.Catalog().Has("domain:renew") {
		t.Fatalf("changed catalog: OnCatalog calls %d, catalog %v", calls(), h.f.Catalog().Permissions())
	}
}

// A catalog inside a snapshot breaks the protocol: the stream is dropped
// and the snapshot not applied.
func TestCatalogInsideSnapshot(t *testing.T) {
	h := start(t)
	s := h.next(t)
	s.Send(t, authoritytest.Chunk("e1", 5, nil), authoritytest.Catalog("domain:view"))
	h.next(t)
	if h.f.Synced() || h.f.Catalog() != nil {
		t.Fatalf("synced %v, catalog %v after a catalog inside a snapshot", h.f.Synced(), h.f.Catalog())
	}
}

func TestParseCatalogMalformed(t *testing.T) {
	long := make([]byte, 600)
	for i := range long {
		long[i] = 'x'
	}
	tests := map[string]*sigilv1.PermissionCatalog{
		"empty":       {},
		"bad name":    {Permissions: []*sigilv1.Permission{{Name: "Domain View"}}},
		"duplicate":   {Permissions: []*sigilv1.Permission{{Name: "a:b"}, {Name: "a:b"}}},
		"unknown imp": {Permissions: []*sigilv1.Permission{{Name: "a:b", Implies: []string{"a:c"}}}},
		"long desc":   {Permissions: []*sigilv1.Permission{{Name: "a:b", Description: string(long)}}},
		"too many":    {Permissions: make([]*sigilv1.Permission, MaxCatalogPermissions+1)},
		"nil entry":   {Permissions: []*sigilv1.Permission{nil}},
		"empty name":  {Permissions: []*sigilv1.Permission{{Name: ""}}},
		"no action":   {Permissions: []*sigilv1.Permission{{Name: "domain:"}}},
	}
	for name, pc := range tests {
		if c, err := parseCatalog(pc); err == nil {
			t.Errorf("%s: parseCatalog = %v, want an error", name, c.Permissions())
		}
	}
	c, err := parseCatalog(&sigilv1.PermissionCatalog{Permissions: []*sigilv1.Permission{{Name: "a:b", Implies: []string{"a:b"}}, {Name: "a:c"}}})
	if err != nil || !c.Has("a:b") || !c.Has("a:c") {
		t.Fatalf("valid catalog: %v", err)
	}
}

// FuzzParseCatalog feeds arbitrary stream bytes to the catalog parser: it
// never panics, and a catalog it accepts has exactly the well-formed names
// it was sent.
func FuzzParseCatalog(f *testing.F) {
	for _, m := range []*sigilv1.WatchRevocationsResponse{authoritytest.BuiltinCatalog(), authoritytest.Catalog("a:b", "c:d")} {
		b, err := proto.Marshal(m.GetCatalog())
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var pc sigilv1.PermissionCatalog
		if proto.Unmarshal(b, &pc) != nil {
			return
		}
		c, err := parseCatalog(&pc)
		if err != nil {
			return
		}
		if len(c.Permissions()) != len(pc.GetPermissions()) {
			t.Fatalf("catalog of %d permissions from %d", len(c.Permissions()), len(pc.GetPermissions()))
		}
		for _, p := range pc.GetPermissions() {
			if !c.Has(p.GetName()) || scope.ValidatePermission(p.GetName()) != nil {
				t.Fatalf("accepted %q", p.GetName())
			}
		}
	})
}
