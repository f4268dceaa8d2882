package store

import (
	"context"

	bolt "go.etcd.io/bbolt"
)

// kv is one transaction's view of the store's buckets, whatever the backend
// (a bbolt transaction, or an etcd transaction being built). The domain
// logic shared by the backends (insertToken, revocationOrder, ...) reads and
// writes only through it, so both stores apply the same rules.
type kv interface {
	// get returns the value of key in bucket, nil when absent. The value
	// must not be modified.
	get(bucket, key []byte) ([]byte, error)
	// scan calls fn for every key of bucket that starts with prefix, in
	// ascending key order. fn must not keep k or v.
	scan(bucket, prefix []byte, fn func(k, v []byte) error) error
	// put and del write within the transaction; later gets see them.
	put(bucket, key, val []byte) error
	del(bucket, key []byte) error
}

// boltKV is kv on a bbolt transaction.
type boltKV struct{ tx *bolt.Tx }

func (b boltKV) get(bucket, key []byte) ([]byte, error) {
	bk := b.tx.Bucket(bucket)
	if bk == nil {
		return nil, nil // a bucket an older file lacks (CheckFile reads those)
	}
	return bk.Get(key), nil
}

func (b boltKV) scan(bucket, prefix []byte, fn func(k, v []byte) error) error {
	c := b.tx.Bucket(bucket).Cursor()
	for k, v := c.Seek(prefix); hasPrefix(k, prefix); k, v = c.Next() {
		if err := fn(k, v); err != nil {
			return err
		}
	}
	return nil
}

func (b boltKV) put(bucket, key, val []byte) error {
	bk := b.tx.Bucket(bucket)
	if sequential(bucket) {
		bk.FillPercent = seqFillPercent
	}
	return bk.Put(key, val)
}

func (b boltKV) del(bucket, key []byte) error {
	return b.tx.Bucket(bucket).Delete(key)
}

// mutator runs a mutation's transaction function and commits it: the
// backends' mutate.
type mutator interface {
	mutate(ctx context.Context, fn func(w *writer) error) (uint64, error)
}
