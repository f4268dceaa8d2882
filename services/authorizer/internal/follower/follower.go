// Package follower follows the authority's revocation stream and holds, in
// memory only, what an authorizer needs to decide: the epoch, the applied
// revision, the verification keys and the revoked tokens.
package follower

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sigil-auth/sigil/pkg/backoff"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/pkg/token"
)

// errProtocol marks a stream that broke the protocol; the follower drops it
// and reconnects.
var errProtocol = errors.New("follower: protocol violation")

// Replica is one replica of the authority: several serve one store
// (etcd), with one history and global revisions, so a stream broken on one
// resumes on another from the applied revision, without a snapshot.
type Replica struct {
	// Addr names the replica in logs and failover events (the --authority
	// element).
	Addr string
	// Client is the replica's client.
	Client sigilv1.TokenAuthorityServiceClient
	// Balanced says that Client balances over several replicas itself
	// (a dns:/// target): a stream that broke after delivering is reopened
	// at once, on whichever replica the client picks.
	Balanced bool
}

// FailoverMessage is the "msg" of the log record of a failover, whose
// fields are replica, previous_replica, after_revision, outage (a Go
// duration) and outage_seconds.
const FailoverMessage = "revocation stream resumed on another authority replica"

// Failover is a stream resumed on another replica than the one the
// previous stream was on, reported when the new stream delivers its first
// message.
type Failover struct {
	// From and To are the replicas (Replica.Addr, or the peer's address
	// when the client balances over several, as a dns:/// target does).
	From, To string
	// Revision is the revision the stream resumed from (after_revision;
	// 0 for a snapshot request).
	Revision uint64
	// Broken and Resumed are when the previous stream broke and when the
	// new one delivered its first message (time.Now: wall clock with its
	// monotonic reading, comparable with the caller's own time.Now).
	Broken, Resumed time.Time
	// Outage is Resumed minus Broken on the monotonic clock.
	Outage time.Duration
}

// Options configures a Follower.
type Options struct {
	// Client is the authority's client, when there is one replica (or one
	// client balancing over several). Client or Replicas is required.
	Client sigilv1.TokenAuthorityServiceClient
	// Replicas, when set, are the authority's replicas, in the order they
	// are tried; Client is then ignored. A stream that breaks resumes on
	// the next replica at once; only when every replica failed in a row
	// does the follower wait (the capped backoff). Probes go to the
	// stream's replica first, then to the others.
	Replicas []Replica
	// OnFailover, when set, is called from Run's goroutine at every
	// failover (it must not block): the measurement hook of failover time.
	OnFailover func(Failover)
	// Credential returns the watch credential sent as a bearer token on
	// every connection; it is called before each (re)connection so that a
	// rotated credential file is picked up. Nil means anonymous.
	Credential func() (string, error)
	// Logger receives stream life-cycle lines. Nil discards them.
	Logger *slog.Logger
	// Now returns the wall-clock time; time.Now when nil. It is used only
	// against times that come from elsewhere (token expiries, the
	// authority's checkpoint time), never to measure an interval here.
	Now func() time.Time
	// Elapsed returns monotonic time since an arbitrary fixed origin; it
	// measures staleness and the skew warning's rate, so that a wall-clock
	// step (NTP, an operator) can neither make a stale follower fresh nor a
	// fresh one stale. Nil: the monotonic reading of time.Now since New.
	Elapsed func() time.Duration
	// MaxStaleness is how long the follower counts as fresh after sending
	// a probe (ConfirmHistory, or the request opening a stream) that the
	// authority answered, once it has applied the revision the answer
	// carried. Required.
	MaxStaleness time.Duration
	// ProbeInterval is how often the follower asks the authority
	// ConfirmHistory; min(1s, MaxStaleness/4) when zero. A check with
	// min_revision asks at once (coalesced with other checks).
	ProbeInterval time.Duration
	// Retention is how long a revoked token is kept after its expiry: at
	// least the verifier's clock leeway, so that a token accepted within
	// the leeway after its expiry is still known as revoked.
	Retention time.Duration
	// IdleTimeout drops a stream that has been silent this long; 5s when
	// zero. The authority sends a checkpoint at its checkpoint interval (1s
	// by default), so it must exceed that interval.
	IdleTimeout time.Duration
	// SkewWarning, when positive, logs a warning (at most once a minute)
	// when the authority's clock, as carried by checkpoints, differs from
	// ours by more than this: tokens are timed by the authority's clock and
	// checked by ours. Set it to the clock leeway.
	SkewWarning time.Duration
	// MaxClockSkew, when positive, makes the follower not ready while the
	// authority's clock, as carried by its latest checkpoint, differs from
	// ours by more than this, and before the first checkpoint has told the
	// skew. A revocation leaves the authority's snapshots a fixed margin
	// after the token's expiry by the authority's clock; an authorizer whose
	// clock is far behind would still take the token for unexpired, and
	// allow it, after a reconnection brought a snapshot without it.
	MaxClockSkew time.Duration
	// BackoffBase and BackoffMax shape the jittered exponential reconnect
	// delay; 100ms and 2s when zero.
	BackoffBase, BackoffMax time.Duration
	// AuthorityIsSelf says that the authority's address is this
	// authorizer's own listen address; it only shapes the error logged when
	// the server there does not serve the authority's API.
	AuthorityIsSelf bool
	// OnCatalog, when set, is called from Run's goroutine with the
	// authority's permission catalog when the first one arrives and
	// whenever its permission names change (it must not block).
	OnCatalog func(*scope.Catalog)
}

// Stats are counters of the follower's life, for metrics.
type Stats struct {
	Reconnects  uint64 // streams (re)opened after the first
	Snapshots   uint64 // complete snapshots applied
	Events      uint64 // live events applied
	Duplicates  uint64 // events at or below the applied revision, ignored
	Malformed   uint64 // messages or entries rejected as malformed
	Checkpoints uint64 // checkpoints received
	Probes      uint64 // ConfirmHistory probes sent
	Diverged    uint64 // probes answered "not in history": the state was of another history
	Gaps        uint64 // live events whose previous_revision was not the applied revision
	// WrongServer counts stream attempts answered UNIMPLEMENTED: the server
	// at the authority's address does not serve sigil.v1.TokenAuthorityService
	// (another gRPC server, or this authorizer itself).
	WrongServer uint64
	// Failovers counts streams that resumed on another replica than the
	// previous stream's.
	Failovers uint64
}

