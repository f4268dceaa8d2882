package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// DefaultLockTimeout is how long Open waits for the file lock by default.
const DefaultLockTimeout = 3 * time.Second

// Options configures Open.
type Options struct {
	// Timeout is how long Open waits for the file's lock when another
	// process (or another Open in this one) holds it; then it fails with
	// ErrLocked. Zero means DefaultLockTimeout; it never waits forever.
	Timeout time.Duration
	// SkipCheck skips the check of every page and of the store's
	// invariants at open (checkOpen); for files so large that it takes too
	// long. A damaged page is then found only when read.
	SkipCheck bool
	// Init lets Open make a new store in an existing empty file; without
	// it such a file is refused with ErrEmptyFile (a missing file is always
	// created).
	Init bool
	// OnFault, when set, is called once with the first damage found after
	// Open: a bbolt panic recovered in a transaction or a commit. The
	// method that met it returns an error wrapping ErrDamaged.
	OnFault func(error)
}

// Bolt is the Store on one bbolt file. It is safe for concurrent use.
type Bolt struct {
	db    *bolt.DB
	path  string
	epoch string
	group groupCommitter
	// commit, when set, replaces the group committer (tests compare it
	// with db.Batch and db.Update).
	commit func(func(*bolt.Tx) error) error

	rev    atomic.Uint64 // last committed revision
	txRuns atomic.Uint64 // runs of mutation functions, retries included (for tests)
	outbox atomic.Bool   // mutations enqueue webhook events (SetOutbox)

	mu      sync.Mutex
	changed chan struct{} // closed and replaced at each commit
	closed  bool          // under mu: set by Close

	closeOnce sync.Once
	closeErr  error

	faults    faults
	checkTook time.Duration // of the open check; 0 when skipped
}

var _ Store = (*Bolt)(nil)

// Open opens (or creates) the store file at path. A missing file gets every
// bucket, the schema version and a fresh random epoch; an existing empty
// file only with opts.Init (else ErrEmptyFile); an existing store must have
// this build's schema version. Unless opts.SkipCheck, every page and the
// store's invariants are checked first. A file that bbolt refuses, that
// fails the check or that makes bbolt panic is reported as a
// *DamagedError (ErrDamaged), never as a panic. When another process holds
// the file, Open waits up to opts.Timeout and then returns an error
// wrapping ErrLocked. Every committed mutation is fsynced before its method
// returns; concurrent mutations share transactions and fsyncs (group
// commit).
func Open(path string, opts Options) (*Bolt, error) {
	timeout := opts.Timeout
	switch {
	case timeout == 0:
		timeout = DefaultLockTimeout
	case timeout < 0:
		return nil, fmt.Errorf("%w: lock timeout %s is negative", ErrInvalid, timeout)
	}
	isNew, err := preOpen(path, opts.Init)
	if err != nil {
		return nil, err
	}
	db, err := openBolt(path, &bolt.Options{
		Timeout: timeout,
		// NoSync stays false: a mutation is acknowledged only once on disk.
		NoSync:       false,
		FreelistType: bolt.FreelistMapType, // as etcd: fast with large, churned files
	})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s: another process holds it (waited %s)", ErrLocked, path, timeout)
	}
	if err != nil {
		return nil, damaged(path, err)
	}
	s := &Bolt{db: db, path: path, changed: make(chan struct{}), group: groupCommitter{db: db},
		faults: faults{onFault: opts.OnFault}}
	if !isNew && !opts.SkipCheck {
		start := time.Now()
		if err := checkOpen(db); err != nil {
			_ = db.Close()
			return nil, damaged(path, err)
		}
		s.checkTook = time.Since(start)
	}
	var rev uint64
	if err := safeUpdate(db, func(tx *bolt.Tx) error {
		var err error
		if s.epoch, rev, err = initFile(tx); err != nil {
			return err
		}
		if err := initDigests(tx, rev); err != nil {
			return err
		}
		return initLastUse(tx)
	}); err != nil {
		_ = db.Close()
		if errors.Is(err, ErrCorrupt) || errors.Is(err, ErrDamaged) {
			return nil, damaged(path, err)
		}
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	s.rev.Store(rev)
	return s, nil
}

// CheckTook is how long the check at Open took (zero when it was skipped
// or the file was new).
func (s *Bolt) CheckTook() time.Duration { return s.checkTook }

