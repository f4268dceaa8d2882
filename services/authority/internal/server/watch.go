package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sigil-auth/sigil/pkg/grpcserver"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/services/authority/internal/manage"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// WatchRevocations streams revocations and keys to an authorizer. The
// protocol, which the authorizer's follower relies on:
//
//  0. First, on every stream: the permission catalog (the one
//     ListPermissions answers), so that authorizers refuse checks naming a
//     permission the deployment does not have.
//  1. Unless the request continues the store's own history: a snapshot.
//     It does when the epoch is the store's and the store holds
//     after_revision (not compacted, not ahead) with the very digest the
//     follower sends as after_digest (store.DigestAt: a hash chain over the
//     event log). So a follower of a restored or replaced file, or of a file
//     restarted from an older copy, which reaches the same revision numbers
//     by other events, gets a snapshot; so does a follower that sends no
//     digest (an older build), or after_revision 0.
//     One or more SnapshotChunk (≤ SnapshotChunkSize revoked tokens each,
//     every key in the first), then SnapshotEnd, then a Checkpoint at the
//     snapshot revision. SnapshotEnd and every Checkpoint carry the digest at
//     their revision, which the follower sends back when it resumes.
//  2. Otherwise (resume) the stream starts directly with the live events
//     after after_revision, or a Checkpoint when there is none.
//  3. Live events in revision order, without gap or duplicate: token_revoked,
//     key_added (also for a key's change of state) and key_revoked. A
//     Checkpoint{revision: R} promises that every streamed event with a
//     revision ≤ R was sent before it. One follows each batch of commits and
//     one is sent every checkpoint interval (default 1 s).
//  4. The stream reads from the store at its own pace; writers never wait for
//     it. A message that cannot be sent within the send timeout ends the
//     stream with RESOURCE_EXHAUSTED and closes its connection (so that
//     nothing queued for it stays); falling behind compaction ends it with
//     RESOURCE_EXHAUSTED too. The client reconnects and resumes (or gets a
//     snapshot).
//  5. The watch credential or the operator token; anonymous only in dev mode.
//     At most MaxWatchStreams open streams per credential; one more is
//     RESOURCE_EXHAUSTED.
//  6. Server shutdown ends the stream with UNAVAILABLE.
func (s *Server) WatchRevocations(req *sigilv1.WatchRevocationsRequest, stream sigilv1.TokenAuthorityService_WatchRevocationsServer) error {
	ctx := stream.Context()
	c, err := s.authenticate(ctx, manage.AccessWatch)
	if err != nil {
		return s.toStatus(ctx, err)
	}
	release, err := s.watchSlots.acquire(watchIdentity(c))
	if err != nil {
		return err
	}
	defer release()
	s.metrics.subscribers.Inc()
	defer s.metrics.subscribers.Dec()
	w := &watch{s: s, stream: stream, ctx: ctx, in: make(chan []any), out: make(chan error, 1), began: time.Now()}
	w.wire, w.share = wireFormat(ctx)
	s.addStream(w)
	defer s.removeStream(w)
	// The sender ends when in is closed and its Send returns. A Send
	// blocked by a consumer that does not read returns as soon as this
	// handler returns: grpc-go then cancels the stream, which unblocks it.
	// So a cut-off stream holds no goroutine, and none of its messages,
	// past its handler, whether or not the client ever reads or leaves.
	go w.sender()
	defer close(w.in)
	w.timer = time.NewTimer(time.Hour)
	defer w.timer.Stop()
	err = w.run(req)
	if _, ok := status.FromError(err); ok {
		return err
	}
	return s.toStatus(ctx, err)
}

