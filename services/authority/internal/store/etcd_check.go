package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Check reads everything under the store's prefix at one etcd revision and
// checks the invariants CheckFile checks on a bbolt file (indexes agree
// with records, nothing beyond the revision counter, every record decodes,
// a digest at the last revision), and that no key lies outside the store's
// buckets. A chunked revocation in progress is reported: on a store at
// rest there is none. The tests run it on cleanup; an operator may run it
// against a live cluster (it is a consistent read, not a lock).
func (s *Etcd) Check(ctx context.Context) error {
	m := memKV{buckets: map[string][]memEntry{}}
	known := map[string]bool{string(bucketDigests): true, string(bucketLastUse): true}
	for _, b := range allBuckets {
		known[string(b)] = true
	}
	var unknown error
	err := s.rangeAll(ctx, s.prefix, prefixEndString(s.prefix), 0, func(k, v []byte) error {
		rest := string(k[len(s.prefix):])
		b, key, ok := strings.Cut(rest, "/")
		if ok && b == leaderBucket {
			return nil // the election's keys: not the store's data
		}
		if !ok || !known[b] {
			unknown = fmt.Errorf("key outside the store's buckets under %q", s.prefix)
			return nil
		}
		m.buckets[b] = append(m.buckets[b], memEntry{[]byte(key), append([]byte{}, v...)})
		return nil
	})
	if err != nil {
		return err
	}
	if unknown != nil {
		return unknown
	}
	v, _ := m.get(bucketMeta, metaIntent)
	d, _ := m.get(bucketMeta, metaIntentDone)
	if v != nil || d != nil {
		return errors.New("a chunked revocation is in progress")
	}
	if err := checkInvariants(m); err != nil {
		return fmt.Errorf("store: invariants: %w", err)
	}
	return nil
}

// memKV is a read-only copy of a store's buckets, for checkInvariants.
type memKV struct{ buckets map[string][]memEntry }

type memEntry struct{ k, v []byte }

func (m memKV) find(bucket, key []byte) ([]memEntry, int) {
	es := m.buckets[string(bucket)]
	return es, sort.Search(len(es), func(i int) bool { return bytes.Compare(es[i].k, key) >= 0 })
}

func (m memKV) get(bucket, key []byte) ([]byte, error) {
	es, i := m.find(bucket, key)
	if i < len(es) && bytes.Equal(es[i].k, key) {
		return es[i].v, nil
	}
	return nil, nil
}

func (m memKV) scan(bucket, prefix []byte, fn func(k, v []byte) error) error {
	es, i := m.find(bucket, prefix)
	for ; i < len(es) && bytes.HasPrefix(es[i].k, prefix); i++ {
		if err := fn(es[i].k, es[i].v); err != nil {
			return err
		}
	}
	return nil
}

func (m memKV) put(_, _, _ []byte) error { return errors.New("store: read-only copy") }
func (m memKV) del(_, _ []byte) error    { return errors.New("store: read-only copy") }

func (m memKV) count(bucket []byte) (int, error) { return len(m.buckets[string(bucket)]), nil }

func (m memKV) last(bucket []byte) ([]byte, error) {
	es := m.buckets[string(bucket)]
	if len(es) == 0 {
		return nil, nil
	}
	return es[len(es)-1].k, nil
}

func (m memKV) has(bucket []byte) bool { return true }

func (m memKV) metaUint64(key []byte) (uint64, error) {
	v, _ := m.get(bucketMeta, key)
	return decodeUint64(string(key), v)
}
