package offline

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sigil-auth/sigil/internal/etcdtest"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// fileSum hashes a file's bytes.
func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// keysUnder counts the etcd keys under prefix.
func keysUnder(t *testing.T, prefix string) int64 {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcdtest.Shared(t).Endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}

// small makes the copy take many transactions.
func small(m *migrator) { m.maxOps, m.maxBytes = 16, 4096 }

func migrateArgs(fx fixture, prefix string, extra ...string) []string {
	return append([]string{"--from-data-dir", fx.dir, "--etcd-prefix", prefix}, extra...)
}

// TestMigrateCopiesEverything migrates a filled file into etcd and finds
// every read an RPC makes answered alike by the file and the etcd store,
// at the same epoch and revision; the file is left as it was, the etcd
// store passes its invariant check, and both stores, given the same next
// mutation, reach the same revision and history digest.
func TestMigrateCopiesEverything(t *testing.T) {
	fx := fill(t)
	srv := etcdtest.Shared(t)
	prefix := etcdtest.Prefix(t)
	before := fileSum(t, fx.path)
	txns := 0
	env := func(name string) (string, bool) {
		if name == "SIGIL_AUTHORITY_ETCD_ENDPOINTS" { // the endpoints come from the environment
			return srv.Endpoint, true
		}
		return "", false
	}
	code, out, errOut := migrate(migrateArgs(fx, prefix), env, func(m *migrator) {
		small(m)
		m.afterTxn = func(n int) error { txns = n; return nil }
	})
	if code != 0 {
		t.Fatalf("migrate: exit %d: %s", code, errOut)
	}
	if txns < 5 {
		t.Fatalf("the copy took %d transactions, want several (16 puts each at most)", txns)
	}
	for _, want := range []string{"verified: the same keys and values", "without a snapshot", prefix} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if fileSum(t, fx.path) != before {
		t.Fatal("migrate changed the file")
	}
	if n := keysUnder(t, prefix+markerName); n != 0 {
		t.Fatal("the marker is left after a finished migration")
	}
	ctx := context.Background()
	b, e := openBolt(t, fx.path), openEtcd(t, prefix)
	rev := sameStores(t, b, e, fx.ids)
	if err := e.Check(ctx); err != nil {
		t.Fatalf("etcd store check: %v", err)
	}
	next := tokenOf("org-a", "after-migration", "alice", "k2", 24*time.Hour)
	rb, errB := b.CreateToken(ctx, next, audit(store.AuditTokenCreated, "org-a"))
	re, errE := e.CreateToken(ctx, next, audit(store.AuditTokenCreated, "org-a"))
	if errB != nil || errE != nil || rb != rev+1 || re != rev+1 {
		t.Fatalf("the next mutation: bbolt %d %v, etcd %d %v; want both at %d", rb, errB, re, errE, rev+1)
	}
	db, _ := b.DigestAt(ctx, rb)
	de, _ := e.DigestAt(ctx, re)
	if db == nil || !bytes.Equal(db, de) {
		t.Fatal("the history digests part after the migration")
	}
}

// TestMigrateRefusesLockedFile: a file an authority holds is refused, with
// its path named, and nothing is written to etcd.
func TestMigrateRefusesLockedFile(t *testing.T) {
	fx := fill(t)
	openBolt(t, fx.path) // as a running authority holds it
	prefix := etcdtest.Prefix(t)
	code, _, errOut := migrate(migrateArgs(fx, prefix, "--etcd-endpoints", etcdtest.Shared(t).Endpoint, "--lock-timeout", "200ms"), noEnv, nil)
	if code != 1 || !strings.Contains(errOut, fx.path) || !strings.Contains(errOut, "running authority") {
		t.Fatalf("exit %d: %s; want 1 naming %s", code, errOut, fx.path)
	}
	if n := keysUnder(t, prefix); n != 0 {
		t.Fatalf("%d keys written under the prefix", n)
	}
}

