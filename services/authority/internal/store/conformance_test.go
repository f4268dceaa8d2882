package store_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/internal/etcdtest"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
	"github.com/sigil-auth/sigil/services/authority/internal/store/storetest"
)

// TestConformanceBolt runs the store conformance suite on bbolt files; each
// test's file passes CheckFile (bbolt's check and the store's invariants)
// after it is closed.
func TestConformanceBolt(t *testing.T) {
	storetest.Run(t, storetest.Config{
		TreeSize: 1000,
		Open: func(t *testing.T) store.Store {
			return openBolt(t, filepath.Join(t.TempDir(), "sigil.db"))
		},
		Reopen: func(t *testing.T, s store.Store) store.Store {
			b := s.(*store.Bolt)
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			return openBolt(t, b.Path())
		},
	})
}

// openBolt opens the file at path; on cleanup it closes it and checks it.
func openBolt(t *testing.T, path string) *store.Bolt {
	t.Helper()
	s, err := store.Open(path, store.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := store.CheckFile(path, time.Second); err != nil {
			t.Errorf("CheckFile: %v", err)
		}
	})
	return s
}

// TestConformanceEtcd runs the same suite on a real etcd (embedded, shared
// by the test binary, one key prefix per test). The tree revoked at once
// is larger than one etcd transaction holds (--max-txn-ops 128), so the
// chunked revocation runs. Each test's prefix passes Etcd.Check, read by
// a second client after the test's store is closed.
func TestConformanceEtcd(t *testing.T) {
	srv := etcdtest.Shared(t)
	storetest.Run(t, storetest.Config{
		TreeSize: 200,
		Open: func(t *testing.T) store.Store {
			return openEtcd(t, srv, etcdtest.Prefix(t))
		},
		Reopen: func(t *testing.T, s store.Store) store.Store {
			e := s.(*store.Etcd)
			if err := e.Close(); err != nil {
				t.Fatal(err)
			}
			return openEtcd(t, srv, e.Prefix())
		},
	})
}

// openEtcd opens an etcd store under prefix; on cleanup it closes it and
// checks the prefix's invariants with another client.
func openEtcd(t *testing.T, srv *etcdtest.Server, prefix string) *store.Etcd {
	t.Helper()
	opts := store.EtcdOptions{Endpoints: []string{srv.Endpoint}, Prefix: prefix, DialTimeout: 5 * time.Second}
	s, err := store.OpenEtcd(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		c, err := store.OpenEtcd(context.Background(), opts)
		if err != nil {
			t.Errorf("reopen for the check: %v", err)
			return
		}
		defer c.Close()
		if err := c.Check(context.Background()); err != nil {
			t.Errorf("Check: %v", err)
		}
	})
	return s
}