type keyEntry struct {
	pub     ed25519.PublicKey
	revoked bool
	// cut, when set, revokes the tokens the key signed with an issue time
	// at or after it (RevokeSigningKey with issued_after).
	cut time.Time
}

// state is the follower's view of the authority. The maps are replaced
// whole at a snapshot and changed in place by live events, always under mu.
type state struct {
	epoch   string
	applied uint64
	synced  bool
	// digest is the authority's history digest at digestRev, the last
	// revision a snapshot end or a checkpoint vouched for; a reconnection
	// resumes from there (sending it back), so the authority resumes only
	// the very history this state was built from.
	digest    []byte
	digestRev uint64
	keys      map[string]keyEntry
	// token id -> expiry in Unix seconds, rounded up: an int64 rather
	// than a time.Time (24 bytes) takes the set from 100 to 56 bytes per
	// revoked token (BENCHMARKS.md, scale).
	revoked map[token.ID]int64

	// gen counts replacements of the state (snapshots) and divergences: a
	// probe answer is about the state of the generation it was sent in.
	gen uint64
	// confirmedAt (Elapsed) is the send time of the latest probe answered
	// "in history" with a revision this state has a digest at or above:
	// every revocation acknowledged before it is applied. confirmed says
	// whether there is one for this generation.
	confirmedAt time.Duration
	confirmed   bool
	// answers are probe answers waiting for digestRev to reach their
	// revision, oldest first, at most maxAnswers.
	answers []answer
}

// answer is a probe answered "in history": sent at (Elapsed), the
// authority's revision rev, about generation gen.
type answer struct {
	sent time.Duration
	rev  uint64
	gen  uint64
}

// maxAnswers bounds the answers waiting for their revision; older ones are
// dropped (a later one confirms a later time anyway).
const maxAnswers = 8

// pending is a snapshot being received, built aside from the live state.
type pending struct {
	epoch    string
	revision uint64
	keys     map[string]keyEntry
	revoked  map[token.ID]int64 // as state.revoked
	hint     int                // the size revoked was made for
}

// newPending starts receiving a snapshot. Its revoked set is made for as
// many tokens as the current one holds: a new snapshot of an authority
// (after a restart, a compaction, a restored file) is usually about as
// large as the last, and a map made for its size takes a million tokens
// without growing step by step (each step moves the entries again:
// about a quarter of the insertion time, BENCHMARKS.md, scale).
func (f *Follower) newPending(epoch string, revision uint64) *pending {
	hint := f.RevokedCount()
	return &pending{epoch: epoch, revision: revision, keys: map[string]keyEntry{}, revoked: make(map[token.ID]int64, hint), hint: hint}
}

// fitted returns revoked, or a copy of it made for its size when it holds
// less than half of the hint it was made for: a map never shrinks, so a
// snapshot much smaller than the last one would otherwise keep the last
// one's memory for as long as it is the state.
func fitted(revoked map[token.ID]int64, hint int) map[token.ID]int64 {
	if len(revoked) >= hint/2 {
		return revoked
	}
	m := make(map[token.ID]int64, len(revoked))
	for id, exp := range revoked {
		m[id] = exp
	}
	return m
}

// Follower follows WatchRevocations. It is safe for concurrent use: one
// goroutine runs Run, any number read the state.
type Follower struct {
	opts   Options
	logger *slog.Logger
	now    func() time.Time

	mu       sync.RWMutex
	st       state
	advanced chan struct{} // closed and replaced whenever applied or confirmedAt grows

	probeNow chan struct{} // asks the probe loop for a probe at once (buffer 1: coalesced)

	streamMu     sync.Mutex
	streamCancel context.CancelFunc // ends the current stream; nil between streams
	urgent       atomic.Bool        // reconnect without backoff (the state is of another history)
	legacyWarned atomic.Bool        // the authority has no ConfirmHistory; warned once

	lastPrune    time.Duration // Elapsed() at the last prune; touched only by the Run goroutine
	pruned       bool          // a prune ran; touched only by the Run goroutine
	lastSkewWarn time.Duration // Elapsed() at the last skew warning; touched only by the Run goroutine
	skewWarned   bool          // a skew warning was logged; touched only by the Run goroutine
	skew         atomic.Int64  // our clock minus the authority's, in nanoseconds, at the last checkpoint
	skewKnown    atomic.Bool
	skewBad      atomic.Bool // |skew| > MaxClockSkew at the last checkpoint
	wrongServer  []bool      // per replica: its last stream attempt was UNIMPLEMENTED; touched only by the Run goroutine
	// opening says the current stream's request is not answered yet, and
	// openSent is when it was sent (Elapsed); touched only by the Run
	// goroutine (under mu when answered).
	opening  bool
	openSent time.Duration

	replicas []Replica
	cur      atomic.Int32 // index of the replica the stream is on (or goes to next)
	// moveTo, when not -1, is the replica the next stream goes to: one
	// that answered a probe the stream's replica did not.
	moveTo atomic.Int32
	// lastPeer is where the last stream that delivered anything was, and
	// brokenAt/brokenWall when it broke; touched only by the Run goroutine.
	lastPeer   string
	brokenAt   time.Duration
	brokenWall time.Time

	reconnects, snapshots, events, duplicates, malformed, checkpoints, probes, diverged, gaps, wrongServers, failovers atomic.Uint64

	catalog atomic.Pointer[scope.Catalog] // the latest streamed catalog; nil before the first
}

