package store

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The offline subcommands of the authority (authority migrate, authority
// compact) work on a closed store file as a whole: File is a locked,
// checked, never written view of every bucket, and CompactTo is bbolt's
// compaction into a new file. bbolt types stay in this package.

// FileHead identifies a store's state: the epoch, the last revision, the
// compaction floor and the history digest at the last revision.
type FileHead struct {
	Epoch    string
	Revision uint64
	Floor    uint64
	Digest   []byte
}

// File is a closed store file opened for an offline tool. It holds the
// file's lock until Close, so no authority opens the file meanwhile.
type File struct {
	db   *bolt.DB
	path string
}

// OpenFile opens the store file at path for an offline tool, never to
// write it. Without exclusive it takes a shared lock (read-only mode): an
// authority holding the file makes it wait, and it keeps any authority from
// opening the file. With exclusive it takes the exclusive lock an authority
// takes, which also keeps other offline tools out. When the lock is held,
// OpenFile waits up to lockTimeout and returns an error wrapping ErrLocked.
// The file is checked as Open checks it (every page, the store's
// invariants), and must have this build's full layout: a file written by
// an older build is refused (an authority of this build upgrades it when it
// opens it).
func OpenFile(path string, lockTimeout time.Duration, exclusive bool) (*File, error) {
	if lockTimeout <= 0 {
		return nil, fmt.Errorf("%w: lock timeout %s is not positive", ErrInvalid, lockTimeout)
	}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("store: no database file at %s", path)
	case err != nil:
		return nil, fmt.Errorf("store: %w", err)
	case !fi.Mode().IsRegular():
		return nil, &DamagedError{Path: path, Err: errors.New("not a regular file")}
	case fi.Size() == 0:
		return nil, fmt.Errorf("%w: %s", ErrEmptyFile, path)
	}
	db, err := openBolt(path, &bolt.Options{ReadOnly: !exclusive, Timeout: lockTimeout, FreelistType: bolt.FreelistMapType})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s: another process holds it (waited %s)", ErrLocked, path, lockTimeout)
	}
	if err != nil {
		return nil, damaged(path, err)
	}
	f := &File{db: db, path: path}
	if err := checkOpen(db); err != nil {
		_ = db.Close()
		return nil, damaged(path, err)
	}
	if _, err := f.Head(); err != nil {
		_ = db.Close()
		return nil, err
	}
	return f, nil
}

// Path returns the file's path.
func (f *File) Path() string { return f.path }

// Close releases the file and its lock.
func (f *File) Close() error { return f.db.Close() }

// Size returns the file's size in bytes.
func (f *File) Size() (int64, error) {
	fi, err := os.Stat(f.path)
	if err != nil {
		return 0, fmt.Errorf("store: %w", err)
	}
	return fi.Size(), nil
}

// Head reads the file's epoch, revision, floor and head digest, and checks
// that the file has this build's layout.
func (f *File) Head() (FileHead, error) {
	var h FileHead
	err := f.view(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			return &DamagedError{Path: f.path, Err: fmt.Errorf("%w: not a sigil store (no %q bucket)", ErrCorrupt, bucketMeta)}
		}
		v, err := decodeUint64("schema", meta.Get(metaSchema))
		if err != nil {
			return damaged(f.path, err)
		}
		if v != schemaVersion {
			return fmt.Errorf("%w: %s has schema version %d, this build reads only version %d", ErrSchemaVersion, f.path, v, schemaVersion)
		}
		for _, name := range append([][]byte{bucketDigests}, allBuckets...) {
			if tx.Bucket(name) == nil {
				return fmt.Errorf("store: %s was written by an older build (no %q bucket): start the authority on it once, which upgrades it, then stop it", f.path, name)
			}
		}
		if h.Epoch = string(meta.Get(metaEpoch)); len(h.Epoch) != 32 {
			return damaged(f.path, fmt.Errorf("%w: bad epoch", ErrCorrupt))
		}
		if h.Revision, err = currentRevision(tx); err != nil {
			return damaged(f.path, err)
		}
		if h.Floor, err = compactedRevision(tx); err != nil {
			return damaged(f.path, err)
		}
		d := tx.Bucket(bucketDigests).Get(be(h.Revision))
		if len(d) != DigestSize {
			return fmt.Errorf("store: %s has no history digest at its revision %d (written by an older build): start the authority on it once, which upgrades it, then stop it", f.path, h.Revision)
		}
		h.Digest = bytes.Clone(d)
		return nil
	})
	return h, err
}

// Range calls fn for every key of every bucket of the file, in one read
// transaction: buckets in name order, keys in ascending order, as bbolt
// holds them. fn must not keep key or value. A nested bucket (the store
// makes none) is an error.
func (f *File) Range(fn func(bucket string, key, value []byte) error) error {
	return f.view(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			c := b.Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				if v == nil && b.Bucket(k) != nil {
					return damaged(f.path, fmt.Errorf("%w: nested bucket in %q", ErrCorrupt, name))
				}
				if err := fn(string(name), k, v); err != nil {
					return err
				}
			}
			return nil
		})
	})
}

// CompactTo writes a compacted copy of the file to dst (bbolt's
// compaction: every bucket rewritten into full pages, no free pages), in
// transactions of about txMaxSize bytes, and syncs it. dst must not exist;
// on failure it is removed.
func (f *File) CompactTo(dst string, txMaxSize int64) (err error) {
	if _, err := os.Lstat(dst); !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("store: compaction target %s exists", dst)
	}
	out, err := bolt.Open(dst, 0o600, &bolt.Options{Timeout: time.Second, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return fmt.Errorf("store: create %s: %w", dst, err)
	}
	defer func() {
		if cerr := out.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("store: close %s: %w", dst, cerr)
		}
		if err != nil {
			_ = os.Remove(dst)
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = damaged(f.path, panicError("compact", p))
		}
	}()
	if err := bolt.Compact(out, f.db, txMaxSize); err != nil {
		return fmt.Errorf("store: compact %s into %s: %w", f.path, dst, err)
	}
	if err := out.Sync(); err != nil {
		return fmt.Errorf("store: sync %s: %w", dst, err)
	}
	return nil
}

// view runs fn in a read transaction, a bbolt panic turned into a
// *DamagedError.
func (f *File) view(fn func(tx *bolt.Tx) error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = damaged(f.path, panicError("read", p))
		}
	}()
	return f.db.View(fn)
}

// EtcdKey is the etcd key under prefix of key in bucket: the layout the
// etcd store gives the buckets of a bbolt file (Etcd.key), so that a file's
// buckets copied key by key make the same store on etcd.
func EtcdKey(prefix, bucket string, key []byte) string {
	return prefix + bucket + "/" + string(key)
}

// EtcdSchemaKey is the etcd key of the schema version under prefix: OpenEtcd
// makes a new store under a prefix without it and refuses one where it does
// not hold this build's schema version.
func EtcdSchemaKey(prefix string) string {
	return EtcdKey(prefix, string(bucketMeta), metaSchema)
}

// A bbolt file being copied into etcd (authority migrate) is marked under
// the prefix: EtcdMigrationMarker (the key after the prefix) names the
// run, and the schema key holds EtcdMigrationSchema, which is no schema
// version, so that OpenEtcd refuses the prefix until the copy is finished
// and checked. The last transaction of the copy writes the schema version
// and deletes the marker.
const (
	EtcdMigrationMarker = "migration-in-progress"
	EtcdMigrationSchema = "migration in progress"
)