// initFile creates the layout in a new file or checks an existing one, and
// returns the epoch and the last revision.
func initFile(tx *bolt.Tx) (epoch string, rev uint64, err error) {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		// A new file: it must be empty, not some other program's bbolt file.
		var foreign []byte
		_ = tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			foreign = name
			return errors.New("stop")
		})
		if foreign != nil {
			return "", 0, fmt.Errorf("%w: not a sigil store (bucket %q and no %q)", ErrCorrupt, foreign, bucketMeta)
		}
		for _, name := range allBuckets {
			if _, err := tx.CreateBucket(name); err != nil {
				return "", 0, err
			}
		}
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", 0, err
		}
		epoch = hex.EncodeToString(b[:])
		meta = tx.Bucket(bucketMeta)
		for k, v := range map[string][]byte{
			string(metaSchema):    be(schemaVersion),
			string(metaEpoch):     []byte(epoch),
			string(metaRevision):  be(0),
			string(metaCompacted): be(0),
		} {
			if err := meta.Put([]byte(k), v); err != nil {
				return "", 0, err
			}
		}
		return epoch, 0, nil
	}
	v, err := decodeUint64("schema", meta.Get(metaSchema))
	if err != nil {
		return "", 0, err
	}
	if v != schemaVersion {
		return "", 0, fmt.Errorf("%w: the file has schema version %d, this build reads only version %d", ErrSchemaVersion, v, schemaVersion)
	}
	for _, name := range allBuckets {
		if tx.Bucket(name) == nil && bytes.Equal(name, bucketTokensByParent) {
			// Files made before the revocation cascade lack only this index.
			if err := addParentIndex(tx); err != nil {
				return "", 0, err
			}
			continue
		}
		if tx.Bucket(name) == nil && isLaterBucket(name) {
			if _, err := tx.CreateBucket(name); err != nil {
				return "", 0, err
			}
			continue
		}
		if tx.Bucket(name) == nil {
			return "", 0, fmt.Errorf("%w: bucket %q missing", ErrCorrupt, name)
		}
	}
	e := meta.Get(metaEpoch)
	if len(e) != 32 {
		return "", 0, fmt.Errorf("%w: bad epoch", ErrCorrupt)
	}
	if rev, err = decodeUint64("revision", meta.Get(metaRevision)); err != nil {
		return "", 0, err
	}
	if _, err = decodeUint64("compacted", meta.Get(metaCompacted)); err != nil {
		return "", 0, err
	}
	return string(e), rev, nil
}

// Path returns the file's path.
func (s *Bolt) Path() string { return s.path }

// Epoch returns the random id made when the file was created.
func (s *Bolt) Epoch() string { return s.epoch }

// Revision returns the last committed revision.
func (s *Bolt) Revision() uint64 { return s.rev.Load() }

// Changed returns a channel that is closed when a revision newer than the
// current one commits (or when the store closes). Take it before reading,
// then wait on it: a commit racing with the read is either seen by the read
// or closes the channel.
func (s *Bolt) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// publish makes rev visible to Revision and wakes Changed waiters. It runs
// after the commit, so a woken reader finds the new revision in the file.
func (s *Bolt) publish(rev uint64) {
	for {
		cur := s.rev.Load()
		if rev <= cur || s.rev.CompareAndSwap(cur, rev) {
			break
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

// Close closes the file. It waits for transactions in progress; later calls
// of any method return ErrClosed, and Close itself returns its first result.
func (s *Bolt) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		close(s.changed) // wake waiters: their next read says ErrClosed
		s.mu.Unlock()
		s.closeErr = s.db.Close()
	})
	return s.closeErr
}

// usable returns ErrClosed after Close, or ctx's error.
func (s *Bolt) usable(ctx context.Context) error {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return ErrClosed
	}
	return ctx.Err()
}

