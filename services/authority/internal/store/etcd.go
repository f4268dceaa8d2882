package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Defaults of EtcdOptions.
const (
	DefaultEtcdPrefix      = "/sigil/"
	DefaultEtcdDialTimeout = 5 * time.Second
	// DefaultEtcdMaxTxnOps is etcd's own default --max-txn-ops.
	DefaultEtcdMaxTxnOps = 128
	// DefaultEtcdMaxRequestBytes is etcd's own default --max-request-bytes
	// (1.5 MiB).
	DefaultEtcdMaxRequestBytes = 1536 * 1024
	// DefaultEtcdRequestTimeout bounds one etcd request: a cluster without
	// quorum answers nothing, and the caller gets ErrUnavailable rather
	// than a hang.
	DefaultEtcdRequestTimeout = 5 * time.Second
)

// EtcdOptions configures OpenEtcd.
type EtcdOptions struct {
	Endpoints   []string
	Prefix      string      // every key of the store starts with it; DefaultEtcdPrefix when empty
	TLS         *tls.Config // nil: plain connections
	DialTimeout time.Duration
	// MaxTxnOps and MaxRequestBytes must not exceed the cluster's
	// --max-txn-ops and --max-request-bytes; zero means etcd's defaults.
	MaxTxnOps       int
	MaxRequestBytes int
	RequestTimeout  time.Duration
}

// Etcd is the Store on an etcd cluster (see docs/etcd.md). Every mutation is
// one etcd transaction, guarded by the revision counter's mod_revision, so
// that it commits only if no other mutation (of this process or another)
// committed since it read; acknowledged means committed by the quorum. It is
// safe for concurrent use, and several processes may share one prefix.
type Etcd struct {
	cli      *clientv3.Client
	prefix   string
	epoch    string
	maxOps   int
	maxBytes int
	timeout  time.Duration

	rev    atomic.Uint64 // last revision seen committed (own commits and the watch)
	outbox atomic.Bool   // mutations enqueue webhook events (SetOutbox)

	// wmu serializes this process's mutations: they would otherwise only
	// make each other's guarded transactions fail and retry. Other
	// processes on the prefix are kept apart by the guard alone.
	wmu sync.Mutex

	mu      sync.Mutex
	changed chan struct{}
	closed  bool

	// afterChunk, when set (tests), runs after each committed chunk of a
	// chunked revocation; an error stops the work there, as a crash would.
	afterChunk func() error
	// pinnedHook, when set (tests), runs before each read at a given etcd
	// revision, with that revision.
	pinnedHook func(rev int64)

	stopWatch context.CancelFunc
	watchDone chan struct{}

	closeOnce sync.Once
	closeErr  error
}

var _ Store = (*Etcd)(nil)

// OpenEtcd connects to the cluster and opens (or creates, in one
// transaction) the store under opts.Prefix: a new store gets the schema
// version, a fresh epoch, revision 0 and its digest chain's seed. A
// chunked revocation left by a crash is finished before it returns.
func OpenEtcd(ctx context.Context, opts EtcdOptions) (*Etcd, error) {
	if len(opts.Endpoints) == 0 {
		return nil, fmt.Errorf("%w: no etcd endpoint", ErrInvalid)
	}
	s := &Etcd{
		prefix: opts.Prefix, maxOps: opts.MaxTxnOps, maxBytes: opts.MaxRequestBytes, timeout: opts.RequestTimeout,
		changed: make(chan struct{}), watchDone: make(chan struct{}),
	}
	if s.prefix == "" {
		s.prefix = DefaultEtcdPrefix
	}
	if s.maxOps <= 0 {
		s.maxOps = DefaultEtcdMaxTxnOps
	}
	if s.maxOps < 32 {
		return nil, fmt.Errorf("%w: etcd max txn ops %d is below 32", ErrInvalid, s.maxOps)
	}
	if s.maxBytes <= 0 {
		s.maxBytes = DefaultEtcdMaxRequestBytes
	}
	if s.timeout <= 0 {
		s.timeout = DefaultEtcdRequestTimeout
	}
	dial := opts.DialTimeout
	if dial <= 0 {
		dial = DefaultEtcdDialTimeout
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: opts.Endpoints, DialTimeout: dial, TLS: opts.TLS,
		Logger: zap.NewNop(), Context: context.Background(),
	})
	if err != nil {
		return nil, fmt.Errorf("store: etcd client: %w", err)
	}
	s.cli = cli
	if err := s.init(ctx); err != nil {
		_ = cli.Close()
		return nil, err
	}
	wctx, cancel := context.WithCancel(context.Background())
	s.stopWatch = cancel
	go s.watch(wctx)
	if _, err := s.finishIntent(ctx); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("store: finishing a chunked revocation: %w", err)
	}
	return s, nil
}

// key is the etcd key of key in bucket.
func (s *Etcd) key(bucket, key []byte) string {
	return s.prefix + string(bucket) + "/" + string(key)
}