// New returns a follower; call Run to start following.
func New(opts Options) *Follower {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Elapsed == nil {
		// time.Since uses the monotonic reading both times carry; a time
		// stored as UnixNano, or read through an injected clock, loses it.
		origin := time.Now()
		opts.Elapsed = func() time.Duration { return time.Since(origin) }
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 5 * time.Second
	}
	if opts.BackoffBase <= 0 {
		opts.BackoffBase = 100 * time.Millisecond
	}
	if opts.BackoffMax <= 0 {
		opts.BackoffMax = 2 * time.Second
	}
	if opts.ProbeInterval <= 0 {
		opts.ProbeInterval = min(time.Second, opts.MaxStaleness/4)
		if opts.ProbeInterval <= 0 {
			opts.ProbeInterval = time.Second
		}
	}
	replicas := opts.Replicas
	if len(replicas) == 0 {
		replicas = []Replica{{Client: opts.Client}}
	}
	f := &Follower{
		replicas:    replicas,
		wrongServer: make([]bool, len(replicas)),
		opts:        opts,
		logger:      opts.Logger,
		now:         opts.Now,
		advanced:    make(chan struct{}),
		probeNow:    make(chan struct{}, 1),
		st: state{
			keys:    map[string]keyEntry{},
			revoked: map[token.ID]int64{},
		},
	}
	f.moveTo.Store(-1)
	return f
}

// Run follows the stream until ctx is done, reconnecting with jittered
// exponential backoff and resuming from the applied revision, and probes
// the authority's history (ConfirmHistory) beside it. It returns ctx's
// error.
func (f *Follower) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Go(func() { f.probeLoop(ctx) })
	attempt := 0
	failed := 0 // streams in a row that delivered nothing
	n := len(f.replicas)
	for first := true; ; first = false {
		if !first {
			f.reconnects.Add(1)
		}
		r := int(f.cur.Load())
		received, err := f.follow(ctx, r)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		f.brokenAt, f.brokenWall = f.opts.Elapsed(), time.Now()
		if received {
			attempt, failed = 0, 0
			f.wrongServer[r] = false
		} else {
			failed++
		}
		delay := f.backoff(attempt)
		if n > 1 {
			// Another replica serves the same history: resume there at
			// once, unless every replica failed in a row (then the capped
			// backoff paces the rounds) or this one broke the protocol
			// (a short pause, as with one replica, so that a replica
			// that keeps failing that way cannot make a tight loop).
			f.cur.Store(int32((r + 1) % n))
			if failed < n && !errors.Is(err, errProtocol) {
				delay = 0
			} else if failed >= n {
				attempt++
			}
		} else {
			attempt++
			if f.replicas[r].Balanced && received && !errors.Is(err, errProtocol) {
				delay = 0
			}
		}
		if to := f.moveTo.Swap(-1); to >= 0 && n > 1 {
			// A probe found this replica silent and another answering.
			f.cur.Store(to)
			delay = 0
		}
		if f.urgent.Swap(false) {
			// A probe found the state of another history: every moment
			// on it is a moment of not being fresh.
			delay = 0
		}
		addr := f.replicas[r].Addr
		if status.Code(err) == codes.Unimplemented {
			// Not an authority: one ERROR line when it starts, then quiet
			// retries at the capped backoff (it may be replaced by one).
			f.wrongServers.Add(1)
			if !f.wrongServer[r] {
				f.wrongServer[r] = true
				msg := "the server at --authority does not serve sigil.v1.TokenAuthorityService: it is not a Sigil authority; not serving until it is"
				if n > 1 {
					msg = "a server of --authority does not serve sigil.v1.TokenAuthorityService: it is not a Sigil authority; the other replicas are tried"
				}
				if f.opts.AuthorityIsSelf {
					msg = "--authority is this authorizer's own listen address: it does not serve sigil.v1.TokenAuthorityService; not serving until --authority names the authority"
				}
				f.logger.Error(msg, "error", err, "replica", addr)
			}
			f.logger.Debug("revocation stream refused, retrying", "retry_in", delay, "replica", addr)
		} else {
			f.logger.Warn("revocation stream broken, reconnecting", "error", err, "retry_in", delay, "replica", addr,
				"next_replica", f.replicas[f.cur.Load()].Addr)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// backoff is an "equal jitter" exponential delay: half fixed, half random,
// capped at BackoffMax.
func (f *Follower) backoff(attempt int) time.Duration {
	return backoff.EqualJitter(f.opts.BackoffBase, f.opts.BackoffMax, attempt)
}

// follow runs one stream until it fails. received reports whether any
// message arrived (a healthy connection resets the backoff).
func (f *Follower) follow(parent context.Context, r int) (received bool, err error) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	f.streamMu.Lock()
	f.streamCancel = cancel
	f.streamMu.Unlock()
	defer func() {
		f.streamMu.Lock()
		f.streamCancel = nil
		f.streamMu.Unlock()
	}()
	if f.opts.Credential != nil {
		cred, err := f.opts.Credential()
		if err != nil {
			return false, fmt.Errorf("follower: watch credential: %w", err)
		}
		if cred != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+cred)
		}
	}
	req := f.resumeRequest()

	// A stream that stays silent longer than the idle timeout is dropped:
	// the authority sends a checkpoint at every checkpoint interval (1s by
	// default), so silence means trouble.
	idle := time.AfterFunc(f.opts.IdleTimeout, cancel)
	defer idle.Stop()

	// The request is a probe of its own: the authority answers it with a
	// snapshot at its current revision or with every event after the
	// resumed one and then a checkpoint at (at least) its current
	// revision, so the first snapshot end or checkpoint confirms every
	// revocation acknowledged before now.
	f.openSent, f.opening = f.opts.Elapsed(), true
	// WaitForReady, with one replica: while the authority is unreachable
	// the call waits for the connection (whose own backoff is capped at
	// ours) instead of failing at once; the idle timer bounds the wait. So
	// a stream opens as soon as the authority is back, not a backoff
	// later. With several, a replica that cannot be reached fails at once
	// and the next one is tried.
	rep := f.replicas[r]
	stream, err := rep.Client.WatchRevocations(ctx, req, grpc.WaitForReady(len(f.replicas) == 1))
	if err != nil {
		return false, err
	}
	where := rep.Addr
	if p, ok := peer.FromContext(stream.Context()); ok && p.Addr != nil && (where == "" || len(f.replicas) == 1) {
		// The peer says which replica a balancing client (dns:///)
		// reached; a listed replica is named as it was given.
		where = p.Addr.String()
	}
	f.logger.Info("revocation stream opened", "after_revision", req.AfterRevision, "epoch", req.Epoch, "replica", where)
	var snap *pending
	for {
		msg, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("follower: stream ended by the authority")
			}
			return received, err
		}
		if !received {
			f.resumed(where, req.GetAfterRevision())
		}
		received = true
		idle.Reset(f.opts.IdleTimeout)
		// Arrival does not make the state fresh (a link that delays every
		// byte would keep it "fresh" while revocations arrive late): only
		// answered probes do. The stream's request is one, answered by its
		// first snapshot end or checkpoint (handle records it, with the
		// state it confirms, under one lock).
		if snap, err = f.handle(snap, msg); err != nil {
			return received, err
		}
	}
}

