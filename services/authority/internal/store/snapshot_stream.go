package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Limits of SnapshotEach's chunk.
const (
	// DefaultSnapshotChunk is the chunk SnapshotEach uses when the caller
	// gives none (0 or less).
	DefaultSnapshotChunk = 500
	// MaxSnapshotChunk caps SnapshotEach's chunk: memory is O(chunk).
	MaxSnapshotChunk = 10_000
)

// SnapshotHead is the point a streamed snapshot is read at: the store's
// epoch, the revision, the history digest at it (DigestAt) and every key
// without its private half, in the order they were added.
type SnapshotHead struct {
	Epoch    string
	Revision uint64
	Digest   []byte
	Keys     []Key
}

// SnapshotPart is one chunk of a streamed snapshot.
type SnapshotPart struct {
	// Head is the snapshot's point, the same in every part.
	Head SnapshotHead
	// Revoked holds chunk revoked tokens (the last part: at most chunk),
	// by token id, ascending across parts. The slice is reused once fn
	// returns: copy what is kept.
	Revoked []Revoked
}

// SnapshotStreamer reads a snapshot in chunks, so that serving one costs
// memory for a chunk, not for every revoked token.
type SnapshotStreamer interface {
	// SnapshotEach reads what Snapshot returns (the revoked tokens whose
	// expiry is after now, and the keys), as of one revision, and calls fn
	// with every chunk of it in order: at least once (with no token when
	// there is none), and never while holding a transaction open. It
	// returns the head, or the first error of fn or of the reads (parts may
	// have been delivered before an error: the caller drops them).
	SnapshotEach(ctx context.Context, now time.Time, chunk int, fn func(SnapshotPart) error) (SnapshotHead, error)
}

func snapshotChunk(chunk int) int {
	switch {
	case chunk <= 0:
		return DefaultSnapshotChunk
	case chunk > MaxSnapshotChunk:
		return MaxSnapshotChunk
	}
	return chunk
}

// SnapshotEach streams the snapshot at the revision of its first read
// transaction. Each chunk is read in a transaction of its own, closed
// before fn runs: a bbolt read transaction held while a follower takes a
// million tokens would keep bbolt from reusing the pages freed meanwhile
// (the file grows) and, once the file must grow, would block every writer
// on the remap until the follower is done.
//
// Later transactions see the revocations committed since the head. Every
// one of them is a revoked-bucket entry written in the same transaction as
// its EventTokenRevoked with a revision after the head, so the entries of
// those events are skipped: each chunk reads the events since the previous
// chunk's transaction and remembers the ids the cursor has not passed yet
// (memory for the revocations committed during the stream, not for the
// snapshot). What the follower gets is the revoked set at the head, less
// the entries Compact deleted meanwhile (tokens expired beyond the leeway,
// whose events Compact deletes for resuming followers too); the skipped
// revocations reach it as live events after the head.
func (s *Bolt) SnapshotEach(ctx context.Context, now time.Time, chunk int, fn func(SnapshotPart) error) (SnapshotHead, error) {
	r := boltSnapshotReader{s: s, now: now, chunk: snapshotChunk(chunk), late: map[string]struct{}{}}
	r.buf = make([]Revoked, 0, r.chunk)
	delivered := false
	for first := true; first || !r.done; first = false {
		if err := s.view(ctx, func(tx *bolt.Tx) error { return r.read(ctx, tx, first) }); err != nil {
			return SnapshotHead{}, err
		}
		if len(r.buf) == 0 && (delivered || !r.done) {
			continue
		}
		if err := fn(SnapshotPart{Head: r.head, Revoked: r.buf}); err != nil {
			return SnapshotHead{}, err
		}
		delivered = true
	}
	return r.head, nil
}

// boltSnapshotReader is the state of one Bolt.SnapshotEach between its
// transactions.
type boltSnapshotReader struct {
	s     *Bolt
	now   time.Time
	chunk int

	head  SnapshotHead
	seen  uint64              // events up to seen have been read for late
	late  map[string]struct{} // revoked after the head, cursor not past them
	after []byte              // the last revoked-bucket key read (nil: none)
	done  bool                // the cursor reached the end
	buf   []Revoked           // the chunk read by the last transaction
}

