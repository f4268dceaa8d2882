package store

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"runtime/debug"
	"strings"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// ErrDamaged marks a database file that cannot be trusted: bbolt refused
// it, its pages fail bbolt's consistency check, the store's invariants do
// not hold, or bbolt panicked reading it. Errors wrapping it are
// *DamagedError values.
var ErrDamaged = errors.New("store: database file is damaged")

// ErrEmptyFile is returned by Open for an existing file of zero bytes
// without Options.Init: a failed start on a full disk or a failed restore
// copy leaves one, and silently making a new store in it would change the
// epoch and the signing keys (every existing token denied).
var ErrEmptyFile = errors.New("database file is empty")

// DamagedError says which file is damaged and how; its message is the one
// an operator sees.
type DamagedError struct {
	Path string
	Err  error // what was found; may wrap ErrCorrupt or ErrSchemaVersion
}

func (e *DamagedError) Error() string {
	return fmt.Sprintf("database file %s is damaged: %v; restore from backup", e.Path, e.Err)
}

// Unwrap returns what was found.
func (e *DamagedError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrDamaged) true.
func (e *DamagedError) Is(target error) bool { return target == ErrDamaged }

// damaged returns a *DamagedError for path with the detail of err.
func damaged(path string, err error) error {
	var d *DamagedError
	if errors.As(err, &d) {
		return d
	}
	return &DamagedError{Path: path, Err: err}
}

// panicError turns a recovered bbolt panic into an error. The word
// "panic" stays out of it: bbolt panics on pages it cannot read, which is
// damage, and the operator needs to read that, not a stack trace.
func panicError(what string, p any) error {
	return fmt.Errorf("%s: bbolt could not read the file (%v)", what, p)
}

// preOpen looks at path before bbolt does: it reports whether the file is
// new (missing), refuses an empty one unless init, and refuses anything
// that is not a regular file.
func preOpen(path string, init bool) (isNew bool, err error) {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("store: %w", err)
	case !fi.Mode().IsRegular():
		return false, &DamagedError{Path: path, Err: errors.New("not a regular file")}
	case fi.Size() == 0 && !init:
		return false, fmt.Errorf("%w: %s (a failed start on a full disk or a failed restore copy leaves one): "+
			"restore it from backup, or start once with --init to make a new store in it "+
			"(new epoch and signing key: every existing token is then denied)", ErrEmptyFile, path)
	case fi.Size() == 0:
		return true, nil
	}
	return false, nil
}

// openBolt is bolt.Open with its panics (a truncated or scribbled file can
// make bbolt index outside the mapping) turned into errors.
func openBolt(path string, opts *bolt.Options) (db *bolt.DB, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			db, err = nil, panicError("open", p)
		}
	}()
	return bolt.Open(path, 0o600, opts)
}

// checkOpen is the bounded check run at open: a walk that reads every key
// and value of every bucket, bbolt's page check (every page reachable
// once, freelist consistent) and the store's invariants, each reading the
// file once. It is skipped for a file that has no store yet.
//
// The walk comes first and runs with panic-on-fault: a damaged element
// header can point bbolt outside the mapped file, which is a fault, not a
// panic, and would kill the process even under recover. bbolt's own check
// runs in a goroutine of its own, where that cannot be set; after the walk
// has read every leaf it only meets what the walk already survived.
func checkOpen(db *bolt.DB) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = panicError("check", p)
		}
	}()
	return db.View(func(tx *bolt.Tx) error {
		if err := walk(tx); err != nil {
			return err
		}
		var msgs []string
		for err := range tx.Check() {
			if len(msgs) < 10 { // keep the message readable; drain the rest
				msgs = append(msgs, strings.TrimPrefix(err.Error(), "panic: "))
			}
		}
		if len(msgs) > 0 {
			return fmt.Errorf("bbolt check: %s", strings.Join(msgs, "; "))
		}
		for _, name := range allBuckets {
			if tx.Bucket(name) == nil {
				// A new, foreign or older file (missing an index that
				// Open adds): initFile decides.
				return nil
			}
		}
		if err := checkInvariants(boltKV{tx}); err != nil {
			return fmt.Errorf("invariants: %w", err)
		}
		return nil
	})
}

// walk reads every key and value of every bucket, nested ones included,
// and checks that keys are in order.
func walk(tx *bolt.Tx) error {
	var sum uint32
	var walkBucket func(name []byte, b *bolt.Bucket) error
	walkBucket = func(name []byte, b *bolt.Bucket) error {
		c := b.Cursor()
		var prev []byte
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if prev != nil && bytes.Compare(prev, k) >= 0 {
				return fmt.Errorf("bucket %q: keys out of order", name)
			}
			prev = k
			sum = crc32.Update(crc32.Update(sum, crc32.IEEETable, k), crc32.IEEETable, v)
			if v == nil {
				if nb := b.Bucket(k); nb != nil {
					if err := walkBucket(k, nb); err != nil {
						return err
					}
				}
			}
		}
		return nil
	}
	return tx.ForEach(func(name []byte, b *bolt.Bucket) error { return walkBucket(name, b) })
}

// faults reports the first damage seen after Open (a recovered bbolt panic
// in a transaction or a commit) to Options.OnFault, once.
type faults struct {
	once    sync.Once
	onFault func(error)
}

func (f *faults) report(err error) {
	if f.onFault == nil {
		return
	}
	f.once.Do(func() { f.onFault(err) })
}

// recoverTx turns a panic of bbolt in a transaction into a *DamagedError,
// reports it, and returns it through *errp.
func (s *Bolt) recoverTx(errp *error) {
	if p := recover(); p != nil {
		err := damaged(s.path, panicError("transaction", p))
		s.faults.report(err)
		*errp = err
	}
}

// safeUpdate runs db.Update, turning a bbolt panic outside the callers'
// functions (in the commit itself) into a *DamagedError: the group
// committer's leader must answer every caller of its group, never die.
func safeUpdate(db *bolt.DB, fn func(*bolt.Tx) error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = damaged(db.Path(), panicError("commit", p))
		}
	}()
	return db.Update(fn)
}