// openAnsweredLocked records the stream's own request as a probe answered
// at rev, at the stream's first snapshot end or checkpoint; f.mu is held
// for writing. Recorded with the state change, a waiter woken by it sees
// the confirmation too.
func (f *Follower) openAnsweredLocked(rev uint64) {
	if !f.opening {
		return
	}
	f.opening = false
	if len(f.st.answers) == maxAnswers {
		f.st.answers = f.st.answers[1:]
	}
	f.st.answers = append(f.st.answers, answer{sent: f.openSent, rev: rev, gen: f.st.gen})
	f.promoteLocked()
}

// resumed notes that a stream delivered its first message at where, having
// asked for the events after rev; a stream on another replica than the
// last one that delivered is a failover: logged, counted and reported.
func (f *Follower) resumed(where string, rev uint64) {
	prev := f.lastPeer
	f.lastPeer = where
	if prev == "" || prev == where {
		return
	}
	f.failovers.Add(1)
	outage := f.opts.Elapsed() - f.brokenAt
	// A fixed message, so that tools find the record; the fields say
	// where, from which revision and after how long.
	f.logger.Info(FailoverMessage,
		"replica", where, "previous_replica", prev, "after_revision", rev, "outage", outage.String(), "outage_seconds", outage.Seconds())
	if f.opts.OnFailover != nil {
		f.opts.OnFailover(Failover{From: prev, To: where, Revision: rev, Broken: f.brokenWall, Resumed: time.Now(), Outage: outage})
	}
}

// releaseAfterSnapshot is the number of revoked tokens (new and replaced
// sets together) from which a snapshot switch returns freed memory to the
// OS at once.
const releaseAfterSnapshot = 100_000

// handle applies one message. snap is the snapshot being received, if any;
// the returned value is the one to use for the next message.
func (f *Follower) handle(snap *pending, msg *sigilv1.WatchRevocationsResponse) (*pending, error) {
	switch ev := msg.GetEvent().(type) {
	case *sigilv1.WatchRevocationsResponse_Catalog:
		if snap != nil {
			return nil, fmt.Errorf("%w: permission catalog inside a snapshot", errProtocol)
		}
		return nil, f.applyCatalog(ev.Catalog)
	case *sigilv1.WatchRevocationsResponse_SnapshotChunk:
		c := ev.SnapshotChunk
		if snap == nil {
			snap = f.newPending(c.GetEpoch(), c.GetRevision())
		} else if c.GetEpoch() != snap.epoch || c.GetRevision() != snap.revision {
			return nil, fmt.Errorf("%w: snapshot chunk of epoch %q revision %d inside snapshot of epoch %q revision %d", errProtocol, c.GetEpoch(), c.GetRevision(), snap.epoch, snap.revision)
		}
		for _, k := range c.GetKeys() {
			f.applyKey(snap.keys, k)
		}
		for _, r := range c.GetRevokedTokens() {
			f.applyRevoked(snap.revoked, r)
		}
		return snap, nil

	case *sigilv1.WatchRevocationsResponse_SnapshotEnd:
		e := ev.SnapshotEnd
		if snap == nil {
			// A snapshot without chunks: no keys and no revoked tokens.
			snap = &pending{epoch: e.GetEpoch(), revision: e.GetRevision(), keys: map[string]keyEntry{}, revoked: map[token.ID]int64{}}
		}
		if e.GetEpoch() != snap.epoch || e.GetRevision() != snap.revision {
			return nil, fmt.Errorf("%w: snapshot end of epoch %q revision %d closes snapshot of epoch %q revision %d", errProtocol, e.GetEpoch(), e.GetRevision(), snap.epoch, snap.revision)
		}
		snap.revoked = fitted(snap.revoked, snap.hint)
		f.mu.Lock()
		old := f.st
		f.st = state{
			epoch: snap.epoch, applied: snap.revision, synced: true, keys: snap.keys, revoked: snap.revoked,
			digest: validDigest(e.GetDigest()), digestRev: snap.revision,
			// Confirmations were about the old state: this one waits for
			// its own (its stream's request, answered by this end).
			gen: old.gen + 1,
		}
		f.openAnsweredLocked(snap.revision)
		f.notifyLocked()
		f.mu.Unlock()
		f.snapshots.Add(1)
		if len(snap.revoked)+len(old.revoked) >= releaseAfterSnapshot {
			// Loading a large snapshot left about as much garbage as the
			// set it built (decoded chunks, and the old set): returned to
			// the OS now rather than by the runtime's scavenger over the
			// following minutes, so that a sidecar's resident memory is
			// the set's, not twice it. Off the stream's goroutine: the
			// state is already switched and answering.
			go debug.FreeOSMemory()
		}
		f.logger.Info("snapshot applied", "epoch", snap.epoch, "revision", snap.revision,
			"keys", len(snap.keys), "revoked_tokens", len(snap.revoked),
			"previous_epoch", old.epoch, "previous_revision", old.applied)
		return nil, nil
	}

	// Everything else is live: it needs a complete state to apply to.
	if snap != nil {
		return nil, fmt.Errorf("%w: live message inside a snapshot", errProtocol)
	}
	f.mu.RLock()
	synced := f.st.synced
	f.mu.RUnlock()
	if !synced {
		return nil, fmt.Errorf("%w: live message before the first snapshot", errProtocol)
	}

	switch ev := msg.GetEvent().(type) {
	case *sigilv1.WatchRevocationsResponse_Checkpoint:
		f.checkpoints.Add(1)
		// The skew is recorded before the revision is published, so that a
		// waiter woken by this checkpoint sees the skew it carried.
		f.noteSkew(ev.Checkpoint.GetAuthorityTime())
		// Pruned before the revision is published, so that a waiter woken
		// by this checkpoint sees the pruned set.
		f.prune()
		f.mu.Lock()
		r := ev.Checkpoint.GetRevision()
		if r >= f.st.applied {
			// Every event up to r has been applied: r's digest describes
			// this state. Without one (an older authority) the next
			// reconnection asks for a snapshot.
			f.st.digest, f.st.digestRev = validDigest(ev.Checkpoint.GetDigest()), r
			f.promoteLocked()
		}
		f.openAnsweredLocked(r)
		if r > f.st.applied {
			f.st.applied = r
		}
		// Even at the applied revision: the checkpoint may have made the
		// state ready (its clock reading, promoted answers), which a
		// watcher of Ready waits for.
		f.notifyLocked()
		f.mu.Unlock()
	case *sigilv1.WatchRevocationsResponse_TokenRevoked:
		return nil, f.applyLive(msg, ev.TokenRevoked.GetRevision(), func(s *state) { f.applyRevoked(s.revoked, ev.TokenRevoked) })
	case *sigilv1.WatchRevocationsResponse_KeyAdded:
		return nil, f.applyLive(msg, ev.KeyAdded.GetRevision(), func(s *state) { f.applyKey(s.keys, ev.KeyAdded.GetKey()) })
	case *sigilv1.WatchRevocationsResponse_KeyRevoked:
		return nil, f.applyLive(msg, ev.KeyRevoked.GetRevision(), func(s *state) {
			id := ev.KeyRevoked.GetKeyId()
			k, ok := s.keys[id]
			if !ok {
				// A revoked key we never knew: tokens it signed are unknown-key
				// denials anyway.
				f.logger.Warn("revocation of an unknown signing key", "key_id", safe(id))
				return
			}
			k.revoked = true
			s.keys[id] = k
		})
	default:
		// A newer authority may send events this follower does not know.
		// Skipping one is safe only because every known event is applied;
		// it is logged and counted so the operator upgrades.
		f.malformed.Add(1)
		f.logger.Warn("unknown message on the revocation stream, ignored")
	}
	return nil, nil
}