// read reads the next chunk into r.buf, and the head first.
func (r *boltSnapshotReader) read(ctx context.Context, tx *bolt.Tx, first bool) error {
	r.buf = r.buf[:0]
	if first {
		h := SnapshotHead{Epoch: r.s.epoch}
		var err error
		if h.Revision, err = currentRevision(tx); err != nil {
			return err
		}
		if h.Digest, err = digestAt(tx, h.Revision); err != nil {
			return err
		}
		if h.Keys, err = allKeys(tx, false); err != nil {
			return err
		}
		r.head, r.seen = h, h.Revision
	} else if err := r.readLate(ctx, tx); err != nil {
		return err
	}
	c := tx.Bucket(bucketRevoked).Cursor()
	var k, v []byte
	if r.after == nil {
		k, v = c.First()
	} else if k, v = c.Seek(r.after); k != nil && bytes.Equal(k, r.after) {
		k, v = c.Next()
	}
	var last []byte
	for n := 0; k != nil && len(r.buf) < r.chunk; k, v = c.Next() {
		if n++; n%ctxCheckEvery == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		last = k
		if _, ok := r.late[string(k)]; ok {
			delete(r.late, string(k))
			continue
		}
		exp, err := decodeExpiry(v)
		if err != nil {
			return err
		}
		if r.now.Before(exp) {
			r.buf = append(r.buf, Revoked{TokenID: string(k), ExpiresAt: exp})
		}
	}
	r.done = k == nil
	if last != nil {
		r.after = bytes.Clone(last) // bbolt's keys live only as long as tx
	}
	return nil
}

// readLate adds to r.late the tokens revoked by the events committed since
// the previous transaction whose ids the cursor has not passed.
func (r *boltSnapshotReader) readLate(ctx context.Context, tx *bolt.Tx) error {
	rev, err := currentRevision(tx)
	if err != nil || rev <= r.seen {
		return err
	}
	c := tx.Bucket(bucketEvents).Cursor()
	n := 0
	for k, v := c.Seek(be(r.seen + 1)); k != nil; k, v = c.Next() {
		if n++; n%ctxCheckEvery == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		kind, err := eventKindOf(v)
		if err != nil {
			return err
		}
		if kind != EventTokenRevoked {
			continue
		}
		ev, err := decodeEvent(binary.BigEndian.Uint64(k), v)
		if err != nil {
			return err
		}
		if r.after == nil || ev.TokenID > string(r.after) {
			r.late[ev.TokenID] = struct{}{}
		}
	}
	r.seen = rev
	return nil
}

// SnapshotEach streams the snapshot at one etcd revision: the head's, at
// which every chunk is read (a range request of chunk keys each), so the
// follower gets exactly the state of that revision. It is a pinnedRead:
// when etcd compacts that revision away before the first part is
// delivered, the read starts again at a fresh head; after it, the parts
// delivered belong to the old revision and the call fails with
// ErrUnavailable (the follower asks for a new snapshot).
func (s *Etcd) SnapshotEach(ctx context.Context, now time.Time, chunk int, fn func(SnapshotPart) error) (head SnapshotHead, err error) {
	chunk = snapshotChunk(chunk)
	delivered := false
	deliver := func(p SnapshotPart) error {
		delivered = true
		return fn(p)
	}
	err = s.pinnedRead(ctx, func() error {
		head, err = s.snapshotEach(ctx, now, chunk, deliver)
		if errors.Is(err, errEtcdCompacted) && delivered {
			return fmt.Errorf("%w: etcd compacted the revision of the snapshot while it was being streamed: %v", ErrUnavailable, err)
		}
		return err
	})
	if err != nil {
		return SnapshotHead{}, err
	}
	return head, nil
}

// snapshotEach is one attempt of SnapshotEach. The errors of fn are
// returned as they are; they never wrap errEtcdCompacted.
func (s *Etcd) snapshotEach(ctx context.Context, now time.Time, chunk int, fn func(SnapshotPart) error) (SnapshotHead, error) {
	h, err := s.readHead(ctx)
	if err != nil {
		return SnapshotHead{}, err
	}
	head := SnapshotHead{Epoch: s.epoch, Revision: h.rev}
	if head.Digest, err = s.digestAt(ctx, h, h.rev); err != nil {
		return SnapshotHead{}, err
	}
	if head.Keys, err = s.allKeys(ctx, h.etcdRev, false); err != nil {
		return SnapshotHead{}, err
	}
	from := s.key(bucketRevoked, nil)
	end, strip := prefixEndString(from), len(from)
	// buf holds what a range read has not delivered yet: less than chunk
	// between reads, less than twice chunk after one.
	buf := make([]Revoked, 0, 2*chunk)
	delivered := false
	for {
		s.beforePinned(h.etcdRev)
		resp, err := s.get(ctx, from, clientv3.WithRange(end), clientv3.WithRev(h.etcdRev), clientv3.WithLimit(int64(chunk)))
		if err != nil {
			return SnapshotHead{}, err
		}
		for _, kv := range resp.Kvs {
			exp, err := decodeExpiry(present(kv.Value))
			if err != nil {
				return SnapshotHead{}, err
			}
			if now.Before(exp) {
				buf = append(buf, Revoked{TokenID: string(kv.Key[strip:]), ExpiresAt: exp})
			}
		}
		more := resp.More && len(resp.Kvs) > 0
		for len(buf) >= chunk || (!more && (len(buf) > 0 || !delivered)) {
			n := min(len(buf), chunk)
			if err := fn(SnapshotPart{Head: head, Revoked: buf[:n]}); err != nil {
				return SnapshotHead{}, err
			}
			buf, delivered = append(buf[:0], buf[n:]...), true
		}
		if !more {
			return head, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}
