package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// The history digest chain identifies the event history a revision ends,
// by what it contains rather than by which file or process serves it:
//
//	digest(n) = SHA-256(digest(n-1) ‖ be(n) ‖ encoded event n)
//
// A follower resumes only from a revision whose digest it knows and the
// store holds equal (the revocation stream's resume check). A restored
// backup that has since taken other events, a replaced file or a file
// restarted from an older copy reaches the same revision numbers with other
// events, hence other digests, and its followers get a snapshot.
//
// The chain starts at a random seed: a new file seeds it at revision 0, and
// a file whose chain does not reach its last revision (written before this
// build, or by an older build after it) is reseeded at its last revision
// when opened. Digests are kept per revision in bucketDigests from the
// chain's start (or the compaction floor, whichever is higher) to the head;
// a follower behind that range gets a snapshot, as one behind compaction
// does. The seed being random, two files never share a chain they did not
// inherit from a common copy.

// DigestSize is the length of a history digest.
const DigestSize = sha256.Size

// bucketDigests maps be(revision) to the history digest at that revision,
// from the chain's start to the last revision.
var bucketDigests = []byte("digests")

// chainDigest returns the digest of event (rev, encoded) after prev.
func chainDigest(prev []byte, rev uint64, encoded []byte) []byte {
	h := sha256.New()
	h.Write(prev)
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], rev)
	h.Write(b[:])
	h.Write(encoded)
	return h.Sum(nil)
}

// initDigests makes sure the chain reaches rev, the file's last revision:
// it creates the bucket of a file made before digests existed and seeds
// the chain at rev when its head is elsewhere. It runs in Open's write
// transaction.
func initDigests(tx *bolt.Tx, rev uint64) error {
	b, err := tx.CreateBucketIfNotExists(bucketDigests)
	if err != nil {
		return err
	}
	if k, v := b.Cursor().Last(); k != nil && binary.BigEndian.Uint64(k) == rev && len(v) == DigestSize {
		return nil
	}
	// No chain, or one that stops short of the file's revision (an older
	// build appended events without digests): digests already stored still
	// describe this file's history up to their revisions; the chain goes on
	// from a fresh seed.
	seed := make([]byte, DigestSize)
	if _, err := rand.Read(seed); err != nil {
		return err
	}
	return b.Put(be(rev), seed)
}

// headDigest reads the digest at rev inside a write transaction.
func headDigest(r kv, rev uint64) ([]byte, error) {
	v, err := r.get(bucketDigests, be(rev))
	if err != nil {
		return nil, err
	}
	if len(v) != DigestSize {
		return nil, fmt.Errorf("%w: no history digest at revision %d", ErrCorrupt, rev)
	}
	return bytes.Clone(v), nil
}

// DigestAt returns the history digest at rev. It returns an error wrapping
// ErrCompacted when the store does not hold it: rev is below the
// compaction floor or the chain's start, or ahead of the store's revision.
func (s *Bolt) DigestAt(ctx context.Context, rev uint64) ([]byte, error) {
	var out []byte
	err := s.view(ctx, func(tx *bolt.Tx) error {
		out = nil
		d, err := digestAt(tx, rev)
		out = d
		return err
	})
	return out, err
}

// digestAt reads the digest at rev in tx (see DigestAt).
func digestAt(tx *bolt.Tx, rev uint64) ([]byte, error) {
	floor, err := compactedRevision(tx)
	if err != nil {
		return nil, err
	}
	cur, err := currentRevision(tx)
	if err != nil {
		return nil, err
	}
	if rev < floor || rev > cur {
		return nil, fmt.Errorf("%w: no history digest at revision %d (held: %d to %d)", ErrCompacted, rev, floor, cur)
	}
	v := tx.Bucket(bucketDigests).Get(be(rev))
	if v == nil {
		return nil, fmt.Errorf("%w: no history digest at revision %d (before the chain's start)", ErrCompacted, rev)
	}
	if len(v) != DigestSize {
		return nil, fmt.Errorf("%w: history digest at revision %d has %d bytes", ErrCorrupt, rev, len(v))
	}
	return bytes.Clone(v), nil
}

// compactDigests drops the digests below floor; the one at floor stays, as
// a follower at the floor may still resume.
func compactDigests(tx *bolt.Tx, floor uint64) error {
	b := tx.Bucket(bucketDigests)
	var drop [][]byte
	c := b.Cursor()
	for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k) < floor; k, _ = c.Next() {
		drop = append(drop, bytes.Clone(k))
	}
	for _, k := range drop {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}