// applyLive applies one live event of revision rev with apply, unless it is
// a duplicate. Revisions of a stream have gaps (mints are not streamed), so
// contiguity is checked with previous_revision, the revision the stream
// vouched for before the event: unless it is the applied revision a
// message was lost (a revocation would be skipped for ever), and the
// stream is dropped so that the reconnection resends what followed the
// last digest. An authority that predates the field sends none: not
// checked.
func (f *Follower) applyLive(msg *sigilv1.WatchRevocationsResponse, rev uint64, apply func(*state)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if rev <= f.st.applied {
		f.duplicates.Add(1)
		return nil
	}
	if msg.PreviousRevision != nil && msg.GetPreviousRevision() != f.st.applied {
		f.gaps.Add(1)
		return fmt.Errorf("%w: live event %d follows revision %d, but %d is applied (a message was lost)", errProtocol, rev, msg.GetPreviousRevision(), f.st.applied)
	}
	apply(&f.st)
	f.st.applied = rev
	f.events.Add(1)
	f.notifyLocked()
	return nil
}

// notifyLocked wakes every WaitFor caller; f.mu is held for writing.
func (f *Follower) notifyLocked() {
	close(f.advanced)
	f.advanced = make(chan struct{})
}

// applyKey adds or updates a key in keys. A malformed key is logged and
// ignored, except that a revocation it carries for a known key is honoured:
// in doubt, fewer tokens verify, never more.
func (f *Follower) applyKey(keys map[string]keyEntry, k *sigilv1.SigningKey) {
	id := k.GetKeyId()
	if id == "" || len(id) > 128 {
		f.malformed.Add(1)
		f.logger.Warn("signing key without a valid id, ignored")
		return
	}
	if len(k.GetPublicKey()) != ed25519.PublicKeySize {
		f.malformed.Add(1)
		f.logger.Warn("signing key with a public key of the wrong length, ignored", "key_id", safe(id), "length", len(k.GetPublicKey()))
		if old, ok := keys[id]; ok && k.GetState() == sigilv1.SigningKeyState_SIGNING_KEY_STATE_REVOKED {
			old.revoked = true
			keys[id] = old
		}
		return
	}
	pub := make(ed25519.PublicKey, ed25519.PublicKeySize)
	copy(pub, k.GetPublicKey())
	var cut time.Time
	if c := k.GetRevokedIssuedAfter(); c != nil {
		if c.IsValid() {
			cut = c.AsTime()
		} else {
			// A cut we cannot read: void every token of the key rather than
			// guess which ones.
			f.malformed.Add(1)
			f.logger.Warn("signing key with a malformed cut, revoked", "key_id", safe(id))
			keys[id] = keyEntry{pub: pub, revoked: true}
			return
		}
	}
	switch k.GetState() {
	case sigilv1.SigningKeyState_SIGNING_KEY_STATE_PENDING,
		sigilv1.SigningKeyState_SIGNING_KEY_STATE_ACTIVE,
		sigilv1.SigningKeyState_SIGNING_KEY_STATE_VERIFY_ONLY:
		old, ok := keys[id]
		// Revocation is final and a cut only ever narrows: a later message
		// cannot bring a key or its tokens back.
		if ok && !old.cut.IsZero() && (cut.IsZero() || old.cut.Before(cut)) {
			cut = old.cut
		}
		keys[id] = keyEntry{pub: pub, revoked: ok && old.revoked, cut: cut}
	case sigilv1.SigningKeyState_SIGNING_KEY_STATE_REVOKED:
		keys[id] = keyEntry{pub: pub, revoked: true}
	default:
		// A state this follower does not understand: the key is not
		// trusted (tokens it signed are denied as unknown-key).
		f.malformed.Add(1)
		f.logger.Warn("signing key in an unknown state, not trusted", "key_id", safe(id), "state", int32(k.GetState()))
		delete(keys, id)
	}
}