// watch is one revocation stream.
type watch struct {
	s      *Server
	stream sigilv1.TokenAuthorityService_WatchRevocationsServer
	ctx    context.Context

	// in hands batches of messages to the sender goroutine, out returns
	// the batch's result: so that a Send blocked by a consumer that does not
	// read can be given up on after the send timeout. A live event and the
	// checkpoint after it go as one batch: one hand-over, and grpc-go
	// writes them to the connection together.
	in    chan []any
	out   chan error
	timer *time.Timer
	batch []any // the batch being built, reused once sent

	// began is when the stream began; progress is when (time since began,
	// ns) the sender last finished a message: the send timeout counts
	// from there, so it applies to each message of a batch.
	began    time.Time
	progress atomic.Int64

	// wire is the codec and compressor of the stream's messages; share is
	// false when unknown: the stream then encodes its own messages instead
	// of sharing other streams' (fanout).
	wire  string
	share bool

	lastCheckpoint uint64        // revision of the last checkpoint sent
	sent           atomic.Uint64 // lastCheckpoint once its Send returned: every event ≤ it was sent (DrainStreams)
	safe           uint64        // every event ≤ safe has been sent

	digest    []byte // history digest at digestRev, for checkpoints
	digestRev uint64

	// vouched is the revision the follower stands at by what this stream
	// sent (the resumed revision, the snapshot's, the last checkpoint's or
	// live event's): each live event carries it as previous_revision, so
	// that a lost message is detected rather than skipped.
	vouched uint64
}

// sender sends each batch handed over by send, message by message (a
// proto message or a shared grpc.PreparedMsg).
func (w *watch) sender() {
	for batch := range w.in {
		var err error
		for _, m := range batch {
			if err = w.stream.SendMsg(m); err != nil {
				break
			}
			w.progress.Store(int64(time.Since(w.began)))
		}
		// out has room for one result and send reads it before handing
		// over the next batch, so this never blocks.
		w.out <- err
	}
}

// DefaultMaxWatchStreams bounds the open revocation streams of one
// credential: every authorizer of a deployment shares the watch credential,
// so this is also the most authorizers it can serve.
const DefaultMaxWatchStreams = 256

// watchSlots counts the open revocation streams of each credential, so that
// one credential (a leaked watch token, a buggy authorizer reconnecting in
// a loop) cannot hold every stream the authority can carry.
type watchSlots struct {
	max    int
	limits *grpcserver.Limits

	mu   sync.Mutex
	open map[string]int // identity -> open streams
}

func newWatchSlots(max int, limits *grpcserver.Limits) *watchSlots {
	if max <= 0 {
		max = DefaultMaxWatchStreams
	}
	return &watchSlots{max: max, limits: limits, open: map[string]int{}}
}

// acquire takes a stream slot of identity, or fails with RESOURCE_EXHAUSTED
// (counted) when it has max open streams. release frees the slot.
func (w *watchSlots) acquire(identity string) (release func(), err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.open[identity] >= w.max {
		return nil, w.limits.Refuse(grpcserver.LimitWatchStream, fmt.Sprintf("too many revocation streams for this credential (at most %d); close one first", w.max))
	}
	w.open[identity]++
	return func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.open[identity]--; w.open[identity] == 0 {
			delete(w.open, identity)
		}
	}, nil
}

// watchIdentity names the credential of a caller, without the credential:
// its kind, and the token id for a PAT.
func watchIdentity(c *manage.Caller) string {
	if c.Kind == manage.PAT {
		return "token:" + c.Token.ID
	}
	return fmt.Sprintf("kind:%d", int(c.Kind))
}

var errShutdown = status.Error(codes.Unavailable, "authority is shutting down; reconnect and resume")

// send sends one message, giving up after the send timeout.
func (w *watch) send(m *sigilv1.WatchRevocationsResponse) error {
	w.batch = append(w.batch[:0], m)
	return w.sendBatch(w.batch)
}