// TestMigrateRefusesNonEmptyPrefix: a prefix that holds a store is never
// written, with or without --force-restart.
func TestMigrateRefusesNonEmptyPrefix(t *testing.T) {
	fx := fill(t)
	prefix := etcdtest.Prefix(t)
	existing := openEtcd(t, prefix)
	epoch := existing.Epoch()
	if _, err := existing.AddKey(context.Background(), key("kx", store.KeyActive, t0), audit(store.AuditKeyRotated, "")); err != nil {
		t.Fatal(err)
	}
	_ = existing.Close()
	for _, extra := range [][]string{nil, {"--force-restart"}} {
		args := migrateArgs(fx, prefix, append([]string{"--etcd-endpoints", etcdtest.Shared(t).Endpoint}, extra...)...)
		code, _, errOut := migrate(args, noEnv, nil)
		if code != 1 || !strings.Contains(errOut, "is not empty") || !strings.Contains(errOut, prefix) {
			t.Fatalf("%v: exit %d: %s; want 1, prefix not empty", extra, code, errOut)
		}
	}
	s := openEtcd(t, prefix)
	if s.Epoch() != epoch || s.Revision() != 1 {
		t.Fatalf("the existing store is now at epoch %s revision %d, was %s 1", s.Epoch(), s.Revision(), epoch)
	}
	if err := s.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestMigrateInterrupted: a migration that stops after some transactions
// (as a crash would) leaves the prefix marked, authorities refuse to open
// it, a new migrate refuses it without --force-restart, and with it
// starts over and finishes a store equal to the file.
func TestMigrateInterrupted(t *testing.T) {
	fx := fill(t)
	endpoint := etcdtest.Shared(t).Endpoint
	prefix := etcdtest.Prefix(t)
	crash := errors.New("injected crash")
	code, _, errOut := migrate(migrateArgs(fx, prefix, "--etcd-endpoints", endpoint), noEnv, func(m *migrator) {
		small(m)
		m.afterTxn = func(n int) error {
			if n == 3 {
				return crash
			}
			return nil
		}
	})
	if code != 1 || !strings.Contains(errOut, "injected crash") || !strings.Contains(errOut, "--force-restart") {
		t.Fatalf("interrupted run: exit %d: %s", code, errOut)
	}
	if n := keysUnder(t, prefix); n < 5 {
		t.Fatalf("%d keys under the prefix, want the 3 transactions' keys, the marker and the schema", n)
	}
	s, err := store.OpenEtcd(context.Background(), store.EtcdOptions{Endpoints: []string{endpoint}, Prefix: prefix})
	if err == nil {
		_ = s.Close()
		t.Fatal("OpenEtcd opened a prefix whose migration did not finish")
	}
	// The message docs/operations.md quotes.
	if !strings.Contains(err.Error(), "holds an unfinished migration: run `authority migrate` again with --force-restart") {
		t.Errorf("OpenEtcd on an unfinished migration: %v", err)
	}
	code, _, errOut = migrate(migrateArgs(fx, prefix, "--etcd-endpoints", endpoint), noEnv, nil)
	if code != 1 || !strings.Contains(errOut, "unfinished migration") || !strings.Contains(errOut, "--force-restart") {
		t.Fatalf("rerun without --force-restart: exit %d: %s", code, errOut)
	}
	code, out, errOut := migrate(migrateArgs(fx, prefix, "--etcd-endpoints", endpoint, "--force-restart"), noEnv, small)
	if code != 0 {
		t.Fatalf("rerun with --force-restart: exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "--force-restart: deleted") {
		t.Errorf("output does not say what --force-restart deleted:\n%s", out)
	}
	sameStores(t, openBolt(t, fx.path), openEtcd(t, prefix), fx.ids)
}

// TestMigrateTakenOver: when a second migrate takes an unfinished prefix
// over with --force-restart while the first still runs, the first stops at
// its next transaction (each is guarded by its marker) and the second's
// store is whole.
func TestMigrateTakenOver(t *testing.T) {
	fx := fill(t)
	endpoint := etcdtest.Shared(t).Endpoint
	prefix := etcdtest.Prefix(t)
	args := migrateArgs(fx, prefix, "--etcd-endpoints", endpoint)
	var second int
	var secondErr string
	code, _, errOut := migrate(args, noEnv, func(m *migrator) {
		small(m)
		m.afterTxn = func(n int) error {
			if n == 2 {
				second, _, secondErr = migrate(append(args, "--force-restart"), noEnv, nil)
			}
			return nil
		}
	})
	if second != 0 {
		t.Fatalf("second migrate: exit %d: %s", second, secondErr)
	}
	if code != 1 || !strings.Contains(errOut, "marker") {
		t.Fatalf("first migrate: exit %d: %s; want 1, marker changed", code, errOut)
	}
	sameStores(t, openBolt(t, fx.path), openEtcd(t, prefix), fx.ids)
}

// TestMigrateFlags: bad flags are refused with exit code 2, naming the flag.
func TestMigrateFlags(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{nil, []string{"--from-data-dir: is required", "--etcd-endpoints: is required"}},
		{[]string{"--from-data-dir", "d", "--etcd-endpoints", "http://127.0.0.1:1", "--etcd-prefix", "nosuffix"}, []string{"--etcd-prefix"}},
		{[]string{"--from-data-dir", "d", "--etcd-endpoints", "ftp://127.0.0.1:1"}, []string{"--etcd-endpoints: endpoint 1"}},
		{[]string{"--from-data-dir", "d", "--etcd-endpoints", "http://u:secret@127.0.0.1:1"}, []string{"must not carry a user"}},
		{[]string{"--from-data-dir", "d", "--etcd-endpoints", "http://127.0.0.1:1", "--etcd-ca", "ca.pem"}, []string{"must be https://"}},
		{[]string{"--from-data-dir", "d", "--etcd-endpoints", "https://127.0.0.1:1", "--etcd-cert", "c.pem"}, []string{"--etcd-cert and --etcd-key go together"}},
		{[]string{"--from-data-dir", "d", "--etcd-endpoints", "http://127.0.0.1:1", "--lock-timeout", "0s"}, []string{"--lock-timeout"}},
		{[]string{"--from-data-dir", "d", "--etcd-endpoints", "http://127.0.0.1:1", "extra"}, []string{`unexpected argument "extra"`}},
	}
	for _, tc := range tests {
		code, _, errOut := migrate(tc.args, noEnv, nil)
		if code != 2 {
			t.Errorf("%v: exit %d, want 2: %s", tc.args, code, errOut)
		}
		for _, w := range tc.want {
			if !strings.Contains(errOut, w) {
				t.Errorf("%v: %q lacks %q", tc.args, errOut, w)
			}
		}
		if strings.Contains(errOut, "secret") {
			t.Errorf("%v: the message shows the password: %s", tc.args, errOut)
		}
	}
	if code, _, _ := migrate([]string{"-h"}, noEnv, nil); code != 0 {
		t.Errorf("-h: exit %d", code)
	}
	code, _, errOut := migrate([]string{"--from-data-dir", t.TempDir(), "--etcd-endpoints", "http://127.0.0.1:1"}, noEnv, nil)
	if code != 1 || !strings.Contains(errOut, "no database file") {
		t.Errorf("missing file: exit %d: %s", code, errOut)
	}
}
