package server

import (
	"context"
	"errors"
	"sync"
	"time"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// snapshotReuse is how long the messages of a snapshot are shared with
// streams that start later while the store stays at the same revision. The
// only thing that ages in a snapshot unchanged by commits is which revoked
// tokens have expired beyond the margin; one that lingers a few seconds
// more is harmless (the follower prunes it).
const snapshotReuse = 5 * time.Second

// DefaultSnapshotCacheTokens is the most revoked tokens of a snapshot whose
// messages are kept for sharing: about 230 bytes a token in memory, so
// about 11 MiB at most. Above it each stream reads the snapshot itself,
// holding about a chunk's messages and grpc-go's buffers (0.1–0.2 MiB)
// while it sends: sharing is the cheaper of the two for a snapshot of this
// size as soon as a few dozen streams start together.
const DefaultSnapshotCacheTokens = 100 * SnapshotChunkSize

// snapshotCache shares the stream messages of the latest small snapshot
// between the revocation streams that start at the same store revision, so
// that many streams starting at once (authorizers after an authority
// restart, or an attacker holding streams it never reads) share one copy
// rather than each holding its own. A larger snapshot is never kept whole:
// each stream reads it from the store chunk by chunk as it sends it, so
// that serving it costs memory for a chunk per stream, not a copy of every
// revoked token. The shared messages are never modified; grpc-go only
// reads them to encode them.
type snapshotCache struct {
	maxTokens int // 0: DefaultSnapshotCacheTokens

	mu     sync.Mutex // held while building, so that concurrent streams build once
	epoch  string
	rev    uint64
	built  time.Time                           // monotonic reading used
	msgs   []*sigilv1.WatchRevocationsResponse // nil: the snapshot at rev is too large to keep
	digest []byte                              // the history digest at rev
}

// errSnapshotLarge stops the read of a snapshot too large to keep.
var errSnapshotLarge = errors.New("snapshot too large to keep")

// stream sends a snapshot of st through send: its chunks, with the revoked
// tokens expiring after cutoff, then its end marker. It returns the
// snapshot's revision and the history digest at it. A small snapshot's
// messages are shared (kept, or built and kept now); a larger one is read
// from the store chunk by chunk as it is sent (a send that fails or times
// out ends the read), the next chunk read while one is sent (readAhead).
// (A restored or replaced file means a new process, so
// an empty cache: a shared snapshot is always of this history.)
func (c *snapshotCache) stream(ctx context.Context, st store.Store, cutoff time.Time, send func(*sigilv1.WatchRevocationsResponse) error) (uint64, []byte, error) {
	msgs, rev, digest, err := c.small(ctx, st, cutoff)
	if err != nil {
		return 0, nil, err
	}
	if msgs != nil {
		for _, m := range msgs {
			if err := send(m); err != nil {
				return 0, nil, err
			}
		}
		return rev, digest, nil
	}
	head, err := readAhead(ctx, func(ctx context.Context, fn func(store.SnapshotPart) error) (store.SnapshotHead, error) {
		return st.SnapshotEach(ctx, cutoff, SnapshotChunkSize, fn)
	}, send)
	if err != nil {
		return 0, nil, err
	}
	return head.Revision, head.Digest, send(endMessage(head))
}

// readAhead sends the chunk messages of the snapshot each reads, in order,
// reading and building the next chunk while the current one is sent: the
// store read and the message building overlap the send (and the flow
// control waits behind it) instead of adding to it. It is bounded to one
// chunk ahead (an unbuffered hand-over, so a stream holds at most the chunk
// being sent and the next one), and the read never outlives the call: a
// send that fails cancels it and waits for it to end. It returns the
// snapshot's head, or the first error of the read or of send.
func readAhead(ctx context.Context, each func(context.Context, func(store.SnapshotPart) error) (store.SnapshotHead, error), send func(*sigilv1.WatchRevocationsResponse) error) (store.SnapshotHead, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	msgs := make(chan *sigilv1.WatchRevocationsResponse)
	var head store.SnapshotHead
	var readErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(msgs)
		first := true
		head, readErr = each(ctx, func(p store.SnapshotPart) error {
			// Built here, before the hand-over: the part's slice is the
			// reader's and is reused for the next chunk.
			m := chunkMessage(p, first)
			first = false
			select {
			case msgs <- m:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	for m := range msgs {
		if err := send(m); err != nil {
			cancel()
			<-done
			return store.SnapshotHead{}, err
		}
	}
	<-done
	if readErr != nil {
		return store.SnapshotHead{}, readErr
	}
	return head, nil
}

// small returns the messages of the snapshot at st's current revision when
// it holds at most maxTokens revoked tokens: kept from a recent build, or
// read now (under the lock, so that concurrent streams read it once) and
// kept. It returns no message when the snapshot is larger, and remembers
// that for the revision, so that the streams starting next go straight to
// the store.
func (c *snapshotCache) small(ctx context.Context, st store.Store, cutoff time.Time) ([]*sigilv1.WatchRevocationsResponse, uint64, []byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	epoch, rev := st.Epoch(), st.Revision()
	if c.epoch == epoch && c.rev == rev && !c.built.IsZero() && time.Since(c.built) < snapshotReuse {
		return c.msgs, c.rev, c.digest, nil
	}
	limit := c.maxTokens
	if limit <= 0 {
		limit = DefaultSnapshotCacheTokens
	}
	// Counted first, holding a chunk at a time, so that a large snapshot
	// costs no build of limit tokens' messages only to drop them; a small
	// one is read twice (at most limit tokens, under a millisecond each
	// thousand).
	tokens := 0
	_, err := st.SnapshotEach(ctx, cutoff, SnapshotChunkSize, func(p store.SnapshotPart) error {
		if tokens += len(p.Revoked); tokens > limit {
			return errSnapshotLarge
		}
		return nil
	})
	var msgs []*sigilv1.WatchRevocationsResponse
	var head store.SnapshotHead
	if err == nil {
		tokens = 0 // commits may have revoked more meanwhile: counted again
		head, err = st.SnapshotEach(ctx, cutoff, SnapshotChunkSize, func(p store.SnapshotPart) error {
			if tokens += len(p.Revoked); tokens > limit {
				return errSnapshotLarge
			}
			msgs = append(msgs, chunkMessage(p, len(msgs) == 0))
			return nil
		})
	}
	if errors.Is(err, errSnapshotLarge) {
		c.epoch, c.rev, c.built, c.msgs, c.digest = epoch, rev, time.Now(), nil, nil
		return nil, 0, nil, nil
	}
	if err != nil {
		return nil, 0, nil, err
	}
	msgs = append(msgs, endMessage(head))
	c.epoch, c.rev, c.built, c.msgs, c.digest = head.Epoch, head.Revision, time.Now(), msgs, head.Digest
	return msgs, head.Revision, head.Digest, nil
}

// endMessage returns the end marker of the snapshot at head.
func endMessage(head store.SnapshotHead) *sigilv1.WatchRevocationsResponse {
	return &sigilv1.WatchRevocationsResponse{Event: &sigilv1.WatchRevocationsResponse_SnapshotEnd{
		SnapshotEnd: &sigilv1.SnapshotEnd{Epoch: head.Epoch, Revision: head.Revision, Digest: head.Digest},
	}}
}

// chunkMessage returns the stream message of one part of a snapshot, with
// every key when it is the first.
func chunkMessage(p store.SnapshotPart, first bool) *sigilv1.WatchRevocationsResponse {
	chunk := &sigilv1.SnapshotChunk{Epoch: p.Head.Epoch, Revision: p.Head.Revision, RevokedTokens: make([]*sigilv1.TokenRevoked, len(p.Revoked))}
	for i, r := range p.Revoked {
		chunk.RevokedTokens[i] = &sigilv1.TokenRevoked{TokenId: r.TokenID, ExpiresAt: ts(r.ExpiresAt)}
	}
	if first {
		chunk.Keys = make([]*sigilv1.SigningKey, len(p.Head.Keys))
		for i, k := range p.Head.Keys {
			chunk.Keys[i] = keyToProto(k)
		}
	}
	return &sigilv1.WatchRevocationsResponse{Event: &sigilv1.WatchRevocationsResponse_SnapshotChunk{SnapshotChunk: chunk}}
}
