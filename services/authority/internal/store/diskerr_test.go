package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestFullOrReadOnlyDiskIsUnavailable: a commit that fails because the
// disk is full or read-only (as bbolt reports it: the system's error, or
// only its text) is ErrUnavailable with ErrDiskFull or ErrReadOnly, and
// nothing was written; the next commit, once the disk takes writes
// again, succeeds.
func TestFullOrReadOnlyDiskIsUnavailable(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"write ENOSPC", &fs.PathError{Op: "write", Path: "sigil.db", Err: syscall.ENOSPC}, ErrDiskFull},
		{"resize ENOSPC as text", fmt.Errorf("file resize error: %s", syscall.ENOSPC), ErrDiskFull},
		{"quota", &fs.PathError{Op: "write", Path: "sigil.db", Err: syscall.EDQUOT}, ErrDiskFull},
		{"read-only", &fs.PathError{Op: "write", Path: "sigil.db", Err: syscall.EROFS}, ErrReadOnly},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTest(t)
			failing := true
			s.commit = func(fn func(*bolt.Tx) error) error {
				if failing {
					// The transaction runs and is rolled back by the
					// failing commit, as bbolt does on a failed write.
					err := s.db.Update(func(tx *bolt.Tx) error {
						if err := fn(tx); err != nil {
							return err
						}
						return errRollbackForTest
					})
					if !errors.Is(err, errRollbackForTest) {
						return err
					}
					return tc.err
				}
				return s.db.Update(fn)
			}
			tk := tok("o", "full", "u", time.Hour)
			_, err := s.CreateToken(context.Background(), tk, auditFor(AuditTokenCreated, t0))
			if !errors.Is(err, ErrUnavailable) || !errors.Is(err, tc.want) {
				t.Fatalf("CreateToken on a failing disk: %v, want ErrUnavailable and %v", err, tc.want)
			}
			if _, err := s.GetToken(context.Background(), tk.ID); !errors.Is(err, ErrNotFound) {
				t.Fatalf("after the failed commit: GetToken = %v, want ErrNotFound", err)
			}
			failing = false
			if _, err := s.CreateToken(context.Background(), tk, auditFor(AuditTokenCreated, t0)); err != nil {
				t.Fatalf("CreateToken once the disk takes writes: %v", err)
			}
		})
	}
	if err := mapWriteErr(errors.New("boom")); errors.Is(err, ErrUnavailable) {
		t.Errorf("an unrelated error became %v", err)
	}
}

var errRollbackForTest = errors.New("rolled back by the test's failing disk")