// applyRevoked adds a revoked token to revoked. A token without an expiry
// is kept until the next snapshot replaces the state.
func (f *Follower) applyRevoked(revoked map[token.ID]int64, r *sigilv1.TokenRevoked) {
	id, err := token.ParseID(r.GetTokenId())
	if err != nil {
		// No token can carry an id that does not parse, so nothing it could
		// revoke would ever be allowed.
		f.malformed.Add(1)
		f.logger.Warn("revoked token with a malformed id, ignored")
		return
	}
	exp := farFuture
	if ts := r.GetExpiresAt(); ts != nil && ts.IsValid() {
		exp = ts.AsTime()
	}
	revoked[id] = expirySeconds(exp)
}

// expirySeconds is exp in Unix seconds, rounded up so that a revocation is
// never dropped before its token expires.
func expirySeconds(exp time.Time) int64 {
	sec := exp.Unix()
	if exp.Nanosecond() > 0 {
		sec++
	}
	return sec
}

var farFuture = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

// prune drops revoked tokens that expired more than Retention ago, at most
// once a minute.
func (f *Follower) prune() {
	// The rate is monotonic; the cutoff is compared with token expiries,
	// which are wall-clock times.
	at := f.opts.Elapsed()
	if f.pruned && at-f.lastPrune < time.Minute {
		return
	}
	f.lastPrune, f.pruned = at, true
	// exp ≥ the token's expiry, so exp < cutoff's whole seconds means it
	// expired before cutoff.
	cutoff := f.now().Add(-f.opts.Retention).Unix()
	f.mu.Lock()
	n := 0
	for id, exp := range f.st.revoked {
		if exp < cutoff {
			delete(f.st.revoked, id)
			n++
		}
	}
	f.mu.Unlock()
	if n > 0 {
		f.logger.Debug("expired revocations dropped", "count", n)
	}
}

// noteSkew records the difference between our clock and the authority's
// and warns when it exceeds SkewWarning.
func (f *Follower) noteSkew(ts *timestamppb.Timestamp) {
	if ts == nil || !ts.IsValid() {
		return
	}
	now := f.now()
	skew := now.Sub(ts.AsTime())
	f.skew.Store(int64(skew))
	if m := f.opts.MaxClockSkew; m > 0 {
		bad := skew > m || skew < -m
		if was := f.skewBad.Swap(bad); bad != was || !f.skewKnown.Load() {
			if bad {
				f.logger.Error("clock differs from the authority's by more than --max-clock-skew: not serving until it is within the bound (fix the clock: NTP)",
					"skew", skew.String(), "max_clock_skew", m.String())
			} else if was {
				f.logger.Info("clock back within --max-clock-skew of the authority's", "skew", skew.String(), "max_clock_skew", m.String())
			}
		}
	}
	f.skewKnown.Store(true)
	at := f.opts.Elapsed()
	if f.opts.SkewWarning > 0 && (skew > f.opts.SkewWarning || skew < -f.opts.SkewWarning) && (!f.skewWarned || at-f.lastSkewWarn >= time.Minute) {
		f.lastSkewWarn, f.skewWarned = at, true
		f.logger.Warn("clock differs from the authority's by more than the clock leeway: tokens may be denied as not yet valid or expired, or accepted late",
			"skew", skew.String(), "leeway", f.opts.SkewWarning.String())
	}
}

// ClockSkewExceeded reports whether the follower is not ready because of
// the clock: MaxClockSkew is set and the skew is unknown yet or beyond it.
func (f *Follower) ClockSkewExceeded() bool {
	if f.opts.MaxClockSkew <= 0 {
		return false
	}
	return !f.skewKnown.Load() || f.skewBad.Load()
}

// ClockSkew returns our clock minus the authority's at the last checkpoint,
// or false before the first checkpoint.
func (f *Follower) ClockSkew() (time.Duration, bool) {
	return time.Duration(f.skew.Load()), f.skewKnown.Load()
}

