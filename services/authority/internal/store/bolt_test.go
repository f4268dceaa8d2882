package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestOpenNewFile(t *testing.T) {
	s := openBare(t, filepath.Join(t.TempDir(), "new.db"))
	if len(s.Epoch()) != 32 || strings.Trim(s.Epoch(), "0123456789abcdef") != "" {
		t.Errorf("epoch %q, want 32 lower-case hex characters", s.Epoch())
	}
	if s.Revision() != 0 {
		t.Errorf("revision %d, want 0", s.Revision())
	}
	fi, err := os.Stat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestNewFileHasNewEpoch(t *testing.T) {
	dir := t.TempDir()
	a := openBare(t, filepath.Join(dir, "a.db"))
	b := openBare(t, filepath.Join(dir, "b.db"))
	if a.Epoch() == b.Epoch() {
		t.Errorf("two new files share epoch %s", a.Epoch())
	}
}

func TestReopenKeepsEpochRevisionAndData(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sigil.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	addTestKey(t, s, testKeyID)
	tk := tok("org", "ci", "alice", 30*24*time.Hour)
	mustCreate(t, s, tk)
	if _, _, _, err := s.RevokeToken(ctx, tk.ID, auditFor(AuditTokenRevoked, t0.Add(time.Minute))); err != nil {
		t.Fatal(err)
	}
	epoch, rev := s.Epoch(), s.Revision()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := openBare(t, path)
	if s2.Epoch() != epoch || s2.Revision() != rev {
		t.Fatalf("reopened: epoch %s revision %d, want %s %d", s2.Epoch(), s2.Revision(), epoch, rev)
	}
	got, err := s2.GetToken(ctx, tk.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.RevokeRev != rev || got.Name != "ci" {
		t.Errorf("token after reopen: %+v", got)
	}
	next, err := s2.CreateToken(ctx, tok("org", "ci", "alice", time.Hour), auditFor(AuditTokenCreated, t0))
	if err != nil {
		t.Fatal(err)
	}
	if next != rev+1 {
		t.Errorf("first revision after reopen %d, want %d", next, rev+1)
	}
}

// TestOpenLocked checks outcomes and their order, not durations: a second
// Open of a held file fails with ErrLocked once its timeout passes, and an
// Open waiting for the lock succeeds after the holder closes the file.
func TestOpenLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sigil.db")
	first := openBare(t, path)
	// bbolt locks with flock, which is per open file: a second Open in the
	// same process waits like another process would.
	s, err := Open(path, Options{Timeout: 50 * time.Millisecond})
	if err == nil {
		s.Close()
		t.Fatal("second Open succeeded")
	}
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("err = %v, want ErrLocked", err)
	}
	if msg := err.Error(); !strings.Contains(msg, path) || !strings.Contains(msg, "another process") {
		t.Errorf("message %q should name the file and say another process holds it", msg)
	}

	opened := make(chan error, 1)
	go func() {
		s, err := Open(path, Options{Timeout: time.Minute})
		if err == nil {
			err = s.Close()
		}
		opened <- err
	}()
	select {
	case err := <-opened:
		t.Fatalf("Open returned while the file is locked: %v", err)
	default:
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-opened; err != nil {
		t.Fatalf("Open after the holder closed: %v", err)
	}
}

func TestOpenRefuses(t *testing.T) {
	for _, tc := range []struct {
		name    string
		prepare func(tx *bolt.Tx) error
		want    error
	}{
		{"unknown schema version", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketMeta).Put(metaSchema, be(schemaVersion+1))
		}, ErrSchemaVersion},
		{"missing bucket", func(tx *bolt.Tx) error {
			return tx.DeleteBucket(bucketAudit)
		}, ErrCorrupt},
		{"bad revision", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketMeta).Put(metaRevision, []byte{1})
		}, ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "sigil.db")
			s, err := Open(path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.db.Update(tc.prepare); err != nil {
				t.Fatal(err)
			}
			s.Close()
			s, err = Open(path, Options{})
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), path) {
				t.Errorf("err = %v, want %v naming the file", err, tc.want)
			}
		})
	}

	t.Run("foreign bbolt file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "other.db")
		db, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("x")); return err }); err != nil {
			t.Fatal(err)
		}
		db.Close()
		if s, err := Open(path, Options{}); !errors.Is(err, ErrCorrupt) {
			if err == nil {
				s.Close()
			}
			t.Errorf("err = %v, want ErrCorrupt", err)
		}
	})

	t.Run("negative timeout", func(t *testing.T) {
		if _, err := Open(filepath.Join(t.TempDir(), "x.db"), Options{Timeout: -time.Second}); !errors.Is(err, ErrInvalid) {
			t.Errorf("err = %v, want ErrInvalid", err)
		}
	})
}

