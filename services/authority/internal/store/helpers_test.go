package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"

	"github.com/sigil-auth/sigil/pkg/scope"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

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

func addTestKey(t testing.TB, s *Bolt, id string) uint64 {
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
func mustCreate(t testing.TB, s *Bolt, tk Token) uint64 {
	t.Helper()
	rev, err := s.CreateToken(context.Background(), tk, auditFor(AuditTokenCreated, tk.CreateTime))
	if err != nil {
		t.Fatalf("CreateToken(%s %q): %v", tk.OrgID, tk.Name, err)
	}
	return rev
}

// verifyFile reopens a closed store file read-only, runs bbolt's
// consistency check and checks the store's invariants.
func verifyFile(t testing.TB, path string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Errorf("reopen for check: %v", err)
		return
	}
	defer db.Close()
	if err := db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			t.Errorf("bbolt check: %v", err)
		}
		return checkInvariants(tx)
	}); err != nil {
		t.Errorf("store invariants: %v", err)
	}
}

// checkInvariants checks that the indexes agree with the records and that
// no event or audit record is beyond the revision counter.
func checkInvariants(tx *bolt.Tx) error {
	rev, err := currentRevision(tx)
	if err != nil {
		return err
	}
	floor, err := compactedRevision(tx)
	if err != nil {
		return err
	}
	if floor > rev {
		return fmt.Errorf("compacted %d > revision %d", floor, rev)
	}
	for _, b := range [][]byte{bucketEvents, bucketAudit} {
		if k, _ := tx.Bucket(b).Cursor().Last(); k != nil && binary.BigEndian.Uint64(k) > rev {
			return fmt.Errorf("bucket %s has revision %d > %d", b, binary.BigEndian.Uint64(k), rev)
		}
	}
	if err := tx.Bucket(bucketEvents).ForEach(func(k, v []byte) error {
		_, err := decodeEvent(binary.BigEndian.Uint64(k), v)
		return err
	}); err != nil {
		return err
	}
	// Audit log and its index: one index entry per record.
	audit, byOrg := tx.Bucket(bucketAudit), tx.Bucket(bucketAuditByOrg)
	if err := audit.ForEach(func(k, v []byte) error {
		a, err := decodeAudit(binary.BigEndian.Uint64(k), v)
		if err != nil {
			return err
		}
		if byOrg.Get(auditOrgKey(a.OrgID, a.Revision)) == nil {
			return fmt.Errorf("audit %d not indexed under %q", a.Revision, a.OrgID)
		}
		return nil
	}); err != nil {
		return err
	}
	if a, b := audit.Stats().KeyN, byOrg.Stats().KeyN; a != b {
		return fmt.Errorf("%d audit records, %d index entries", a, b)
	}
	// Tokens and their indexes.
	var n, unrevoked int
	tokens := tx.Bucket(bucketTokens)
	if err := tokens.ForEach(func(k, v []byte) error {
		tk, createRev, err := decodeToken(v)
		if err != nil {
			return err
		}
		n++
		if tk.ID != string(k) || createRev == 0 || createRev > rev || tk.RevokeRev > rev {
			return fmt.Errorf("token %s: bad record (create %d, revoke %d)", k, createRev, tk.RevokeRev)
		}
		if tx.Bucket(bucketTokensByOrg).Get(byOrgKey(tk.OrgID, createRev, tk.ID)) == nil ||
			tx.Bucket(bucketTokensByCreator).Get(byCreatorKey(tk.OrgID, tk.CreatedBy, createRev, tk.ID)) == nil {
			return fmt.Errorf("token %s: not in a listing index", tk.ID)
		}
		inUnrevoked := tx.Bucket(bucketUnrevoked).Get(unrevokedKey(tk.OrgID, tk.CreatedBy, tk.ID)) != nil
		if inUnrevoked != (tk.RevokeRev == 0) || (tk.RevokeRev == 0) != tk.RevokeTime.IsZero() {
			return fmt.Errorf("token %s: revoked at %d but unrevoked index says %v", tk.ID, tk.RevokeRev, inUnrevoked)
		}
		if inUnrevoked {
			unrevoked++
		}
		if tk.RevokeRev == 0 && tx.Bucket(bucketRevoked).Get(k) != nil {
			return fmt.Errorf("token %s: in revoked bucket but not revoked", tk.ID)
		}
		return nil
	}); err != nil {
		return err
	}
	for _, c := range []struct {
		b    []byte
		want int
	}{{bucketTokensByOrg, n}, {bucketTokensByCreator, n}, {bucketUnrevoked, unrevoked}} {
		if got := tx.Bucket(c.b).Stats().KeyN; got != c.want {
			return fmt.Errorf("bucket %s: %d entries, want %d", c.b, got, c.want)
		}
	}
	return tx.Bucket(bucketTokenNames).ForEach(func(k, v []byte) error {
		tk, _, err := getToken(tx, string(v))
		if err != nil {
			return fmt.Errorf("name index: %w", err)
		}
		if !bytes.Equal(k, nameKey(tk.OrgID, tk.Name)) {
			return fmt.Errorf("name index entry for token %s has the wrong key", tk.ID)
		}
		if tk.RevokeRev != 0 {
			return fmt.Errorf("name index points to revoked token %s", tk.ID)
		}
		return nil
	})
}