// safe bounds and cleans a string from the stream before it is logged.
func safe(s string) string {
	if len(s) > 64 {
		s = s[:64]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

// resumeRequest is the request of the next connection: a resume from the
// last revision with a known digest, or a snapshot request (after_revision
// 0) before the first snapshot. Events applied after that revision come
// again and are applied again (every event is idempotent): applied is set
// back to it, so that a min_revision wait is not satisfied by events of a
// history the authority may no longer have.
func (f *Follower) resumeRequest() *sigilv1.WatchRevocationsRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	req := &sigilv1.WatchRevocationsRequest{Epoch: f.st.epoch}
	if !f.st.synced {
		return req
	}
	req.AfterRevision = f.st.applied
	if f.st.digest != nil && f.st.digestRev <= f.st.applied {
		req.AfterRevision, req.AfterDigest = f.st.digestRev, f.st.digest
		f.st.applied = f.st.digestRev
	}
	return req
}

// validDigest returns d when it has a digest's size, else nil (no digest:
// the next resume is a snapshot).
func validDigest(d []byte) []byte {
	if len(d) != sha256.Size {
		return nil
	}
	return append([]byte(nil), d...)
}

// Digest returns the history digest the follower would resume with and its
// revision; nil before the first snapshot or when the authority sent none.
func (f *Follower) Digest() ([]byte, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return append([]byte(nil), f.st.digest...), f.st.digestRev
}

// InspectCut is Inspect with the key's cut (zero when none): tokens the key
// signed with an issue time at or after it are revoked.
func (f *Follower) InspectCut(keyID string, id token.ID) (pub ed25519.PublicKey, keyKnown, keyRevoked bool, keyCut time.Time, tokenRevoked bool, revision uint64) {
	f.mu.RLock()
	k, keyKnown := f.st.keys[keyID]
	_, tokenRevoked = f.st.revoked[id]
	revision = f.st.applied
	f.mu.RUnlock()
	return k.pub, keyKnown, k.revoked, k.cut, tokenRevoked, revision
}

// Lookup implements token.KeySet: keys of every known state are returned,
// revoked ones with revoked set.
func (f *Follower) Lookup(keyID string) (pub ed25519.PublicKey, revoked bool, ok bool) {
	f.mu.RLock()
	k, ok := f.st.keys[keyID]
	f.mu.RUnlock()
	return k.pub, k.revoked, ok
}

// Inspect reports, at one consistent point of the state, the key keyID
// (its public key, whether it is known and whether it is revoked), whether
// token id is revoked, and the applied revision.
func (f *Follower) Inspect(keyID string, id token.ID) (pub ed25519.PublicKey, keyKnown, keyRevoked, tokenRevoked bool, revision uint64) {
	f.mu.RLock()
	k, keyKnown := f.st.keys[keyID]
	_, tokenRevoked = f.st.revoked[id]
	revision = f.st.applied
	f.mu.RUnlock()
	return k.pub, keyKnown, k.revoked, tokenRevoked, revision
}

// Revision returns the applied revision.
func (f *Follower) Revision() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.applied
}

// Epoch returns the epoch of the authority store the state comes from.
func (f *Follower) Epoch() string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.epoch
}

// Synced reports whether a complete snapshot has been applied.
func (f *Follower) Synced() bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.synced
}

// Staleness returns the monotonic time since the send time of the latest
// confirmed probe (see Ready), or false when the state has none.
func (f *Follower) Staleness() (time.Duration, bool) {
	f.mu.RLock()
	at, ok := f.st.confirmedAt, f.st.confirmed
	f.mu.RUnlock()
	if !ok {
		return 0, false
	}
	return f.opts.Elapsed() - at, true
}

// Ready reports whether checks may be answered: synced, and fresh: a probe
// sent within MaxStaleness (by the monotonic clock) was answered "in
// history" with a revision this state has applied (with its digest). Then
// every revocation acknowledged before the probe was sent, so every one
// acknowledged more than MaxStaleness ago, is applied, however late the
// link delivers; arrival times prove nothing of the kind. With
// MaxClockSkew, the authority's clock must also be known to be within it.
func (f *Follower) Ready() bool {
	if f.ClockSkewExceeded() {
		return false
	}
	// One read lock on the check's hot path, not one per condition.
	f.mu.RLock()
	synced, confirmed, at := f.st.synced, f.st.confirmed, f.st.confirmedAt
	f.mu.RUnlock()
	return synced && confirmed && f.opts.Elapsed()-at <= f.opts.MaxStaleness
}

