package server

import (
	"context"
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
// messages are kept for sharing (about 230 bytes a token in memory, so
// about 2 MB at most).
const DefaultSnapshotCacheTokens = 16 * SnapshotChunkSize

// snapshotCache shares the stream messages of the latest small snapshot
// between the revocation streams that start at the same store revision, so
// that many streams starting at once (authorizers after an authority
// restart) do not each read and build it. A larger snapshot is never kept
// whole: each stream reads it from the store chunk by chunk as it sends
// it, so that serving it costs memory for a chunk per stream, not a copy
// of every revoked token. The shared messages are never modified; grpc-go
// only reads them to encode them.
type snapshotCache struct {
	maxTokens int // 0: DefaultSnapshotCacheTokens

	mu     sync.Mutex
	epoch  string
	rev    uint64
	built  time.Time // monotonic reading used
	msgs   []*sigilv1.WatchRevocationsResponse
	digest []byte // the history digest at rev
}

// stream sends a snapshot of st through send: its chunks, with the revoked
// tokens expiring after cutoff, then its end marker. It returns the
// snapshot's revision and the history digest at it. The messages come from
// a recent small snapshot at the store's current revision when one is
// kept, else from the store, read chunk by chunk as they are sent (a send
// that fails or times out ends the read). (A restored or replaced file
// means a new process, so an empty cache: a shared snapshot is always of
// this history.)
func (c *snapshotCache) stream(ctx context.Context, st store.Store, cutoff time.Time, send func(*sigilv1.WatchRevocationsResponse) error) (uint64, []byte, error) {
	if msgs, rev, digest, ok := c.cached(st); ok {
		for _, m := range msgs {
			if err := send(m); err != nil {
				return 0, nil, err
			}
		}
		return rev, digest, nil
	}
	limit := c.maxTokens
	if limit <= 0 {
		limit = DefaultSnapshotCacheTokens
	}
	var kept []*sigilv1.WatchRevocationsResponse // while the snapshot is small enough to keep
	tokens, first := 0, true
	head, err := st.SnapshotEach(ctx, cutoff, SnapshotChunkSize, func(p store.SnapshotPart) error {
		m := chunkMessage(p, first)
		first = false
		if tokens += len(p.Revoked); tokens <= limit {
			kept = append(kept, m)
		} else {
			kept = nil
		}
		return send(m)
	})
	if err != nil {
		return 0, nil, err
	}
	end := &sigilv1.WatchRevocationsResponse{Event: &sigilv1.WatchRevocationsResponse_SnapshotEnd{
		SnapshotEnd: &sigilv1.SnapshotEnd{Epoch: head.Epoch, Revision: head.Revision, Digest: head.Digest},
	}}
	if tokens <= limit {
		c.keep(head, append(kept, end))
	}
	return head.Revision, head.Digest, send(end)
}

// cached returns the messages kept of a snapshot at st's current revision,
// if they are recent.
func (c *snapshotCache) cached(st store.Store) ([]*sigilv1.WatchRevocationsResponse, uint64, []byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.msgs != nil && c.epoch == st.Epoch() && c.rev == st.Revision() && time.Since(c.built) < snapshotReuse {
		return c.msgs, c.rev, c.digest, true
	}
	return nil, 0, nil, false
}

// keep keeps the messages of the snapshot at head for the streams that
// start next, unless a newer one is kept.
func (c *snapshotCache) keep(head store.SnapshotHead, msgs []*sigilv1.WatchRevocationsResponse) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.msgs != nil && c.epoch == head.Epoch && c.rev > head.Revision {
		return
	}
	c.epoch, c.rev, c.built, c.msgs, c.digest = head.Epoch, head.Revision, time.Now(), msgs, head.Digest
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