// sendBatch sends the messages in order, giving up when one of them is not
// sent within the send timeout (counted from the previous one's end, or
// the hand-over for the first). The batch must not change until it
// returns; once it returned nil it may be reused.
func (w *watch) sendBatch(batch []any) error {
	if len(batch) == 0 {
		return nil
	}
	handed := int64(time.Since(w.began))
	select {
	case w.in <- batch:
	case <-w.s.shutdown:
		return errShutdown
	case <-w.ctx.Done():
		return w.ctx.Err()
	}
	w.timer.Reset(w.s.sendTimeout)
	for {
		select {
		case err := <-w.out:
			w.timer.Stop()
			return err
		case <-w.timer.C:
			// A later message of the batch still has time: the timeout
			// counts from when the message before it was sent.
			if left := time.Duration(max(handed, w.progress.Load())) + w.s.sendTimeout - time.Since(w.began); left > 0 {
				w.timer.Reset(left)
				continue
			}
			// grpc-go keeps a stream's queued messages, and the trailers behind
			// them, until the peer reads them: closing the connection releases
			// them, and its goroutines, now. The client reconnects and resumes.
			closed := grpcserver.CloseConnection(w.ctx)
			w.s.logger.Warn("revocation stream cut off: consumer too slow", "send_timeout", w.s.sendTimeout.String(), "connection_closed", closed)
			return status.Errorf(codes.ResourceExhausted, "revocation stream consumer too slow: a message waited more than %s; reconnect and resume", w.s.sendTimeout)
		case <-w.s.shutdown:
			return errShutdown
		case <-w.ctx.Done():
			return w.ctx.Err()
		}
	}
}

func (w *watch) run(req *sigilv1.WatchRevocationsRequest) error {
	resume, err := canResume(w.ctx, w.s.store, req)
	if err != nil {
		return err
	}
	if err := w.send(w.s.catalogMsg); err != nil {
		return err
	}
	last := req.GetAfterRevision()
	if resume {
		w.digest, w.digestRev = bytes.Clone(req.GetAfterDigest()), last
		w.vouched = last
	} else {
		var err error
		if last, err = w.snapshot(); err != nil {
			return err
		}
	}
	return w.live(last)
}

// snapshot sends the chunks, the end marker and a checkpoint, and returns
// the snapshot's revision. The chunks are read from the store as they are
// sent (or shared from a recent small snapshot): a stream holds one chunk
// at a time, not the whole snapshot.
func (w *watch) snapshot() (uint64, error) {
	rev, digest, err := w.s.snapshots.stream(w.ctx, w.s.store, w.s.now().Add(-manage.ExpiryMargin), w.send)
	if err != nil {
		return 0, err
	}
	w.safe = rev
	w.digest, w.digestRev = digest, rev
	return rev, w.checkpoint()
}

// canResume reports whether a stream may resume after the request's
// revision rather than start with a snapshot: only when the follower's
// state is a prefix of the store's history, as far as the epoch, the
// revision and its digest tell. Anything else (no revision, another epoch,
// no or a wrong digest, a revision compacted away or ahead of the store)
// gets a snapshot: in doubt, resend everything.
func canResume(ctx context.Context, st store.Store, req *sigilv1.WatchRevocationsRequest) (bool, error) {
	after := req.GetAfterRevision()
	if after == 0 || req.GetEpoch() != st.Epoch() || len(req.GetAfterDigest()) != store.DigestSize {
		return false, nil
	}
	d, err := st.DigestAt(ctx, after)
	if errors.Is(err, store.ErrCompacted) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return bytes.Equal(d, req.GetAfterDigest()), nil
}

// digestAt returns the history digest at rev: the stream's own when it
// has it, else the store's.
func (w *watch) digestAt(rev uint64) ([]byte, error) {
	if w.digestRev == rev && w.digest != nil {
		return w.digest, nil
	}
	d, err := w.s.store.DigestAt(w.ctx, rev)
	if errors.Is(err, store.ErrCompacted) {
		return nil, status.Error(codes.ResourceExhausted, "revocation stream fell behind compaction; reconnect to get a snapshot")
	}
	if err != nil {
		return nil, err
	}
	w.digest, w.digestRev = d, rev
	return d, nil
}

// checkpoint sends a checkpoint at w.safe.
func (w *watch) checkpoint() error {
	w.batch = w.batch[:0]
	return w.flush(true)
}

// flush appends a checkpoint at w.safe to the batch when cp is set, and
// sends the batch; once a checkpoint is sent, DrainStreams counts it.
func (w *watch) flush(cp bool) error {
	if cp {
		m, err := w.checkpointMsg()
		if err != nil {
			return err
		}
		w.lastCheckpoint = w.safe
		w.vouched = w.safe
		w.batch = append(w.batch, m)
	}
	if err := w.sendBatch(w.batch); err != nil {
		return err
	}
	w.batch = w.batch[:0]
	if cp {
		w.sent.Store(w.lastCheckpoint)
	}
	return nil
}

