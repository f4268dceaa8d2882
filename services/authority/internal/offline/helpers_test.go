package offline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/internal/etcdtest"
	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/services/authority/internal/app"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// TestMain stops the embedded etcd the tests share.
func TestMain(m *testing.M) {
	code := m.Run()
	etcdtest.StopShared()
	os.Exit(code)
}

// t0 is the tests' "now" when the stores are filled.
var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// later is after every short-lived token expired, before the others do.
var later = t0.Add(2 * time.Hour)

var orgs = []string{"org-a", "org-b", "org-c"}
var creators = []string{"alice", "bob"}

// noEnv is a lookup without any variable.
func noEnv(string) (string, bool) { return "", false }

// fixture is a store file filled by fill, and what the tests compare.
type fixture struct {
	dir  string // data directory
	path string // its sigil.db
	ids  []string
}

var idSeq struct {
	sync.Mutex
	n int
}

func newID() string {
	idSeq.Lock()
	defer idSeq.Unlock()
	idSeq.n++
	return fmt.Sprintf("%032x", idSeq.n)
}

func key(id string, state store.KeyState, created time.Time) store.Key {
	return store.Key{ID: id, State: state, Public: bytes.Repeat([]byte{byte(len(id))}, 32),
		SealedPrivate: []byte("sealed-" + id), CreateTime: created, ActivateTime: created}
}

func tokenOf(org, name, creator, keyID string, ttl time.Duration) store.Token {
	return store.Token{
		ID: newID(), OrgID: org, Name: name, Description: "for " + name,
		Grants:    []scope.Grant{{Permissions: []string{"domain:view"}}, {Permissions: []string{"domain:renew"}, Resources: []string{"domains/example.com"}}},
		CreatedBy: creator, KeyID: keyID, CreateTime: t0, ExpireTime: t0.Add(ttl),
	}
}

func audit(action store.AuditAction, org string) store.AuditRecord {
	return store.AuditRecord{Time: t0, Actor: "operator", OrgID: org, Action: action, Reason: "test"}
}

