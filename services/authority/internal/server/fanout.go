package server

import (
	"cmp"
	"context"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// fanout shares across the revocation streams the work that is the same
// for all of them. A revocation wakes every stream; in a profile of 1,000
// streams each one then read the same events from the store, marshalled
// the same messages and read the same digest on its own. Streams at the
// same position now share one store read and one encoding of each message
// (grpc.PreparedMsg: the encoded bytes, which grpc-go never changes once
// made). What differs per stream keys the sharing: the position a read
// starts after, previous_revision, the codec. A stream never waits for
// another stream's consumer: only for another stream's store read or
// encoding, which do not depend on any peer.
type fanout struct {
	// reads shares EventsAfter by the revision it reads after; an entry's
	// tag is the store revision taken before its read: it holds every event
	// up to that revision (or a full page). At most maxSharedReads entries
	// (max set by newFanout): a page holds up to DefaultEventLimit events.
	reads sharedMap[uint64, []store.Event]
	// events shares the encoded live events, checkpoints the encoded
	// checkpoints (tag: when made, in ns of the server's clock).
	events      sharedMap[eventKey, *grpc.PreparedMsg]
	checkpoints sharedMap[checkpointKey, sharedCheckpoint]
}

// maxShared bounds the entries of a shared map: streams in step use a
// few per revision; past the bound the map starts over, which costs a
// store read or an encoding, never a wrong message.
const maxShared = 1024

// maxSharedReads bounds the shared store reads, each up to
// DefaultEventLimit events: 64 pages of a thousand small events are a few
// MB at most; streams in step need the last one or two.
const maxSharedReads = 64

// newFanout returns an empty fanout.
func newFanout() *fanout {
	return &fanout{reads: sharedMap[uint64, []store.Event]{max: maxSharedReads}}
}

// checkpointShareWindow is how long a checkpoint's encoding is shared: its
// authority_time is when it was made, and a follower measures its clock
// skew by it, so a shared one is at most this much older than its send
// (seconds of skew matter; the send queue alone delays it as much).
const checkpointShareWindow = 10 * time.Millisecond

// eventKey is what decides a live event's encoding: the event, the
// previous_revision of the stream, and the stream's codec and compressor.
type eventKey struct {
	rev, prev uint64
	wire      string
}

// checkpointKey is what decides a checkpoint's encoding apart from its
// time: the revision (which fixes its digest) and the wire format.
type checkpointKey struct {
	rev  uint64
	wire string
}

// sharedCheckpoint is an encoded checkpoint and its digest, which the
// stream keeps for its next checkpoint at the same revision.
type sharedCheckpoint struct {
	msg    *grpc.PreparedMsg
	digest []byte
}

// sharedMap runs a load once per key for every caller that asks while
// its result is fresh, and hands every caller the same result: callers
// must not change it.
type sharedMap[K comparable, V any] struct {
	max int // entries at most; maxShared when 0

	mu sync.Mutex
	m  map[K]*flight[V]
}

// flight is one load: done is closed once v and err are set.
type flight[V any] struct {
	tag  uint64
	done chan struct{}
	v    V
	err  error
}

// get returns the result of key's load. An entry is reused while fresh
// says its tag (set by newTag when the load starts) still serves this
// caller; otherwise load runs, and callers asking meanwhile wait for it.
// A failed load is not shared: a waiter runs its own (the failure may be
// the loader's: its stream ended), and the entry is dropped.
func (s *sharedMap[K, V]) get(ctx context.Context, key K, fresh func(tag uint64) bool, newTag func() uint64, load func() (V, error)) (V, error) {
	s.mu.Lock()
	f := s.m[key]
	if f == nil || !fresh(f.tag) {
		if s.m == nil || len(s.m) >= cmp.Or(s.max, maxShared) {
			s.m = make(map[K]*flight[V])
		}
		f = &flight[V]{tag: newTag(), done: make(chan struct{})}
		s.m[key] = f
		s.mu.Unlock()
		f.v, f.err = load()
		close(f.done)
		if f.err != nil {
			s.drop(key, f)
		}
		return f.v, f.err
	}
	s.mu.Unlock()
	select {
	case <-f.done:
	case <-ctx.Done():
		var zero V
		return zero, ctx.Err()
	}
	if f.err != nil {
		return load()
	}
	return f.v, nil
}

// drop removes key's entry if it is still f.
func (s *sharedMap[K, V]) drop(key K, f *flight[V]) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m[key] == f {
		delete(s.m, key)
	}
}

