package store

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/internal/etcdtest"
)

// TestEtcdReadsSurviveEtcdCompaction: etcd's own history compaction
// (--auto-compaction-retention, `etcdctl compact`) may remove the etcd
// revision a read is pinned at, between its head and its data. The read
// then fails inside (shown on the unexported read), and every public read
// runs again on a fresh head and returns what it would have returned, not
// an error. On its own server: compacting the shared one would disturb the
// other tests.
func TestEtcdReadsSurviveEtcdCompaction(t *testing.T) {
	ctx := context.Background()
	endpoint := etcdtest.StartT(t)
	s, err := OpenEtcd(ctx, EtcdOptions{Endpoints: []string{endpoint}, Prefix: "/c/"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	addTestKey(t, s, testKeyID)
	var ids []string
	for i := range 5 {
		x := tok("o", string(rune('a'+i)), "u", time.Hour)
		mustCreate(t, s, x)
		ids = append(ids, x.ID)
	}
	if _, _, _, err := s.RevokeToken(ctx, ids[0], auditFor(AuditTokenRevoked, t0)); err != nil {
		t.Fatal(err)
	}
	rev := s.Revision()

	// compactOnce makes the next pinned read meet a compacted revision:
	// one more etcd write (outside the store), then etcd compacts up to it.
	fired := 0
	compactOnce := func() {
		s.pinnedHook = func(pinned int64) {
			s.pinnedHook = nil
			fired++
			put, err := s.cli.Put(ctx, "/elsewhere", "x")
			if err != nil {
				t.Error(err)
				return
			}
			if put.Header.Revision <= pinned {
				t.Errorf("etcd at %d, read pinned at %d", put.Header.Revision, pinned)
			}
			if _, err := s.cli.Compact(ctx, put.Header.Revision); err != nil {
				t.Error(err)
			}
		}
	}

	// The failure the retry covers.
	compactOnce()
	if _, err := s.eventsAfter(ctx, 0, 0); !errors.Is(err, errEtcdCompacted) {
		t.Fatalf("a read pinned at a compacted revision = %v, want errEtcdCompacted", err)
	}

	reads := map[string]func() (any, error){
		"EventsAfter": func() (any, error) { return s.EventsAfter(ctx, 0, 0) },
		"DigestAt":    func() (any, error) { return s.DigestAt(ctx, rev) },
		"Snapshot":    func() (any, error) { return s.Snapshot(ctx, t0) },
		"ListTokens": func() (any, error) {
			ts, next, err := s.ListTokens(ctx, ListFilter{OrgID: "o", PageSize: 3})
			return []any{ts, next}, err
		},
		"ListAudit": func() (any, error) {
			as, next, err := s.ListAudit(ctx, AuditFilter{OrgID: "o", PageSize: 3})
			return []any{as, next}, err
		},
	}
	for name, read := range reads {
		want, err := read()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		before := fired
		compactOnce()
		got, err := read()
		if err != nil {
			t.Fatalf("%s with its revision compacted meanwhile: %v", name, err)
		}
		if fired != before+1 {
			t.Fatalf("%s: the compaction hook did not run", name)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s after a compaction = %+v, want %+v", name, got, want)
		}
	}
	// A mutation that meets a compacted revision is retried too.
	before := fired
	compactOnce()
	if _, _, _, err := s.RevokeToken(ctx, ids[1], auditFor(AuditTokenRevoked, t0)); err != nil {
		t.Fatalf("revocation with its read revision compacted: %v", err)
	}
	if fired != before+1 {
		t.Fatal("the revocation made no pinned read for the hook")
	}
	if err := s.Check(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestEtcdCurrentRevisionReadsOtherCommits: a store's Revision follows
// other processes' commits through a watch, so it may lag; CurrentRevision
// reads the committed revision and is never behind a commit made before it
// was called. Shown with b's watch stopped, which freezes its Revision.
func TestEtcdCurrentRevisionReadsOtherCommits(t *testing.T) {
	ctx := context.Background()
	prefix := etcdtest.Prefix(t)
	a := openEtcdTest(t, prefix, EtcdOptions{})
	b := openEtcdTest(t, prefix, EtcdOptions{})
	b.stopWatch()
	<-b.watchDone
	addTestKey(t, a, testKeyID)
	rev := mustCreate(t, a, tok("o", "x", "u", time.Hour))
	if b.Revision() >= rev {
		t.Fatalf("b's Revision %d already at a's commit %d with its watch stopped", b.Revision(), rev)
	}
	got, err := CurrentRevision(ctx, b)
	if err != nil || got != rev {
		t.Fatalf("CurrentRevision on b = %d, %v, want %d", got, err, rev)
	}
	if b.Revision() != rev {
		t.Fatalf("b's Revision %d after CurrentRevision, want %d", b.Revision(), rev)
	}
	// With bbolt (one process) it is Revision.
	bs := openTest(t)
	if got, err := CurrentRevision(ctx, bs); err != nil || got != bs.Revision() {
		t.Fatalf("CurrentRevision on bbolt = %d, %v", got, err)
	}
}