// WaitFor blocks until rev is applied and a probe sent after the call
// began has confirmed this state's history, or ctx is done (its error is
// returned then). It asks for a probe at once, shared with concurrent
// callers. It is the min_revision rule: a revision number alone does not
// say which history it belongs to (an authority restored from a backup
// reuses numbers with other events), the confirmation does.
func (f *Follower) WaitFor(ctx context.Context, rev uint64) error {
	began := f.opts.Elapsed()
	f.RequestProbe()
	for {
		f.mu.RLock()
		// Strictly after: a probe whose send time reads the same as the
		// call's beginning may have been sent before it.
		ok := f.st.applied >= rev && f.st.confirmed && f.st.confirmedAt > began
		ch := f.advanced
		f.mu.RUnlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// RequestProbe asks for a probe at once; requests made while one is in
// flight are served by the next one, together.
func (f *Follower) RequestProbe() {
	select {
	case f.probeNow <- struct{}{}:
	default:
	}
}

// WaitApplied blocks until the applied revision reaches rev or ctx is
// done, and returns ctx's error in the latter case. It proves nothing
// about the history (see WaitFor).
func (f *Follower) WaitApplied(ctx context.Context, rev uint64) error {
	for {
		f.mu.RLock()
		applied, ch := f.st.applied, f.advanced
		f.mu.RUnlock()
		if applied >= rev {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Changed returns a channel closed at the next change of the applied
// revision or of the confirmation, and at every checkpoint (which also
// tells the authority's clock): so that a watcher of Ready need not poll
// to see it turn true. Ready also turns false by time alone
// (staleness, clock skew), which no channel announces.
func (f *Follower) Changed() <-chan struct{} {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.advanced
}

// RevokedCount returns how many revoked tokens are held.
func (f *Follower) RevokedCount() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return len(f.st.revoked)
}

// Stats returns the follower's counters.
func (f *Follower) Stats() Stats {
	return Stats{
		Reconnects:  f.reconnects.Load(),
		Snapshots:   f.snapshots.Load(),
		Events:      f.events.Load(),
		Duplicates:  f.duplicates.Load(),
		Malformed:   f.malformed.Load(),
		Checkpoints: f.checkpoints.Load(),
		Probes:      f.probes.Load(),
		Diverged:    f.diverged.Load(),
		Gaps:        f.gaps.Load(),
		WrongServer: f.wrongServers.Load(),
		Failovers:   f.failovers.Load(),
	}
}

// probeLoop sends a probe every ProbeInterval and whenever one is
// requested, one at a time, until ctx ends.
func (f *Follower) probeLoop(ctx context.Context) {
	t := time.NewTicker(f.opts.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-f.probeNow:
		}
		f.probe(ctx)
	}
}

// probe asks the authority whether the state's digest point is in its
// history, and records the answer.
func (f *Follower) probe(ctx context.Context) {
	f.mu.RLock()
	synced, gen := f.st.synced, f.st.gen
	req := &sigilv1.ConfirmHistoryRequest{Epoch: f.st.epoch, Revision: f.st.digestRev, Digest: f.st.digest}
	f.mu.RUnlock()
	if !synced || req.Revision == 0 || req.Digest == nil {
		// Nothing to confirm (an authority without digests, or an empty
		// one): the stream's own request is the probe; a reconnection
		// makes one, once half the staleness bound is used up.
		if synced {
			f.restartIfAging()
		}
		return
	}
	pctx := ctx
	if f.opts.Credential != nil {
		cred, err := f.opts.Credential()
		if err != nil {
			f.logger.Warn("history probe not sent", "error", fmt.Errorf("follower: watch credential: %w", err))
			return
		}
		if cred != "" {
			pctx = metadata.AppendToOutgoingContext(pctx, "authorization", "Bearer "+cred)
		}
	}
	sent := f.opts.Elapsed()
	resp, err := f.confirm(pctx, req)
	switch {
	case status.Code(err) == codes.Unimplemented:
		// An authority older than ConfirmHistory: reopening the stream
		// (a resume, cheap) is the probe.
		if !f.legacyWarned.Swap(true) {
			f.logger.Warn("the authority does not answer ConfirmHistory: the revocation stream is reopened every half --max-staleness instead; upgrade the authority")
		}
		f.restartIfAging()
	case err != nil:
		if ctx.Err() == nil {
			f.logger.Debug("history probe failed", "error", err)
		}
	case !resp.GetInHistory():
		f.mu.Lock()
		if gen == f.st.gen {
			f.st.gen++
			f.st.confirmed, f.st.answers = false, nil
			f.notifyLocked()
		}
		f.mu.Unlock()
		f.diverged.Add(1)
		f.logger.Warn("the authority's history does not hold the applied state (a restored or replaced store): reconnecting",
			"epoch", req.Epoch, "revision", req.Revision, "authority_revision", resp.GetRevision())
		f.urgent.Store(true)
		f.restartStream()
	default:
		f.answered(sent, resp.GetRevision(), gen, true)
	}
}

// confirm sends the probe to the stream's replica, then, while the answer
// is an error, to the others in turn: every replica serves the one
// history, so any may answer (and any answer "in history" at revision R
// confirms the state only once the stream has brought it to R). The
// attempts share MaxStaleness, beyond which no answer could make anything
// fresh. The error returned is UNIMPLEMENTED only when every replica said
// so.
func (f *Follower) confirm(ctx context.Context, req *sigilv1.ConfirmHistoryRequest) (*sigilv1.ConfirmHistoryResponse, error) {
	n := len(f.replicas)
	first := int(f.cur.Load())
	// A replica that does not answer within a quarter of the bound leaves
	// time for the others; the last attempt gets what is left.
	per := f.opts.MaxStaleness
	if n > 1 {
		per = f.opts.MaxStaleness / 4
	}
	deadline := f.opts.Elapsed() + f.opts.MaxStaleness
	var errs []error
	var unimplemented []error
	for i := range n {
		j := (first + i) % n
		rep := f.replicas[j]
		left := deadline - f.opts.Elapsed()
		if left <= 0 {
			break
		}
		timeout := min(per, left)
		if i == n-1 {
			timeout = left
		}
		actx, cancel := context.WithTimeout(ctx, timeout)
		f.probes.Add(1)
		resp, err := rep.Client.ConfirmHistory(actx, req)
		cancel()
		if err == nil {
			if i > 0 && int(f.cur.Load()) == first {
				// The stream's replica did not answer and this one did:
				// the stream is likely as stuck as the probe was. It
				// moves here now rather than at its idle timeout.
				f.logger.Warn("the stream's authority replica did not answer a history probe and another did: moving the stream",
					"replica", f.replicas[first].Addr, "next_replica", rep.Addr, "error", errs[len(errs)-1])
				f.moveTo.Store(int32(j))
				f.restartStream()
			}
			return resp, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		if status.Code(err) == codes.Unimplemented {
			unimplemented = append(unimplemented, err)
		}
		if n == 1 {
			return nil, err
		}
		errs = append(errs, fmt.Errorf("%s: %w", rep.Addr, err))
	}
	if len(unimplemented) == n {
		return nil, unimplemented[0]
	}
	if len(errs) == 0 {
		return nil, status.Error(codes.DeadlineExceeded, "follower: history probe: no time left for another replica")
	}
	return nil, errors.Join(errs...)
}

// answered records a probe sent at sent (Elapsed), answered "in history"
// with the authority's revision rev. checkGen: only when the state is still
// of generation gen (a stream's own request is always about the current
// state).
func (f *Follower) answered(sent time.Duration, rev, gen uint64, checkGen bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if checkGen && gen != f.st.gen {
		return
	}
	if len(f.st.answers) == maxAnswers {
		f.st.answers = f.st.answers[1:]
	}
	f.st.answers = append(f.st.answers, answer{sent: sent, rev: rev, gen: f.st.gen})
	f.promoteLocked()
}

// promoteLocked turns the answers whose revision the state has a digest
// at or above into the confirmation; f.mu is held for writing.
func (f *Follower) promoteLocked() {
	kept := f.st.answers[:0]
	for _, a := range f.st.answers {
		switch {
		case a.gen != f.st.gen:
		case a.rev <= f.st.digestRev:
			if !f.st.confirmed || a.sent > f.st.confirmedAt {
				f.st.confirmedAt, f.st.confirmed = a.sent, true
				f.notifyLocked()
			}
		default:
			kept = append(kept, a)
		}
	}
	f.st.answers = kept
}

// restartIfAging reopens the stream (whose request confirms the history)
// when the last confirmation is older than half MaxStaleness: the probe of
// an authority that cannot answer ConfirmHistory.
func (f *Follower) restartIfAging() {
	if d, ok := f.Staleness(); !ok || d > f.opts.MaxStaleness/2 {
		f.restartStream()
	}
}

// restartStream ends the current stream, if any; Run reconnects.
func (f *Follower) restartStream() {
	f.streamMu.Lock()
	defer f.streamMu.Unlock()
	if f.streamCancel != nil {
		f.streamCancel()
	}
}