// eventsAfter is st.EventsAfter(after, DefaultEventLimit) for a stream that
// took the store's revision rev before calling: it is shared with every
// stream reading after the same revision whose rev the shared read covers
// (it took the store's revision, at least rev, before reading).
func (f *fanout) eventsAfter(ctx context.Context, st store.Store, after, rev uint64) ([]store.Event, error) {
	return f.reads.get(ctx, after,
		func(tag uint64) bool { return tag >= rev },
		st.Revision,
		func() ([]store.Event, error) { return st.EventsAfter(ctx, after, store.DefaultEventLimit) })
}

// wireFormat names the codec and compressor grpc-go encodes a stream's
// messages with, which a shared encoding must match; ok is false when the
// stream does not say (no grpc-go transport stream: do not share).
func wireFormat(ctx context.Context) (string, bool) {
	ts, ok := grpc.ServerTransportStreamFromContext(ctx).(interface {
		ContentSubtype() string
		SendCompress() string
	})
	if !ok {
		return "", false
	}
	return ts.ContentSubtype() + "/" + ts.SendCompress(), true
}

// encode returns m encoded for stream, to send as is by SendMsg.
func encode(stream grpc.ServerStream, m *sigilv1.WatchRevocationsResponse) (*grpc.PreparedMsg, error) {
	pm := &grpc.PreparedMsg{}
	if err := pm.Encode(stream, m); err != nil {
		return nil, err
	}
	return pm, nil
}

// eventMsg returns the message of ev with previous_revision prev, shared
// when the stream's wire format allows, or nil for an event that is not
// streamed.
func (w *watch) eventMsg(ev store.Event, prev uint64) (any, error) {
	if !streamed(ev) {
		return nil, nil
	}
	build := func() *sigilv1.WatchRevocationsResponse {
		m := eventToProto(ev)
		m.PreviousRevision = &prev
		return m
	}
	if !w.share {
		return build(), nil
	}
	// The message is built only by the stream that encodes it.
	return w.s.fan.events.get(w.ctx, eventKey{rev: ev.Revision, prev: prev, wire: w.wire},
		func(uint64) bool { return true },
		func() uint64 { return 0 },
		func() (*grpc.PreparedMsg, error) { return encode(w.stream, build()) })
}

// streamed reports whether ev has a stream message (eventToProto is not
// nil).
func streamed(ev store.Event) bool {
	switch ev.Kind {
	case store.EventTokenRevoked, store.EventKeyRevoked:
		return true
	case store.EventKeyAdded:
		return ev.Key != nil
	}
	return false
}

// checkpointMsg returns the checkpoint at w.safe, shared when the stream's
// wire format allows and one made within checkpointShareWindow exists,
// and keeps its digest.
func (w *watch) checkpointMsg() (any, error) {
	rev := w.safe
	if !w.share {
		d, err := w.digestAt(rev)
		if err != nil {
			return nil, err
		}
		return checkpointProto(rev, w.s.now(), d), nil
	}
	now := w.s.now()
	cp, err := w.s.fan.checkpoints.get(w.ctx, checkpointKey{rev: rev, wire: w.wire},
		func(made uint64) bool {
			age := now.Sub(time.Unix(0, int64(made)))
			return age > -checkpointShareWindow && age < checkpointShareWindow
		},
		func() uint64 { return uint64(now.UnixNano()) },
		func() (sharedCheckpoint, error) {
			d, err := w.digestAt(rev)
			if err != nil {
				return sharedCheckpoint{}, err
			}
			pm, err := encode(w.stream, checkpointProto(rev, now, d))
			return sharedCheckpoint{msg: pm, digest: d}, err
		})
	if err != nil {
		return nil, err
	}
	w.digest, w.digestRev = cp.digest, rev
	return cp.msg, nil
}

// checkpointProto is the checkpoint at rev with its digest, made at now.
func checkpointProto(rev uint64, now time.Time, digest []byte) *sigilv1.WatchRevocationsResponse {
	return &sigilv1.WatchRevocationsResponse{Event: &sigilv1.WatchRevocationsResponse_Checkpoint{
		Checkpoint: &sigilv1.Checkpoint{Revision: rev, AuthorityTime: timestamppb.New(now), Digest: digest},
	}}
}