// init creates the store under the prefix if it is not there, and reads
// its epoch and revision.
func (s *Etcd) init(ctx context.Context) error {
	seed := make([]byte, DigestSize)
	var e [16]byte
	if _, err := rand.Read(seed); err != nil {
		return err
	}
	if _, err := rand.Read(e[:]); err != nil {
		return err
	}
	schemaKey := s.key(bucketMeta, metaSchema)
	rctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	_, err := s.cli.Txn(rctx).If(clientv3.Compare(clientv3.CreateRevision(schemaKey), "=", 0)).Then(
		clientv3.OpPut(schemaKey, string(be(schemaVersion))),
		clientv3.OpPut(s.key(bucketMeta, metaEpoch), hex.EncodeToString(e[:])),
		clientv3.OpPut(s.key(bucketMeta, metaRevision), string(be(0))),
		clientv3.OpPut(s.key(bucketMeta, metaCompacted), string(be(0))),
		clientv3.OpPut(s.key(bucketDigests, be(0)), string(seed)),
	).Commit()
	if err != nil {
		return fmt.Errorf("store: etcd open: %w", s.mapErr(ctx, err))
	}
	h, err := s.readHead(ctx)
	if err != nil {
		return fmt.Errorf("store: etcd open: %w", err)
	}
	s.epoch = h.epoch
	s.rev.Store(h.rev)
	return nil
}

// head is the store's meta keys read at one etcd revision.
type head struct {
	etcdRev   int64 // etcd revision of the read
	revModRev int64 // mod_revision of the revision counter: the write guard
	rev       uint64
	floor     uint64
	epoch     string
	intent    []byte
	done      []byte // progress of the intent
}

// readHead reads the meta keys.
func (s *Etcd) readHead(ctx context.Context) (head, error) {
	resp, err := s.get(ctx, s.prefix+string(bucketMeta)+"/", clientv3.WithPrefix())
	if err != nil {
		return head{}, err
	}
	h := head{etcdRev: resp.Header.Revision}
	var schema []byte
	for _, kv := range resp.Kvs {
		switch strings.TrimPrefix(string(kv.Key), s.prefix+string(bucketMeta)+"/") {
		case string(metaSchema):
			schema = kv.Value
		case string(metaEpoch):
			h.epoch = string(kv.Value)
		case string(metaRevision):
			h.revModRev = kv.ModRevision
			if h.rev, err = decodeUint64("revision", kv.Value); err != nil {
				return head{}, err
			}
		case string(metaCompacted):
			if h.floor, err = decodeUint64("compacted", kv.Value); err != nil {
				return head{}, err
			}
		case string(metaIntent):
			h.intent = kv.Value
		case string(metaIntentDone):
			h.done = kv.Value
		}
	}
	if schema == nil {
		return head{}, fmt.Errorf("%w: no sigil store under etcd prefix %q", ErrCorrupt, s.prefix)
	}
	if string(schema) == EtcdMigrationSchema {
		return head{}, fmt.Errorf("%w: etcd prefix %q holds an unfinished migration: run `authority migrate` again with --force-restart", ErrCorrupt, s.prefix)
	}
	v, err := decodeUint64("schema", schema)
	if err != nil {
		return head{}, err
	}
	if v != schemaVersion {
		return head{}, fmt.Errorf("%w: the store has schema version %d, this build reads only version %d", ErrSchemaVersion, v, schemaVersion)
	}
	if len(h.epoch) != 32 || h.revModRev == 0 {
		return head{}, fmt.Errorf("%w: bad epoch or revision under etcd prefix %q", ErrCorrupt, s.prefix)
	}
	return h, nil
}

// get is one bounded etcd read.
func (s *Etcd) get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	if err := s.usable(ctx); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	resp, err := s.cli.Get(rctx, key, opts...)
	if err != nil {
		return nil, s.mapErr(ctx, err)
	}
	return resp, nil
}

// errConflict says a guarded transaction lost to another writer.
var errConflict = errors.New("store: etcd transaction conflict")

// mapErr maps an etcd client error to the store's errors: the caller's own
// cancellation stays as it is; no leader, no quorum, timeouts and
// unreachable endpoints are ErrUnavailable; limits are ErrTooLarge.
func (s *Etcd) mapErr(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if s.isClosed() {
		return ErrClosed
	}
	switch {
	case errors.Is(err, rpctypes.ErrTooManyOps), errors.Is(err, rpctypes.ErrRequestTooLarge):
		return fmt.Errorf("%w: etcd: %v", ErrTooLarge, err)
	case errors.Is(err, rpctypes.ErrCompacted):
		// A read at a revision etcd has compacted away: retried by mutate
		// (a conflict) and by the reads (pinnedRead).
		return fmt.Errorf("%w: %w: %v", errConflict, errEtcdCompacted, err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return fmt.Errorf("%w: etcd: %v", ErrUnavailable, err)
	}
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		switch ee.Code() {
		case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted, codes.ResourceExhausted:
			return fmt.Errorf("%w: etcd: %v", ErrUnavailable, err)
		}
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return fmt.Errorf("%w: etcd: %v", ErrUnavailable, err)
	}
	return fmt.Errorf("store: etcd: %w", err)
}