func TestCloseIsIdempotentAndLaterCallsFail(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	ch := s.Changed()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	select {
	case <-ch:
	default:
		t.Error("Close did not wake Changed waiters")
	}
	checks := map[string]error{}
	_, checks["CreateToken"] = s.CreateToken(ctx, tok("o", "n", "c", time.Hour), auditFor(AuditTokenCreated, t0))
	_, checks["GetToken"] = s.GetToken(ctx, "x")
	_, _, checks["ListTokens"] = s.ListTokens(ctx, ListFilter{OrgID: "o"})
	_, _, _, checks["RevokeToken"] = s.RevokeToken(ctx, "x", auditFor(AuditTokenRevoked, t0))
	_, _, checks["RevokeTokens"] = s.RevokeTokens(ctx, "o", "", auditFor(AuditTokensRevoked, t0))
	_, checks["AddKey"] = s.AddKey(ctx, Key{ID: "k9", State: KeyActive, Public: []byte{1}}, AuditRecord{})
	_, checks["SetKeyState"] = s.SetKeyState(ctx, testKeyID, KeyVerifyOnly)
	_, checks["ListKeys"] = s.ListKeys(ctx)
	_, _, checks["ListAudit"] = s.ListAudit(ctx, AuditFilter{OrgID: "o", PageSize: 10})
	_, checks["Snapshot"] = s.Snapshot(ctx, t0)
	_, checks["EventsAfter"] = s.EventsAfter(ctx, 0, 10)
	_, checks["Compact"] = s.Compact(ctx, t0)
	for name, err := range checks {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}

func TestChangedIsClosedByCommit(t *testing.T) {
	s := openTest(t)
	ch := s.Changed()
	select {
	case <-ch:
		t.Fatal("Changed closed before any commit")
	default:
	}
	rev := mustCreate(t, s, tok("org", "a", "alice", time.Hour))
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("Changed not closed after a commit")
	}
	if s.Revision() != rev {
		t.Errorf("Revision() = %d after waking, want %d", s.Revision(), rev)
	}
	// A fresh channel waits for the next commit; a write-free call (a
	// rejected create) does not close it.
	ch = s.Changed()
	if _, err := s.CreateToken(context.Background(), tok("org", "a", "alice", time.Hour), auditFor(AuditTokenCreated, t0)); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("err = %v", err)
	}
	select {
	case <-ch:
		t.Error("Changed closed without a commit")
	default:
	}
}

func TestRevisionsStrictlyIncrease(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	last := s.Revision()
	step := func(name string, rev uint64, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if rev <= last {
			t.Fatalf("%s: revision %d after %d", name, rev, last)
		}
		if s.Revision() != rev {
			t.Fatalf("%s: Revision() = %d, want %d", name, s.Revision(), rev)
		}
		last = rev
	}
	a, b := tok("o", "a", "u", time.Hour), tok("o", "b", "u", time.Hour)
	rev, err := s.CreateToken(ctx, a, auditFor(AuditTokenCreated, t0))
	step("create a", rev, err)
	rev, err = s.CreateToken(ctx, b, auditFor(AuditTokenCreated, t0))
	step("create b", rev, err)
	_, rev, _, err = s.RevokeToken(ctx, a.ID, auditFor(AuditTokenRevoked, t0))
	step("revoke a", rev, err)
	rev, _, err = s.RotateToken(ctx, b.ID, tok("o", "b", "u", time.Hour), auditFor(AuditTokenRotated, t0))
	step("rotate b", rev, err)
	rev, err = s.AddKey(ctx, Key{ID: "k2", State: KeyPending, Public: []byte{2}}, auditFor(AuditKeyRotated, t0))
	step("add key", rev, err)
	rev, err = s.SetKeyState(ctx, "k2", KeyActive)
	step("activate key", rev, err)
	rev, err = s.RevokeKey(ctx, "k2", auditFor(AuditKeyRevoked, t0))
	step("revoke key", rev, err)
	// Compaction removes events but never lowers the counter.
	if _, err := s.Compact(ctx, t0.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	rev, err = s.CreateToken(ctx, tok("o", "c", "u", time.Hour), auditFor(AuditTokenCreated, t0))
	step("create after compaction", rev, err)
}

func TestCancelledContext(t *testing.T) {
	s := openTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rev := s.Revision()
	if _, err := s.CreateToken(ctx, tok("o", "a", "u", time.Hour), auditFor(AuditTokenCreated, t0)); !errors.Is(err, context.Canceled) {
		t.Errorf("CreateToken: %v, want context.Canceled", err)
	}
	if _, err := s.GetToken(ctx, "x"); !errors.Is(err, context.Canceled) {
		t.Errorf("GetToken: %v, want context.Canceled", err)
	}
	if s.Revision() != rev {
		t.Error("a cancelled call wrote")
	}
}
