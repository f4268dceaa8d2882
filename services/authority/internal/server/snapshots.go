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

// snapshotCache shares the stream messages of the latest snapshot between
// the revocation streams that start at the same store revision: a snapshot
// is a copy of every revoked token, and without sharing each of many
// streams starting at once (authorizers after an authority restart, or an
// attacker holding streams it never reads) would hold its own. The shared
// messages are never modified; grpc-go only reads them to encode them.
type snapshotCache struct {
	mu     sync.Mutex // held while building, so that concurrent streams build once
	epoch  string
	rev    uint64
	built  time.Time // monotonic reading used
	msgs   []*sigilv1.WatchRevocationsResponse
	digest []byte // the history digest at rev
}

// get returns the snapshot's messages (chunks, then the end marker), its
// revision and the history digest at that revision, built from st with
// revocations expiring after cutoff, or shared from a recent build at the
// store's current revision. (A restored or replaced file means a new
// process, so an empty cache: a shared snapshot is always of this history.)
func (c *snapshotCache) get(ctx context.Context, st store.Store, cutoff time.Time) ([]*sigilv1.WatchRevocationsResponse, uint64, []byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.msgs != nil && c.epoch == st.Epoch() && c.rev == st.Revision() && time.Since(c.built) < snapshotReuse {
		return c.msgs, c.rev, c.digest, nil
	}
	snap, err := st.Snapshot(ctx, cutoff)
	if err != nil {
		return nil, 0, nil, err
	}
	keys := make([]*sigilv1.SigningKey, len(snap.Keys))
	for i, k := range snap.Keys {
		keys[i] = keyToProto(k)
	}
	var msgs []*sigilv1.WatchRevocationsResponse
	revoked := snap.Revoked
	for first := true; first || len(revoked) > 0; first = false {
		n := min(len(revoked), SnapshotChunkSize)
		chunk := &sigilv1.SnapshotChunk{Epoch: snap.Epoch, Revision: snap.Revision, RevokedTokens: make([]*sigilv1.TokenRevoked, n)}
		for i, r := range revoked[:n] {
			chunk.RevokedTokens[i] = &sigilv1.TokenRevoked{TokenId: r.TokenID, ExpiresAt: ts(r.ExpiresAt)}
		}
		if first {
			chunk.Keys = keys
		}
		revoked = revoked[n:]
		msgs = append(msgs, &sigilv1.WatchRevocationsResponse{Event: &sigilv1.WatchRevocationsResponse_SnapshotChunk{SnapshotChunk: chunk}})
	}
	msgs = append(msgs, &sigilv1.WatchRevocationsResponse{Event: &sigilv1.WatchRevocationsResponse_SnapshotEnd{
		SnapshotEnd: &sigilv1.SnapshotEnd{Epoch: snap.Epoch, Revision: snap.Revision, Digest: snap.Digest},
	}})
	c.epoch, c.rev, c.built, c.msgs, c.digest = snap.Epoch, snap.Revision, time.Now(), msgs, snap.Digest
	return msgs, snap.Revision, snap.Digest, nil
}