// mapErr turns bbolt's "closed" into ErrClosed.
func mapErr(err error) error {
	if errors.Is(err, bolt.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// view runs fn in a read transaction. A bbolt panic (a damaged page) is
// reported (Options.OnFault) and returned as a *DamagedError.
func (s *Bolt) view(ctx context.Context, fn func(tx *bolt.Tx) error) (err error) {
	if err := s.usable(ctx); err != nil {
		return err
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer s.recoverTx(&err)
	return mapErr(s.db.View(fn))
}

// writer is one run of a mutation's transaction function: it hands out
// revisions and records whether anything was written.
type writer struct {
	kv     kv
	start  uint64 // revision before this run
	rev    uint64 // last revision handed out
	digest []byte // history digest at rev
	dirty  bool
	// limit, when not 0, is how many token revocations fit in one
	// transaction of the backend (etcd bounds a transaction's operations):
	// a revocation of more is made in chunks (deferRevocations).
	limit int
	// deferred is set when the transaction recorded a chunked revocation
	// for the backend to carry out after the commit.
	deferred *bulkIntent
	// outbox is set when mutations enqueue webhook events (SetOutbox);
	// outboxRev and outboxN number the entries of a revision (outbox.go).
	outbox    bool
	outboxRev uint64
	outboxN   int
}

// next returns the next revision.
func (w *writer) next() uint64 {
	w.rev++
	return w.rev
}

func (w *writer) put(bucket, k, v []byte) error {
	w.dirty = true
	return w.kv.put(bucket, k, v)
}

func (w *writer) del(bucket, k []byte) error {
	w.dirty = true
	return w.kv.del(bucket, k)
}

// event appends an event at the next revision, with its history digest,
// and returns the revision.
func (w *writer) event(ev Event) (uint64, error) {
	ev.Revision = w.next()
	v := encodeEvent(&ev)
	if w.digest == nil {
		d, err := headDigest(w.kv, w.start)
		if err != nil {
			return 0, err
		}
		w.digest = d
	}
	w.digest = chainDigest(w.digest, ev.Revision, v)
	if err := w.put(bucketDigests, be(ev.Revision), w.digest); err != nil {
		return 0, err
	}
	return ev.Revision, w.put(bucketEvents, be(ev.Revision), v)
}

// audit writes an audit record at the transaction's last revision (each
// mutation writes one, after its events), and the webhook event it makes,
// if any (outbox.go).
func (w *writer) audit(a AuditRecord) error {
	if err := w.writeAudit(a); err != nil {
		return err
	}
	return w.enqueueAudit(&a)
}

// writeAudit writes an audit record at the transaction's last revision.
func (w *writer) writeAudit(a AuditRecord) error {
	if w.rev == w.start {
		return errors.New("store: audit record without an event")
	}
	if err := w.put(bucketAudit, be(w.rev), encodeAudit(&a)); err != nil {
		return err
	}
	return w.put(bucketAuditByOrg, auditOrgKey(a.OrgID, w.rev), nil)
}

// rejection is a mutation's answer that writes nothing (ErrNameTaken,
// ErrNotFound, ...). The transaction function returns it instead of the
// plain error so that the group it ran in commits the others' work: a plain
// error rolls the whole transaction back and makes every function of the
// group run again.
type rejection struct{ err error }

func (r rejection) Error() string { return r.err.Error() }

// reject wraps a domain error as a rejection.
func reject(err error) error { return rejection{err} }

// mutate runs fn in a write transaction, group-committed with concurrent
// mutations (commitGroup), and publishes the last revision fn handed out.
// It returns that revision (0 when fn wrote nothing) and fn's rejection, if
// any. A rejection returned after a write rolls the transaction back.
//
// fn may run more than once (the group committer, like db.Batch, runs a
// group again without a function that failed). It must therefore read
// everything from the transaction, take ids and times from its arguments,
// and reset whatever results it hands back through its closure at each run.
func (s *Bolt) mutate(ctx context.Context, fn func(w *writer) error) (_ uint64, err error) {
	if err := s.usable(ctx); err != nil {
		return 0, err
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer s.recoverTx(&err)
	var (
		last     uint64
		rejected error
	)
	txfn := func(tx *bolt.Tx) error {
		s.txRuns.Add(1)
		last, rejected = 0, nil
		// A mutation queued behind a stalled commit (a hung or frozen
		// disk) runs only when the disk comes back: if its caller has
		// given up meanwhile, it writes nothing, so that no token is left
		// live whose secret nobody received.
		if err := ctx.Err(); err != nil {
			rejected = fmt.Errorf("store: the caller gave up before the write could start: %w", err)
			return nil
		}
		start, err := currentRevision(tx)
		if err != nil {
			return err
		}
		w := &writer{kv: boltKV{tx}, start: start, rev: start, outbox: s.outbox.Load()}
		if err := fn(w); err != nil {
			var r rejection
			if errors.As(err, &r) && !w.dirty {
				rejected = r.err
				return nil
			}
			if errors.As(err, &r) {
				// Rejected after writing: roll back rather than commit half.
				return r.err
			}
			return err
		}
		if w.rev != w.start {
			if err := tx.Bucket(bucketMeta).Put(metaRevision, be(w.rev)); err != nil {
				return err
			}
			last = w.rev
		}
		return nil
	}
	commit := s.group.update
	if s.commit != nil {
		commit = s.commit
	}
	if err := commit(txfn); err != nil {
		if errors.Is(err, ErrDamaged) {
			s.faults.report(err)
		}
		return 0, mapWriteErr(mapErr(err))
	}
	if rejected != nil {
		return 0, rejected
	}
	if last != 0 {
		s.publish(last)
	}
	return last, nil
}

// currentRevision reads the last revision inside a transaction.
func currentRevision(tx *bolt.Tx) (uint64, error) {
	return decodeUint64("revision", tx.Bucket(bucketMeta).Get(metaRevision))
}

// hasPrefix reports whether k is non-nil and starts with p.
func hasPrefix(k, p []byte) bool { return k != nil && bytes.HasPrefix(k, p) }