// watch follows the revision counter, so that Revision and Changed see the
// commits of other processes sharing the prefix.
func (s *Etcd) watch(ctx context.Context) {
	defer close(s.watchDone)
	key := s.key(bucketMeta, metaRevision)
	for ctx.Err() == nil {
		h, err := s.readHead(ctx)
		if err == nil {
			s.publish(h.rev)
			wch := s.cli.Watch(clientv3.WithRequireLeader(ctx), key, clientv3.WithRev(h.etcdRev+1))
			for resp := range wch {
				for _, ev := range resp.Events {
					if v, err := decodeUint64("revision", ev.Kv.Value); err == nil {
						s.publish(v)
					}
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Epoch returns the random id made when the store was created.
func (s *Etcd) Epoch() string { return s.epoch }

// Prefix returns the key prefix of the store in etcd.
func (s *Etcd) Prefix() string { return s.prefix }

// Revision returns the last revision seen committed.
func (s *Etcd) Revision() uint64 { return s.rev.Load() }

// Changed returns a channel closed when a newer revision is seen (or at
// Close), as Bolt's.
func (s *Etcd) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// publish records rev and wakes Changed waiters when it is new.
func (s *Etcd) publish(rev uint64) {
	for {
		cur := s.rev.Load()
		if rev <= cur {
			return
		}
		if s.rev.CompareAndSwap(cur, rev) {
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

// Close stops the watch and closes the client; later calls return
// ErrClosed.
func (s *Etcd) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		close(s.changed)
		s.mu.Unlock()
		if s.stopWatch != nil {
			s.stopWatch()
			<-s.watchDone
		}
		s.closeErr = s.cli.Close()
	})
	return s.closeErr
}

func (s *Etcd) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *Etcd) usable(ctx context.Context) error {
	if s.isClosed() {
		return ErrClosed
	}
	return ctx.Err()
}

// etcdKV is kv on an etcd transaction being built: reads at one etcd
// revision (the head's), writes buffered until commit and seen by later
// reads.
type etcdKV struct {
	s      *Etcd
	ctx    context.Context
	rev    int64
	writes map[string][]byte // nil value: delete
	bytes  int
}

func (e *etcdKV) get(bucket, key []byte) ([]byte, error) {
	k := e.s.key(bucket, key)
	if v, ok := e.writes[k]; ok {
		return v, nil
	}
	resp, err := e.s.get(e.ctx, k, clientv3.WithRev(e.rev))
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	return present(resp.Kvs[0].Value), nil
}

// present returns v, or an empty non-nil slice for a key with an empty
// value: nil means absent.
func present(v []byte) []byte {
	if v == nil {
		return []byte{}
	}
	return v
}

func (e *etcdKV) scan(bucket, prefix []byte, fn func(k, v []byte) error) error {
	full := e.s.key(bucket, prefix)
	for k := range e.writes {
		if strings.HasPrefix(k, full) {
			return fmt.Errorf("store: etcd: scan of %s after a write to it in one transaction", bucket)
		}
	}
	strip := len(e.s.key(bucket, nil))
	return e.s.rangeAll(e.ctx, full, prefixEndString(full), e.rev, func(k, v []byte) error {
		return fn(k[strip:], v)
	})
}

func (e *etcdKV) put(bucket, key, val []byte) error {
	k := e.s.key(bucket, key)
	if val == nil {
		val = []byte{}
	}
	e.writes[k] = bytes.Clone(val)
	e.bytes += len(k) + len(val) + 16
	return nil
}

func (e *etcdKV) del(bucket, key []byte) error {
	k := e.s.key(bucket, key)
	e.writes[k] = nil
	e.bytes += len(k) + 16
	return nil
}

// full reports whether the transaction is near etcd's limits: a chunked
// revocation stops adding tokens then. One token's revocation writes at
// most perRevocationOps keys; the margin leaves room for the intent, the
// final audit record and the revision counter.
func (e *etcdKV) full() bool {
	return len(e.writes)+perRevocationOps+4 > e.s.maxOps || e.bytes > e.s.maxBytes/2
}

// perRevocationOps bounds the keys one revocation writes: event, digest,
// token record, unrevoked index, revoked entry, name index, audit record,
// its index and its webhook event (outbox).
const perRevocationOps = 9

// revocationLimit is how many revocations fit in one transaction beside a
// token's creation (a rotation) and the audit record.
func (s *Etcd) revocationLimit() int {
	return (s.maxOps - 24) / perRevocationOps
}

// rangeAll calls fn for every key in [from, end) at etcd revision rev (0:
// the latest), in pages.
func (s *Etcd) rangeAll(ctx context.Context, from, end string, rev int64, fn func(k, v []byte) error) error {
	const page = 2000
	for {
		s.beforePinned(rev)
		resp, err := s.get(ctx, from, clientv3.WithRange(end), clientv3.WithRev(rev), clientv3.WithLimit(page))
		if err != nil {
			return err
		}
		for _, kv := range resp.Kvs {
			if err := fn(kv.Key, present(kv.Value)); err != nil {
				return err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
		if rev == 0 {
			rev = resp.Header.Revision
		}
	}
}

// prefixEndString is the end of the range of keys starting with p.
func prefixEndString(p string) string {
	return clientv3.GetPrefixRangeEnd(p)
}

// maxAttempts bounds the retries of a mutation that keeps losing to other
// writers.
const maxAttempts = 1000

// mutate runs fn against the store as read at one etcd revision and
// commits what it wrote in one transaction guarded by the revision
// counter's mod_revision: when another mutation committed meanwhile, fn
// runs again on fresh reads (so, as with Bolt, it may run more than once).
// Every transaction writes the counter, even when no revision is taken,
// which is what makes the guard cover every write. A chunked revocation in
// progress is finished first; one that fn starts is finished before
// mutate returns, and the last revision it took is returned.
func (s *Etcd) mutate(ctx context.Context, fn func(w *writer) error) (uint64, error) {
	if err := s.usable(ctx); err != nil {
		return 0, err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	for attempt := 0; attempt < maxAttempts; attempt++ {
		h, err := s.readHead(ctx)
		if err != nil {
			return 0, err
		}
		if h.intent != nil {
			if _, err := s.finishIntent(ctx); err != nil {
				return 0, err
			}
			continue
		}
		e := &etcdKV{s: s, ctx: ctx, rev: h.etcdRev, writes: map[string][]byte{}}
		w := &writer{kv: e, start: h.rev, rev: h.rev, limit: s.revocationLimit(), outbox: s.outbox.Load()}
		if err := fn(w); err != nil {
			if errors.Is(err, errConflict) {
				continue
			}
			var r rejection
			if errors.As(err, &r) {
				return 0, r.err
			}
			return 0, err
		}
		if !w.dirty {
			return 0, nil
		}
		if err := s.commit(ctx, e, h, w.rev); err != nil {
			if errors.Is(err, errConflict) {
				continue
			}
			return 0, err
		}
		if w.deferred != nil {
			return s.finishIntent(ctx)
		}
		if w.rev == w.start {
			return 0, nil
		}
		return w.rev, nil
	}
	return 0, fmt.Errorf("%w: etcd: %d attempts lost to concurrent writers", ErrUnavailable, maxAttempts)
}

// commit writes e's buffer and the revision counter (rev) in one
// transaction, if the counter has not changed since h was read.
func (s *Etcd) commit(ctx context.Context, e *etcdKV, h head, rev uint64) error {
	revKey := s.key(bucketMeta, metaRevision)
	e.writes[revKey] = be(rev)
	if len(e.writes) > s.maxOps {
		return fmt.Errorf("%w: %d writes in one etcd transaction, the limit is %d", ErrTooLarge, len(e.writes), s.maxOps)
	}
	if e.bytes > s.maxBytes-4096 {
		return fmt.Errorf("%w: an etcd transaction of about %d bytes, the limit is %d", ErrTooLarge, e.bytes, s.maxBytes)
	}
	ops := make([]clientv3.Op, 0, len(e.writes))
	for k, v := range e.writes {
		if v == nil {
			ops = append(ops, clientv3.OpDelete(k))
		} else {
			ops = append(ops, clientv3.OpPut(k, string(v)))
		}
	}
	if err := s.usable(ctx); err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	resp, err := s.cli.Txn(rctx).If(clientv3.Compare(clientv3.ModRevision(revKey), "=", h.revModRev)).Then(ops...).Commit()
	if err != nil {
		return s.mapErr(ctx, err)
	}
	if !resp.Succeeded {
		return errConflict
	}
	s.publish(rev)
	return nil
}

// finishIntent carries out a chunked revocation in progress, chunk by
// chunk, each chunk one guarded transaction, and returns the store's
// revision once no intent is left.
func (s *Etcd) finishIntent(ctx context.Context) (uint64, error) {
	for attempt := 0; attempt < maxAttempts; {
		h, err := s.readHead(ctx)
		if err != nil {
			return 0, err
		}
		if h.intent == nil {
			return h.rev, nil
		}
		in, err := decodeIntent(h.intent, h.done)
		if err != nil {
			return 0, err
		}
		e := &etcdKV{s: s, ctx: ctx, rev: h.etcdRev, writes: map[string][]byte{}}
		w := &writer{kv: e, start: h.rev, rev: h.rev, outbox: s.outbox.Load()}
		err = applyIntentChunk(w, in, e.full)
		if err == nil {
			err = s.commit(ctx, e, h, w.rev)
		}
		if errors.Is(err, errConflict) {
			attempt++
			continue
		}
		if err != nil {
			return 0, err
		}
		if s.afterChunk != nil {
			if err := s.afterChunk(); err != nil {
				return 0, err
			}
		}
	}
	return 0, fmt.Errorf("%w: etcd: chunked revocation lost %d times to concurrent writers", ErrUnavailable, maxAttempts)
}

// ---- reads ----

// GetToken returns one token, ErrNotFound when unknown.
func (s *Etcd) GetToken(ctx context.Context, id string) (Token, error) {
	vals, err := s.getMany(ctx, []string{s.key(bucketTokens, []byte(id)), s.key(bucketLastUse, []byte(id))}, 0)
	if err != nil {
		return Token{}, err
	}
	if vals[0] == nil {
		return Token{}, fmt.Errorf("token %s: %w", id, ErrNotFound)
	}
	t, _, err := decodeToken(vals[0])
	t.LastUseTime = lastUseOf(vals[1])
	return t, err
}

// getMany reads keys at etcd revision rev, in transactions of at most
// maxOps reads; absent keys get nil.
func (s *Etcd) getMany(ctx context.Context, keys []string, rev int64) ([][]byte, error) {
	out := make([][]byte, 0, len(keys))
	for len(keys) > 0 {
		n := min(len(keys), s.maxOps)
		ops := make([]clientv3.Op, n)
		for i, k := range keys[:n] {
			ops[i] = clientv3.OpGet(k, clientv3.WithRev(rev))
		}
		s.beforePinned(rev)
		if err := s.usable(ctx); err != nil {
			return nil, err
		}
		rctx, cancel := context.WithTimeout(ctx, s.timeout)
		resp, err := s.cli.Txn(rctx).Then(ops...).Commit()
		cancel()
		if err != nil {
			return nil, s.mapErr(ctx, err)
		}
		for _, r := range resp.Responses {
			kvs := r.GetResponseRange().GetKvs()
			if len(kvs) == 0 {
				out = append(out, nil)
			} else {
				out = append(out, present(kvs[0].Value))
			}
		}
		keys = keys[n:]
	}
	return out, nil
}

// ListTokens returns one page of an organization's tokens, newest first,
// exactly as Bolt.ListTokens does (same page tokens, same scan budget).
func (s *Etcd) ListTokens(ctx context.Context, f ListFilter) (out []Token, next string, err error) {
	err = s.pinnedRead(ctx, func() error {
		out, next, err = s.listTokens(ctx, f)
		return err
	})
	return out, next, err
}

func (s *Etcd) listTokens(ctx context.Context, f ListFilter) ([]Token, string, error) {
	if f.OrgID == "" {
		return nil, "", fmt.Errorf("%w: organization is empty", ErrInvalid)
	}
	size := pageSize(f.PageSize)
	bucket, tag, prefix := bucketTokensByOrg, pageTagOrg, orgPrefix(f.OrgID)
	if f.CreatedBy != "" {
		bucket, tag, prefix = bucketTokensByCreator, pageTagCreator, creatorPrefix(f.OrgID, f.CreatedBy)
	}
	if len(f.PageToken) > MaxPageTokenLen {
		return nil, "", ErrBadPageToken
	}
	end := prefixEnd(prefix)
	if f.PageToken != "" {
		raw, err := decodePageToken(f.PageToken)
		if err != nil || len(raw) < 1+len(prefix)+8+1 || raw[0] != tag || !bytes.HasPrefix(raw[1:], prefix) {
			return nil, "", ErrBadPageToken
		}
		end = raw[1:]
	}
	from := s.key(bucket, prefix)
	to := prefixEndString(from)
	if end != nil {
		to = s.key(bucket, end)
	}
	strip := len(s.key(bucket, nil))
	var (
		out             []Token
		lastOut, lastSn []byte
		scanned         int
		rev             int64
	)
	for {
		batch := min(size+1, maxScanPerPage-scanned, 500)
		resp, err := s.get(ctx, from, clientv3.WithRange(to), clientv3.WithRev(rev), clientv3.WithLimit(int64(batch)),
			clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend))
		if err != nil {
			return nil, "", err
		}
		rev = resp.Header.Revision
		// Each token's record, then its last use.
		keys := make([]string, 2*len(resp.Kvs))
		for i, kv := range resp.Kvs {
			k := kv.Key[strip:]
			if len(k) < len(prefix)+8+1 {
				return nil, "", fmt.Errorf("%w: short listing key", ErrCorrupt)
			}
			keys[2*i] = s.key(bucketTokens, k[len(prefix)+8:])
			keys[2*i+1] = s.key(bucketLastUse, k[len(prefix)+8:])
		}
		vals, err := s.getMany(ctx, keys, rev)
		if err != nil {
			return nil, "", err
		}
		for i, kv := range resp.Kvs {
			if scanned == maxScanPerPage {
				return out, pageToken(tag, lastSn), nil
			}
			scanned++
			k := kv.Key[strip:]
			if vals[2*i] == nil {
				return nil, "", fmt.Errorf("%w: listing names token %s that is not stored", ErrCorrupt, k[len(prefix)+8:])
			}
			t, _, err := decodeToken(vals[2*i])
			if err != nil {
				return nil, "", err
			}
			t.LastUseTime = lastUseOf(vals[2*i+1])
			lastSn = k
			if f.State != StateAny && t.StateAt(f.Now) != f.State || !f.matchesUse(&t) {
				continue
			}
			if len(out) == size {
				return out, pageToken(tag, lastOut), nil
			}
			out = append(out, t)
			lastOut = k
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return out, "", nil
		}
		if scanned == maxScanPerPage {
			return out, pageToken(tag, lastSn), nil
		}
		to = string(resp.Kvs[len(resp.Kvs)-1].Key)
	}
}

// ListAudit returns one page of an organization's audit records, oldest
// first, as Bolt.ListAudit does.
func (s *Etcd) ListAudit(ctx context.Context, f AuditFilter) (out []AuditRecord, next string, err error) {
	err = s.pinnedRead(ctx, func() error {
		out, next, err = s.listAudit(ctx, f)
		return err
	})
	return out, next, err
}

func (s *Etcd) listAudit(ctx context.Context, f AuditFilter) ([]AuditRecord, string, error) {
	size := pageSize(f.PageSize)
	prefix := orgPrefix(f.OrgID)
	after, err := decodeAuditPage(prefix, f.PageToken)
	if err != nil {
		return nil, "", err
	}
	if after == ^uint64(0) {
		return nil, "", nil
	}
	from := s.key(bucketAuditByOrg, auditOrgKey(f.OrgID, after+1))
	resp, err := s.get(ctx, from, clientv3.WithRange(prefixEndString(s.key(bucketAuditByOrg, prefix))), clientv3.WithLimit(int64(size+1)))
	if err != nil {
		return nil, "", err
	}
	strip := len(s.key(bucketAuditByOrg, nil))
	revs := make([]uint64, 0, len(resp.Kvs))
	keys := make([]string, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		k := kv.Key[strip:]
		if len(k) != len(prefix)+8 {
			return nil, "", fmt.Errorf("%w: audit index key of %d bytes", ErrCorrupt, len(k))
		}
		rev := decodeBE(k[len(prefix):])
		revs = append(revs, rev)
		keys = append(keys, s.key(bucketAudit, be(rev)))
	}
	next := ""
	if len(keys) > size {
		keys, revs = keys[:size], revs[:size]
		next = auditPageToken(f.OrgID, revs[size-1])
	}
	vals, err := s.getMany(ctx, keys, resp.Header.Revision)
	if err != nil {
		return nil, "", err
	}
	out := make([]AuditRecord, 0, len(vals))
	for i, v := range vals {
		if v == nil {
			return nil, "", fmt.Errorf("%w: audit index names revision %d that is not stored", ErrCorrupt, revs[i])
		}
		a, err := decodeAudit(revs[i], v)
		if err != nil {
			return nil, "", err
		}
		out = append(out, a)
	}
	return out, next, nil
}

// ListKeys returns every key, in the order they were added, with their
// sealed private halves.
func (s *Etcd) ListKeys(ctx context.Context) (out []Key, err error) {
	err = s.pinnedRead(ctx, func() error {
		out, err = s.allKeys(ctx, 0, true)
		return err
	})
	return out, err
}

func (s *Etcd) allKeys(ctx context.Context, rev int64, withPrivate bool) ([]Key, error) {
	from := s.key(bucketKeys, nil)
	return keysInOrder(func(fn func(v []byte) error) error {
		return s.rangeAll(ctx, from, prefixEndString(from), rev, func(_, v []byte) error { return fn(v) })
	}, withPrivate)
}

// EventsAfter returns up to limit streamed events after revision after,
// as Bolt.EventsAfter does. The head and the events are read at one etcd
// revision, so a commit racing with the read is either wholly seen or not.
func (s *Etcd) EventsAfter(ctx context.Context, after uint64, limit int) (out []Event, err error) {
	err = s.pinnedRead(ctx, func() error {
		out, err = s.eventsAfter(ctx, after, limit)
		return err
	})
	return out, err
}

func (s *Etcd) eventsAfter(ctx context.Context, after uint64, limit int) ([]Event, error) {
	switch {
	case limit <= 0:
		limit = DefaultEventLimit
	case limit > MaxEventLimit:
		limit = MaxEventLimit
	}
	h, err := s.readHead(ctx)
	if err != nil {
		return nil, err
	}
	switch {
	case after < h.floor:
		return nil, fmt.Errorf("%w: revision %d is below the compacted revision %d", ErrCompacted, after, h.floor)
	case after > h.rev:
		return nil, fmt.Errorf("%w: revision %d is ahead of the store's revision %d", ErrCompacted, after, h.rev)
	case after == h.rev:
		return nil, nil
	}
	var out []Event
	stop := errors.New("stop")
	strip := len(s.key(bucketEvents, nil))
	err = s.rangeAll(ctx, s.key(bucketEvents, be(after+1)), s.key(bucketEvents, be(h.rev+1)), h.etcdRev, func(k, v []byte) error {
		if len(out) == limit {
			return stop
		}
		kind, err := eventKindOf(v)
		if err != nil {
			return err
		}
		if kind == EventTokenCreated || kind == EventTokenExpiring {
			return nil
		}
		ev, err := decodeEvent(decodeBE(k[strip:]), v)
		if err != nil {
			return err
		}
		out = append(out, ev)
		return nil
	})
	if err != nil && !errors.Is(err, stop) {
		return nil, err
	}
	return out, nil
}

// DigestAt returns the history digest at rev, as Bolt.DigestAt does.
func (s *Etcd) DigestAt(ctx context.Context, rev uint64) (d []byte, err error) {
	err = s.pinnedRead(ctx, func() error {
		h, err := s.readHead(ctx)
		if err != nil {
			return err
		}
		d, err = s.digestAt(ctx, h, rev)
		return err
	})
	return d, err
}

func (s *Etcd) digestAt(ctx context.Context, h head, rev uint64) ([]byte, error) {
	if rev < h.floor || rev > h.rev {
		return nil, fmt.Errorf("%w: no history digest at revision %d (held: %d to %d)", ErrCompacted, rev, h.floor, h.rev)
	}
	s.beforePinned(h.etcdRev)
	resp, err := s.get(ctx, s.key(bucketDigests, be(rev)), clientv3.WithRev(h.etcdRev))
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("%w: no history digest at revision %d (before the chain's start)", ErrCompacted, rev)
	}
	if v := resp.Kvs[0].Value; len(v) != DigestSize {
		return nil, fmt.Errorf("%w: history digest at revision %d has %d bytes", ErrCorrupt, rev, len(v))
	}
	return resp.Kvs[0].Value, nil
}

// Snapshot returns, at one etcd revision, the revision, its digest, every
// revoked token whose expiry is after now and every key without its
// private half.
func (s *Etcd) Snapshot(ctx context.Context, now time.Time) (snap Snapshot, err error) {
	err = s.pinnedRead(ctx, func() error {
		snap, err = s.snapshot(ctx, now)
		return err
	})
	return snap, err
}

func (s *Etcd) snapshot(ctx context.Context, now time.Time) (Snapshot, error) {
	h, err := s.readHead(ctx)
	if err != nil {
		return Snapshot{}, err
	}
	snap := Snapshot{Epoch: s.epoch, Revision: h.rev, Revoked: []Revoked{}}
	if snap.Digest, err = s.digestAt(ctx, h, h.rev); err != nil {
		return Snapshot{}, err
	}
	from := s.key(bucketRevoked, nil)
	strip := len(from)
	if err := s.rangeAll(ctx, from, prefixEndString(from), h.etcdRev, func(k, v []byte) error {
		exp, err := decodeExpiry(v)
		if err != nil {
			return err
		}
		if now.Before(exp) {
			snap.Revoked = append(snap.Revoked, Revoked{TokenID: string(k[strip:]), ExpiresAt: exp})
		}
		return nil
	}); err != nil {
		return Snapshot{}, err
	}
	if snap.Keys, err = s.allKeys(ctx, h.etcdRev, false); err != nil {
		return Snapshot{}, err
	}
	return snap, nil
}

// Compact drops what Bolt.Compact drops, by the same rules, and returns the
// compaction floor. The floor is raised first, in a transaction guarded by
// its own mod_revision (floors only rise), so that no follower is served
// from a log with a hole; the deletions follow in transactions of at most
// the operation limit (events and expired entries are never written again,
// so they need no guard). A crash between them leaves events that a later
// Compact deletes.
func (s *Etcd) Compact(ctx context.Context, now time.Time) (uint64, error) {
	for attempt := 0; ; attempt++ {
		floor, err := s.compact(ctx, now)
		if errors.Is(err, errConflict) && attempt < 3 {
			continue // another authority compacted meanwhile: read again
		}
		return floor, err
	}
}

// compact is one attempt of Compact; errConflict when another compaction
// raised the floor meanwhile.
func (s *Etcd) compact(ctx context.Context, now time.Time) (uint64, error) {
	h, err := s.readHead(ctx)
	if err != nil {
		return 0, err
	}
	floor := h.floor
	var drop []string
	prefix := true
	from := s.key(bucketEvents, nil)
	strip := len(from)
	if err := s.rangeAll(ctx, from, prefixEndString(from), h.etcdRev, func(k, v []byte) error {
		kind, err := eventKindOf(v)
		if err != nil {
			return err
		}
		switch kind {
		case EventTokenRevoked:
			ev, err := decodeEvent(0, v)
			if err != nil {
				return err
			}
			if now.Before(ev.ExpiresAt) {
				prefix = false
				return nil
			}
		case EventKeyAdded, EventKeyRevoked:
			if !prefix {
				return nil
			}
			floor = max(floor, decodeBE(k[strip:]))
		}
		drop = append(drop, string(k))
		return nil
	}); err != nil {
		return 0, err
	}
	from = s.key(bucketRevoked, nil)
	if err := s.rangeAll(ctx, from, prefixEndString(from), h.etcdRev, func(k, v []byte) error {
		exp, err := decodeExpiry(v)
		if err != nil {
			return err
		}
		if !now.Before(exp) {
			drop = append(drop, string(k))
		}
		return nil
	}); err != nil {
		return 0, err
	}
	from = s.key(bucketDigests, nil)
	if err := s.rangeAll(ctx, from, s.key(bucketDigests, be(floor)), h.etcdRev, func(k, _ []byte) error {
		drop = append(drop, string(k))
		return nil
	}); err != nil {
		return 0, err
	}
	if floor > h.floor {
		ck := s.key(bucketMeta, metaCompacted)
		rctx, cancel := context.WithTimeout(ctx, s.timeout)
		resp, err := s.cli.Txn(rctx).If(clientv3.Compare(clientv3.Value(ck), "=", string(be(h.floor)))).Then(clientv3.OpPut(ck, string(be(floor)))).Commit()
		cancel()
		if err != nil {
			return 0, s.mapErr(ctx, err)
		}
		if !resp.Succeeded {
			return 0, errConflict
		}
	}
	if err := s.deleteKeys(ctx, drop); err != nil {
		return 0, err
	}
	return floor, nil
}

// deleteKeys deletes keys in transactions of at most maxOps deletions
// each: what a compaction or retention run drops, which nothing reads any
// more, so the batches need not be atomic together.
func (s *Etcd) deleteKeys(ctx context.Context, keys []string) error {
	for len(keys) > 0 {
		n := min(len(keys), s.maxOps)
		ops := make([]clientv3.Op, n)
		for i, k := range keys[:n] {
			ops[i] = clientv3.OpDelete(k)
		}
		if err := s.usable(ctx); err != nil {
			return err
		}
		rctx, cancel := context.WithTimeout(ctx, s.timeout)
		_, err := s.cli.Txn(rctx).Then(ops...).Commit()
		cancel()
		if err != nil {
			return s.mapErr(ctx, err)
		}
		keys = keys[n:]
	}
	return nil
}

// The mutations: see ops.go.

// CreateToken stores a new token: see createToken.
func (s *Etcd) CreateToken(ctx context.Context, t Token, a AuditRecord) (uint64, error) {
	return createToken(ctx, s, t, a)
}

// RevokeToken revokes a token and its descendants: see revokeTokenOp.
func (s *Etcd) RevokeToken(ctx context.Context, id string, a AuditRecord) (Token, uint64, int64, error) {
	return revokeTokenOp(ctx, s, id, a)
}

// RevokeTokens revokes an organization's or a creator's live tokens: see
// revokeTokens.
func (s *Etcd) RevokeTokens(ctx context.Context, orgID, createdBy string, a AuditRecord) (int64, uint64, error) {
	return revokeTokens(ctx, s, orgID, createdBy, a)
}

// RotateToken replaces a token: see rotateToken.
func (s *Etcd) RotateToken(ctx context.Context, oldID string, next Token, a AuditRecord) (uint64, int64, error) {
	return rotateToken(ctx, s, oldID, next, a)
}

// RevokeUnrecorded revokes a token the store has no record of: see
// revokeUnrecorded.
func (s *Etcd) RevokeUnrecorded(ctx context.Context, t Token, a AuditRecord) (uint64, bool, error) {
	return revokeUnrecorded(ctx, s, t, a)
}

// AddKey stores a new signing key: see addKey.
func (s *Etcd) AddKey(ctx context.Context, k Key, a AuditRecord) (uint64, error) {
	return addKey(ctx, s, k, a)
}

// SetKeyState changes a key's state: see setKeyState.
func (s *Etcd) SetKeyState(ctx context.Context, id string, st KeyState) (uint64, error) {
	return setKeyState(ctx, s, id, st)
}

// RevokeKey revokes a signing key: see revokeKey.
func (s *Etcd) RevokeKey(ctx context.Context, id string, a AuditRecord) (uint64, error) {
	return revokeKey(ctx, s, id, a)
}

// CutKey cuts a signing key: see cutKey.
func (s *Etcd) CutKey(ctx context.Context, id string, issuedAfter time.Time, a AuditRecord) (uint64, error) {
	return cutKey(ctx, s, id, issuedAfter, a)
}

// decodeBE reads a big-endian revision key component (8 bytes).
func decodeBE(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

// decodePageToken decodes a ListTokens page token.
func decodePageToken(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(s)
}