// live streams events after last until the stream ends.
func (w *watch) live(last uint64) error {
	st := w.s.store
	ticker := time.NewTicker(w.s.checkpointEvery)
	defer ticker.Stop()
	for {
		// Take the channel and the revision before reading, so that a commit
		// racing with the read is either in it or wakes the next round.
		changed := st.Changed()
		rev := st.Revision()
		w.batch = w.batch[:0]
		for {
			// Streams at the same position share the read (fanout).
			evs, err := w.s.fan.eventsAfter(w.ctx, st, last, rev)
			if errors.Is(err, store.ErrCompacted) {
				return status.Error(codes.ResourceExhausted, "revocation stream fell behind compaction; reconnect to get a snapshot")
			}
			if err != nil {
				return err
			}
			for _, ev := range evs {
				m, err := w.eventMsg(ev, w.vouched)
				if err != nil {
					return err
				}
				if m != nil {
					w.batch = append(w.batch, m)
					w.vouched = ev.Revision
				}
				last = ev.Revision
			}
			if len(evs) < store.DefaultEventLimit {
				break
			}
			// A full page: send it before reading the next.
			if err := w.flush(false); err != nil {
				return err
			}
		}
		// The round's last events go with the checkpoint after them.
		w.safe = max(rev, last)
		if err := w.flush(w.safe > w.lastCheckpoint); err != nil {
			return err
		}
		select {
		case <-changed:
		case <-ticker.C:
			if err := w.checkpoint(); err != nil {
				return err
			}
		case <-w.s.shutdown:
			return errShutdown
		case <-w.ctx.Done():
			return w.ctx.Err()
		}
	}
}

// catalogMessage is the stream message carrying catalog. It is built once
// and never changed: every stream sends the same message.
func catalogMessage(c *scope.Catalog) *sigilv1.WatchRevocationsResponse {
	ps := c.Permissions()
	pc := &sigilv1.PermissionCatalog{Permissions: make([]*sigilv1.Permission, len(ps))}
	for i, p := range ps {
		pc.Permissions[i] = &sigilv1.Permission{Name: p.Name, Product: p.Product, Description: p.Description, Implies: p.Implies}
	}
	return &sigilv1.WatchRevocationsResponse{Event: &sigilv1.WatchRevocationsResponse_Catalog{Catalog: pc}}
}

// eventToProto returns the stream message of an event, or nil for events
// that are not streamed.
func eventToProto(ev store.Event) *sigilv1.WatchRevocationsResponse {
	switch ev.Kind {
	case store.EventTokenRevoked:
		return &sigilv1.WatchRevocationsResponse{Event: &sigilv1.WatchRevocationsResponse_TokenRevoked{
			TokenRevoked: &sigilv1.TokenRevoked{Revision: ev.Revision, TokenId: ev.TokenID, ExpiresAt: ts(ev.ExpiresAt)},
		}}
	case store.EventKeyAdded:
		if ev.Key == nil {
			return nil
		}
		return &sigilv1.WatchRevocationsResponse{Event: &sigilv1.WatchRevocationsResponse_KeyAdded{
			KeyAdded: &sigilv1.SigningKeyAdded{Revision: ev.Revision, Key: keyToProto(*ev.Key)},
		}}
	case store.EventKeyRevoked:
		return &sigilv1.WatchRevocationsResponse{Event: &sigilv1.WatchRevocationsResponse_KeyRevoked{
			KeyRevoked: &sigilv1.SigningKeyRevoked{Revision: ev.Revision, KeyId: ev.KeyID},
		}}
	}
	return nil
}

// RunCompaction compacts the event log at once and then every interval
// until ctx ends (manage.Manager.RunCompaction).
func (s *Server) RunCompaction(ctx context.Context, interval time.Duration) {
	s.mgr.RunCompaction(ctx, interval)
}
