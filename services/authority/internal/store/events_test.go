package store

import (
	"testing"

	bolt "go.etcd.io/bbolt"
)

// storedRevisions returns the revisions of the events in the file.
func storedRevisions(t *testing.T, s *Bolt) []uint64 {
	t.Helper()
	var out []uint64
	if err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketEvents).ForEach(func(k, _ []byte) error {
			out = append(out, decodeRev(k))
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// decodeRev decodes an event key.
func decodeRev(k []byte) uint64 {
	v, _ := decodeUint64("key", k)
	return v
}
