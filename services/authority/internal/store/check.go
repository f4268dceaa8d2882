package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// CheckFile opens a closed store file read-only and checks it: bbolt's own
// consistency check (pages, freelist) and the store's invariants (every
// index agrees with its records, nothing lies beyond the revision counter,
// every event and audit record decodes). It is what the tests, the crash
// test and an operator's offline check share. lockTimeout bounds the wait
// for a process that still holds the file.
func CheckFile(path string, lockTimeout time.Duration) error {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: lockTimeout})
	if err != nil {
		return fmt.Errorf("store: open for check: %w", err)
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		if len(errs) > 0 {
			return fmt.Errorf("store: bbolt check: %w", errors.Join(errs...))
		}
		if err := checkInvariants(boltKV{tx}); err != nil {
			return fmt.Errorf("store: invariants: %w", err)
		}
		return nil
	})
}

// checkInvariants checks that the indexes agree with the records and that
// no event or audit record is beyond the revision counter.
func checkInvariants(tx invKV) error {
	rev, err := tx.metaUint64(metaRevision)
	if err != nil {
		return err
	}
	floor, err := tx.metaUint64(metaCompacted)
	if err != nil {
		return err
	}
	if floor > rev {
		return fmt.Errorf("compacted %d > revision %d", floor, rev)
	}
	for _, b := range [][]byte{bucketEvents, bucketAudit} {
		k, err := tx.last(b)
		if err != nil {
			return err
		}
		if k != nil && binary.BigEndian.Uint64(k) > rev {
			return fmt.Errorf("bucket %s has revision %d > %d", b, binary.BigEndian.Uint64(k), rev)
		}
	}
	// A file from before history digests has no digest bucket; Open adds it.
	if d, err := tx.get(bucketDigests, be(rev)); err != nil {
		return err
	} else if tx.has(bucketDigests) && len(d) != DigestSize {
		return fmt.Errorf("no history digest at the last revision %d", rev)
	}
	if err := tx.scan(bucketEvents, nil, func(k, v []byte) error {
		_, err := decodeEvent(binary.BigEndian.Uint64(k), v)
		return err
	}); err != nil {
		return err
	}
	if err := checkOutbox(tx, rev); err != nil {
		return err
	}
	// Audit log and its index: one index entry per record.
	var nAudit int
	if err := tx.scan(bucketAudit, nil, func(k, v []byte) error {
		nAudit++
		a, err := decodeAudit(binary.BigEndian.Uint64(k), v)
		if err != nil {
			return err
		}
		if v, err := tx.get(bucketAuditByOrg, auditOrgKey(a.OrgID, a.Revision)); err != nil || v == nil {
			return fmt.Errorf("audit %d not indexed under %q", a.Revision, a.OrgID)
		}
		return nil
	}); err != nil {
		return err
	}
	if b, err := tx.count(bucketAuditByOrg); err != nil {
		return err
	} else if a := nAudit; a != b {
		return fmt.Errorf("%d audit records, %d index entries", a, b)
	}
	// Tokens and their indexes.
	var n, unrevoked int
	if err := tx.scan(bucketTokens, nil, func(k, v []byte) error {
		tk, createRev, err := decodeToken(v)
		if err != nil {
			return err
		}
		n++
		if tk.ID != string(k) || createRev == 0 || createRev > rev || tk.RevokeRev > rev {
			return fmt.Errorf("token %s: bad record (create %d, revoke %d)", k, createRev, tk.RevokeRev)
		}
		byOrg, err := tx.get(bucketTokensByOrg, byOrgKey(tk.OrgID, createRev, tk.ID))
		if err != nil {
			return err
		}
		byCreator, err := tx.get(bucketTokensByCreator, byCreatorKey(tk.OrgID, tk.CreatedBy, createRev, tk.ID))
		if err != nil {
			return err
		}
		if byOrg == nil || byCreator == nil {
			return fmt.Errorf("token %s: not in a listing index", tk.ID)
		}
		u, err := tx.get(bucketUnrevoked, unrevokedKey(tk.OrgID, tk.CreatedBy, tk.ID))
		if err != nil {
			return err
		}
		inUnrevoked := u != nil
		if inUnrevoked != (tk.RevokeRev == 0) || (tk.RevokeRev == 0) != tk.RevokeTime.IsZero() {
			return fmt.Errorf("token %s: revoked at %d but unrevoked index says %v", tk.ID, tk.RevokeRev, inUnrevoked)
		}
		if inUnrevoked {
			unrevoked++
		}
		if r, err := tx.get(bucketRevoked, k); err != nil {
			return err
		} else if tk.RevokeRev == 0 && r != nil {
			return fmt.Errorf("token %s: in revoked bucket but not revoked", tk.ID)
		}
		if tk.ParentID != "" {
			if err := checkParent(tx, &tk); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return err
	}
	// Every parent index entry names a stored token minted through the
	// parent it is filed under.
	if err := tx.scan(bucketTokensByParent, nil, func(k, _ []byte) error {
		d := &decoder{what: "parent index key", b: k}
		parent := string(d.raw())
		if d.err != nil {
			return d.err
		}
		tk, _, err := getToken(tx, string(d.b))
		if err != nil {
			return fmt.Errorf("parent index: %w", err)
		}
		if tk.ParentID != parent {
			return fmt.Errorf("parent index files token %s under %s, its record under %q", tk.ID, parent, tk.ParentID)
		}
		return nil
	}); err != nil {
		return err
	}
	for _, c := range []struct {
		b    []byte
		want int
	}{{bucketTokensByOrg, n}, {bucketTokensByCreator, n}, {bucketUnrevoked, unrevoked}} {
		if got, err := tx.count(c.b); err != nil {
			return err
		} else if got != c.want {
			return fmt.Errorf("bucket %s: %d entries, want %d", c.b, got, c.want)
		}
	}
	return tx.scan(bucketTokenNames, nil, func(k, v []byte) error {
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

// checkParent checks a token minted through another: it is in the parent
// index, its parent is stored, and the revocation cascade left it revoked
// when its parent is. (Not necessarily before it: a file from before the
// cascade had its live descendants revoked when their ancestor was revoked
// again.)
func checkParent(tx invKV, tk *Token) error {
	if v, err := tx.get(bucketTokensByParent, childKey(tk.ParentID, tk.ID)); err != nil {
		return err
	} else if v == nil {
		return fmt.Errorf("token %s: not in the parent index", tk.ID)
	}
	p, _, err := getToken(tx, tk.ParentID)
	if err != nil {
		return fmt.Errorf("token %s: parent: %w", tk.ID, err)
	}
	if p.RevokeRev != 0 && tk.RevokeRev == 0 {
		return fmt.Errorf("token %s: unrevoked when its parent %s was revoked (at %d)", tk.ID, p.ID, p.RevokeRev)
	}
	return nil
}

// invKV is what checkInvariants reads: a kv (read-only use) that can also
// count a bucket's keys and find its last key.
type invKV interface {
	kv
	count(bucket []byte) (int, error)
	last(bucket []byte) ([]byte, error)
	has(bucket []byte) bool
	metaUint64(key []byte) (uint64, error)
}

func (b boltKV) count(bucket []byte) (int, error) { return b.tx.Bucket(bucket).Stats().KeyN, nil }

func (b boltKV) last(bucket []byte) ([]byte, error) {
	k, _ := b.tx.Bucket(bucket).Cursor().Last()
	return k, nil
}

func (b boltKV) has(bucket []byte) bool { return b.tx.Bucket(bucket) != nil }

func (b boltKV) metaUint64(key []byte) (uint64, error) {
	return decodeUint64(string(key), b.tx.Bucket(bucketMeta).Get(key))
}
