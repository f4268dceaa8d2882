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