// fill makes a store file with every kind of record: signing keys in every
// state (one revoked, one cut), tokens active, revoked, expired, revoked
// by a cascade, by a bulk revocation and by a rotation, one revoked without
// a record, audit records of every organization, events, and a compaction
// floor above 0 (the first events and digests are gone).
func fill(t *testing.T) fixture {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	fx := fixture{dir: dir, path: filepath.Join(dir, app.DBFile)}
	s, err := store.Open(fx.path, store.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	must := func(_ uint64, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	create := func(tk store.Token) store.Token {
		t.Helper()
		must(s.CreateToken(ctx, tk, audit(store.AuditTokenCreated, tk.OrgID)))
		fx.ids = append(fx.ids, tk.ID)
		return tk
	}
	must(s.AddKey(ctx, key("k1", store.KeyActive, t0.Add(-time.Hour)), audit(store.AuditKeyRotated, "")))
	// Revoked, then expired by `later`: Compact drops its events.
	short := create(tokenOf("org-a", "short", "alice", "k1", time.Minute))
	if _, _, _, err := s.RevokeToken(ctx, short.ID, audit(store.AuditTokenRevoked, "org-a")); err != nil {
		t.Fatal(err)
	}
	must(s.AddKey(ctx, key("k2", store.KeyPending, t0), audit(store.AuditKeyRotated, "")))
	must(s.SetKeyState(ctx, "k2", store.KeyActive))
	must(s.SetKeyState(ctx, "k1", store.KeyVerifyOnly))
	floor, err := s.Compact(ctx, later)
	if err != nil {
		t.Fatal(err)
	}
	if floor == 0 {
		t.Fatal("the fixture's compaction left the floor at 0")
	}
	for i := range 30 {
		org, creator := orgs[i%len(orgs)], creators[i%len(creators)]
		create(tokenOf(org, fmt.Sprintf("tok-%d", i), creator, "k2", time.Duration(1+i%3)*24*time.Hour))
	}
	create(tokenOf("org-c", "expired", "bob", "k2", time.Minute))
	// A cascade: a parent, a child and a grandchild, revoked through the parent.
	parent := create(tokenOf("org-a", "parent", "alice", "k2", 48*time.Hour))
	child := tokenOf("org-a", "child", "alice", "k2", 24*time.Hour)
	child.ParentID = parent.ID
	create(child)
	grandchild := tokenOf("org-a", "grandchild", "alice", "k2", 24*time.Hour)
	grandchild.ParentID = child.ID
	create(grandchild)
	if _, _, n, err := s.RevokeToken(ctx, parent.ID, audit(store.AuditTokenRevoked, "org-a")); err != nil || n != 2 {
		t.Fatalf("cascade: %d descendants, %v; want 2", n, err)
	}
	if n, _, err := s.RevokeTokens(ctx, "org-b", "bob", audit(store.AuditTokensRevoked, "org-b")); err != nil || n == 0 {
		t.Fatalf("bulk revocation: %d, %v", n, err)
	}
	old := create(tokenOf("org-c", "rotated", "alice", "k2", 72*time.Hour))
	next := tokenOf("org-c", "rotated", "alice", "k2", 72*time.Hour)
	if _, _, err := s.RotateToken(ctx, old.ID, next, audit(store.AuditTokenRotated, "org-c")); err != nil {
		t.Fatal(err)
	}
	fx.ids = append(fx.ids, next.ID)
	unrecorded := tokenOf("org-b", "", "", "k2", 24*time.Hour)
	if _, _, err := s.RevokeUnrecorded(ctx, unrecorded, audit(store.AuditTokenRevoked, "org-b")); err != nil {
		t.Fatal(err)
	}
	fx.ids = append(fx.ids, unrecorded.ID)
	must(s.AddKey(ctx, key("k3", store.KeyActive, t0), audit(store.AuditKeyRotated, "")))
	must(s.RevokeKey(ctx, "k3", audit(store.AuditKeyRevoked, "")))
	must(s.CutKey(ctx, "k1", t0.Add(-30*time.Minute), audit(store.AuditKeyRevoked, "")))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return fx
}

// openEtcd opens the store under prefix on the shared etcd and closes it
// at the end of the test.
func openEtcd(t *testing.T, prefix string) *store.Etcd {
	t.Helper()
	s, err := store.OpenEtcd(context.Background(), store.EtcdOptions{Endpoints: []string{etcdtest.Shared(t).Endpoint}, Prefix: prefix})
	if err != nil {
		t.Fatalf("OpenEtcd(%s): %v", prefix, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// openBolt opens the store file and closes it at the end of the test.
func openBolt(t *testing.T, path string) *store.Bolt {
	t.Helper()
	s, err := store.Open(path, store.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// sameStores checks that a and b answer every read an RPC makes the same
// way: epoch and revision, every token by id, every listing page of every
// organization and creator in every state, every audit page, the keys, the
// snapshot, the event log from the floor and the history digest at every
// revision. It returns the revision.
func sameStores(t *testing.T, a, b store.Store, ids []string) uint64 {
	t.Helper()
	ctx := context.Background()
	if a.Epoch() != b.Epoch() || a.Revision() != b.Revision() {
		t.Fatalf("epoch/revision %s/%d and %s/%d", a.Epoch(), a.Revision(), b.Epoch(), b.Revision())
	}
	same := func(what string, x, y any) {
		t.Helper()
		if !reflect.DeepEqual(x, y) {
			t.Fatalf("%s differ:\n%+v\n%+v", what, x, y)
		}
	}
	// sameErr: both nil, or both the same store error.
	sameErr := func(what string, x, y error) {
		t.Helper()
		for _, e := range []error{store.ErrNotFound, store.ErrCompacted} {
			if errors.Is(x, e) != errors.Is(y, e) {
				t.Fatalf("%s: errors %v and %v", what, x, y)
			}
		}
		if (x == nil) != (y == nil) {
			t.Fatalf("%s: errors %v and %v", what, x, y)
		}
	}
	for _, id := range ids {
		x, errX := a.GetToken(ctx, id)
		y, errY := b.GetToken(ctx, id)
		same("GetToken("+id+")", x, y)
		sameErr("GetToken("+id+")", errX, errY)
	}
	listed := 0
	for _, org := range orgs {
		for _, creator := range append([]string{""}, creators...) {
			for _, state := range []store.TokenState{store.StateAny, store.StateActive, store.StateRevoked, store.StateExpired} {
				f := store.ListFilter{OrgID: org, CreatedBy: creator, State: state, Now: later, PageSize: 4}
				for page := 0; ; page++ {
					x, nx, errX := a.ListTokens(ctx, f)
					y, ny, errY := b.ListTokens(ctx, f)
					if errX != nil || errY != nil {
						t.Fatalf("ListTokens(%+v): %v, %v", f, errX, errY)
					}
					same(fmt.Sprintf("ListTokens(%+v) page %d", f, page), []any{x, nx}, []any{y, ny})
					listed += len(x)
					if nx == "" {
						break
					}
					f.PageToken = nx
				}
			}
		}
	}
	if listed == 0 {
		t.Fatal("no token listed")
	}
	audited := 0
	for _, org := range append([]string{""}, orgs...) {
		f := store.AuditFilter{OrgID: org, PageSize: 3}
		for {
			x, nx, errX := a.ListAudit(ctx, f)
			y, ny, errY := b.ListAudit(ctx, f)
			if errX != nil || errY != nil {
				t.Fatalf("ListAudit(%q): %v, %v", org, errX, errY)
			}
			same("ListAudit("+org+")", []any{x, nx}, []any{y, ny})
			audited += len(x)
			if nx == "" {
				break
			}
			f.PageToken = nx
		}
	}
	if audited == 0 {
		t.Fatal("no audit record listed")
	}
	ka, errA := a.ListKeys(ctx)
	kb, errB := b.ListKeys(ctx)
	if errA != nil || errB != nil || len(ka) == 0 {
		t.Fatalf("ListKeys: %d keys, %v, %v", len(ka), errA, errB)
	}
	same("ListKeys", ka, kb)
	sa, errA := a.Snapshot(ctx, t0)
	sb, errB := b.Snapshot(ctx, t0)
	if errA != nil || errB != nil || len(sa.Revoked) == 0 {
		t.Fatalf("Snapshot: %d revoked, %v, %v", len(sa.Revoked), errA, errB)
	}
	same("Snapshot", sa, sb)
	rev := a.Revision()
	if _, err := b.EventsAfter(ctx, 0, 10); !errors.Is(err, store.ErrCompacted) {
		t.Fatalf("EventsAfter(0) on the copy: %v, want ErrCompacted (the floor)", err)
	}
	events := 0
	for r := uint64(0); r <= rev; r++ {
		x, errX := a.EventsAfter(ctx, r, store.MaxEventLimit)
		y, errY := b.EventsAfter(ctx, r, store.MaxEventLimit)
		same(fmt.Sprintf("EventsAfter(%d)", r), x, y)
		sameErr(fmt.Sprintf("EventsAfter(%d)", r), errX, errY)
		if errX == nil && events == 0 {
			events = len(x)
		}
		dx, errX := a.DigestAt(ctx, r)
		dy, errY := b.DigestAt(ctx, r)
		same(fmt.Sprintf("DigestAt(%d)", r), dx, dy)
		sameErr(fmt.Sprintf("DigestAt(%d)", r), errX, errY)
	}
	if events == 0 {
		t.Fatal("no event after the floor")
	}
	return rev
}

// migrate runs `authority migrate` with args, adjust (when set) changing
// the migrator before it runs, and returns the exit code and the output.
func migrate(args []string, lookup func(string) (string, bool), adjust func(*migrator)) (code int, stdout, stderr string) {
	var out, errb strings.Builder
	code = migrateMain(args, lookup, &out, &errb, adjust)
	return code, out.String(), errb.String()
}

// compact runs `authority compact` with args.
func compact(args ...string) (code int, stdout, stderr string) {
	var out, errb strings.Builder
	code = compactMain(args, noEnv, &out, &errb)
	return code, out.String(), errb.String()
}
