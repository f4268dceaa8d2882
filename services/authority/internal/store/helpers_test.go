package store

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/internal/etcdtest"

	"go.uber.org/goleak"

	"github.com/sigil-auth/sigil/pkg/scope"
)

// TestMain stops the embedded etcd some tests share before it looks for
// leaked goroutines.
func TestMain(m *testing.M) {
	code := m.Run()
	etcdtest.StopShared()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// t0 is the tests' "now".
var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

const testKeyID = "k1"

// openTest opens a store in a temporary directory, adds the signing key
// testKeyID, and on cleanup closes it and checks the file: bbolt's
// consistency check and the store's own invariants.
func openTest(t testing.TB) *Bolt {
	t.Helper()
	s := openBare(t, filepath.Join(t.TempDir(), "sigil.db"))
	addTestKey(t, s, testKeyID)
	return s
}

// openBare opens a store at path without adding a key; cleanup checks it.
func openBare(t testing.TB, path string) *Bolt {
	t.Helper()
	s, err := Open(path, Options{Timeout: time.Second})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		verifyFile(t, path)
	})
	return s
}

func addTestKey(t testing.TB, s Store, id string) uint64 {
	t.Helper()
	rev, err := s.AddKey(context.Background(), Key{
		ID: id, State: KeyActive, Public: bytes.Repeat([]byte{7}, 32),
		SealedPrivate: []byte("sealed-" + id), CreateTime: t0.Add(-time.Hour), ActivateTime: t0.Add(-time.Hour),
	}, AuditRecord{Time: t0, Actor: "operator", Action: AuditKeyRotated})
	if err != nil {
		t.Fatalf("AddKey(%s): %v", id, err)
	}
	return rev
}

var idSeq atomic.Uint64

// newID returns a fresh token id.
func newID() string { return fmt.Sprintf("%032x", idSeq.Add(1)) }

// tok returns a token made at t0 that lives for ttl.
func tok(org, name, creator string, ttl time.Duration) Token {
	return Token{
		ID: newID(), OrgID: org, Name: name, Description: "for " + name,
		Grants:    []scope.Grant{{Permissions: []string{"domain:view"}}, {Permissions: []string{"domain:renew"}, Resources: []string{"domains/example.com"}}},
		CreatedBy: creator, KeyID: testKeyID, CreateTime: t0, ExpireTime: t0.Add(ttl),
	}
}

func auditFor(action AuditAction, at time.Time) AuditRecord {
	return AuditRecord{Time: at, Actor: "operator", Action: action, Reason: "test"}
}

// mustCreate stores t and returns its revision.
func mustCreate(t testing.TB, s Store, tk Token) uint64 {
	t.Helper()
	rev, err := s.CreateToken(context.Background(), tk, auditFor(AuditTokenCreated, tk.CreateTime))
	if err != nil {
		t.Fatalf("CreateToken(%s %q): %v", tk.OrgID, tk.Name, err)
	}
	return rev
}

// verifyFile checks a closed store file: bbolt's consistency check and the
// store's own invariants (CheckFile).
func verifyFile(t testing.TB, path string) {
	t.Helper()
	if err := CheckFile(path, time.Second); err != nil {
		t.Errorf("check %s: %v", filepath.Base(path), err)
	}
}

// commitMode is how mutations reach bbolt: the store's group committer
// (commit.go), or, for comparison in tests and benchmarks, db.Batch or one
// db.Update per mutation. Measured with BenchmarkCreateTokenParallel (50
// writers) and BenchmarkCreateTokenSerial (one writer) on the development
// VM (2 shared cores, ext4 on a virtual disk, fsync ≈ 0.4 ms), default
// benchtime, -count=2:
//
//	                 50 writers          1 writer, per create
//	group commit     24,700-26,300/s     0.46 ms
//	db.Batch 2 ms    13,300/s            2.85 ms
//	db.Batch 10 ms    4,150/s            (bbolt's default delay)
//	db.Update         1,950-2,150/s      0.47-0.54 ms
//
// db.Batch helps a lot under load (one fsync per batch) but makes a lone
// writer wait for its timer; the group committer batches more and never
// waits for a timer, so alone it has Update's latency.
type commitMode int

const (
	commitGroup commitMode = iota
	// commitBatch groups mutations with db.Batch, which waits up to
	// MaxBatchDelay (batchDelay) for a batch to fill before committing it.
	commitBatch
	// commitUpdate runs one db.Update (and one fsync) per mutation.
	commitUpdate
)

// batchDelay replaces bbolt's 10 ms default MaxBatchDelay in commitBatch
// mode.
const batchDelay = 2 * time.Millisecond

// setMode makes s commit its mutations in mode.
func setMode(s *Bolt, mode commitMode) {
	switch mode {
	case commitGroup:
		s.commit = nil
	case commitBatch:
		s.db.MaxBatchDelay = batchDelay
		s.commit = s.db.Batch
	case commitUpdate:
		s.commit = s.db.Update
	}
}

// listAuditAfter returns one page of up to limit records of org with a
// revision above after.
func listAuditAfter(ctx context.Context, s Store, org string, after uint64, limit int) ([]AuditRecord, error) {
	page := ""
	if after > 0 {
		page = auditPageToken(org, after)
	}
	recs, _, err := s.ListAudit(ctx, AuditFilter{OrgID: org, PageSize: limit, PageToken: page})
	return recs, err
}
