// Package usage reports token use to the authority: which tokens the
// authorizer allowed, and in which minute it last did.
//
// What counts as a use: an allowed decision (decision.Verdict.Check ending
// in Allow). Its token's signature verified, so a forged or malformed
// token never produces a report, nor does a denied check of a genuine
// token (expired, revoked, another organization, a permission it lacks).
//
// The check path only records, and rarely: the decision package keeps,
// beside each token's cached claims, the minute it last handed the token
// over, so a token checked many times a minute costs one atomic load on
// every check but the first of the minute. That one calls Record, which
// puts (token, minute) into one of 64 independently locked maps keeping
// the latest minute per token, bounded as a whole. A full buffer drops
// the use and counts it in
// sigil_authorizer_usage_dropped_total: the check is never slowed down
// and never waits for the authority. A background loop (Run) sends what
// was recorded every interval, in batches of at most MaxBatch uses, to the
// authority's ReportTokenUse with the watch credential.
package usage

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/pkg/token"
)

// MaxBatch bounds the uses of one ReportTokenUse call (the authority
// refuses more).
const MaxBatch = 1000

// DefaultCapacity bounds the tokens pending between two reports when
// Options.Capacity is not set.
const DefaultCapacity = 100_000

// DefaultSendTimeout bounds one ReportTokenUse call.
const DefaultSendTimeout = 10 * time.Second

// numShards is the number of independently locked maps; a power of two.
const numShards = 64

// Options configures a Reporter.
type Options struct {
	// Client reaches the authority. Required for Run.
	Client sigilv1.TokenAuthorityServiceClient
	// Credential returns the watch credential sent as a bearer token (""
	// sends none). Nil sends none.
	Credential func() (string, error)
	// Interval is how often pending uses are sent. Required for Run.
	Interval time.Duration
	// Capacity bounds the tokens pending between two reports;
	// DefaultCapacity when not positive.
	Capacity int
	// SendTimeout bounds one call; DefaultSendTimeout when not positive.
	SendTimeout time.Duration
	// Logger receives failures; slog.Default when nil.
	Logger *slog.Logger
	// Registerer receives the metrics; nil leaves them unexported.
	Registerer prometheus.Registerer
}

// Reporter records token uses and reports them. Record is safe for
// concurrent use and never blocks on the authority.
type Reporter struct {
	opts     Options
	perShard int
	logger   *slog.Logger

	shards [numShards]shard

	dropped prometheus.Counter
	sent    prometheus.Counter
	failed  prometheus.Counter
	uses    prometheus.Counter
}

// shard is one locked map of pending uses, token id → unix minute, padded
// so that two shards never share a cache line.
type shard struct {
	mu      sync.Mutex
	pending map[token.ID]int64
	_       [48]byte
}

// New returns a Reporter.
func New(opts Options) *Reporter {
	r := &Reporter{opts: opts, logger: opts.Logger}
	if r.logger == nil {
		r.logger = slog.Default()
	}
	capacity := opts.Capacity
	if capacity <= 0 {
		capacity = DefaultCapacity
	}
	r.perShard = max(1, capacity/numShards)
	for i := range r.shards {
		r.shards[i].pending = make(map[token.ID]int64)
	}
	r.dropped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sigil_authorizer_usage_dropped_total",
		Help: "Token uses not reported because the pending buffer was full (the check went on unhindered).",
	})
	batches := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sigil_authorizer_usage_batches_total",
		Help: "ReportTokenUse calls to the authority, by result (sent, failed).",
	}, []string{"result"})
	r.sent, r.failed = batches.WithLabelValues("sent"), batches.WithLabelValues("failed")
	r.uses = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sigil_authorizer_usage_reported_total",
		Help: "Token uses (one per token and minute) the authority recorded; it skips unknown tokens and uses not later than the one it holds.",
	})
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(r.dropped, batches, r.uses,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "sigil_authorizer_usage_pending",
				Help: "Tokens whose use waits for the next report.",
			}, func() float64 { return float64(r.Pending()) }))
	}
	return r
}

// minute is t's unix minute.
func minute(t time.Time) int64 { return t.Unix() / 60 }

// Record notes that token id was used at at (the decision's time: the
// check path reads no clock for it), and reports whether it took the use.
// It never blocks on the authority; when the buffer is full the use is
// dropped, counted, and false returned (the caller offers it again at the
// token's next use). The decision package calls it at most once a minute
// per token, so the shard's lock is taken that rarely.
func (r *Reporter) Record(id token.ID, at time.Time) bool {
	if !r.put(r.shardOf(id), id, minute(at)) {
		r.dropped.Inc()
		return false
	}
	return true
}

// put keeps minute m for id in sh unless a later one is there; false when
// the shard is full.
func (r *Reporter) put(sh *shard, id token.ID, m int64) bool {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	old, ok := sh.pending[id]
	switch {
	case ok && old >= m:
	case ok:
		sh.pending[id] = m
	case len(sh.pending) >= r.perShard:
		return false
	default:
		sh.pending[id] = m
	}
	return true
}

// shardOf returns the shard of id.
func (r *Reporter) shardOf(id token.ID) *shard {
	return &r.shards[binary.LittleEndian.Uint64(id[:8])>>58]
}

// Pending returns the number of tokens waiting for the next report.
func (r *Reporter) Pending() int {
	n := 0
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		n += len(sh.pending)
		sh.mu.Unlock()
	}
	return n
}

// Use is one pending use: a token and the minute it was last used.
type Use struct {
	ID   token.ID
	Time time.Time // a whole minute, UTC
}

// Drain takes every pending use out of the buffer.
func (r *Reporter) Drain() []Use {
	var out []Use
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		for id, m := range sh.pending {
			out = append(out, Use{ID: id, Time: time.Unix(m*60, 0).UTC()})
		}
		clear(sh.pending)
		sh.mu.Unlock()
	}
	return out
}

// requeue puts uses back after a failed report, keeping later ones
// recorded meanwhile; those that no longer fit are dropped and counted.
func (r *Reporter) requeue(uses []Use) {
	for _, u := range uses {
		if !r.put(r.shardOf(u.ID), u.ID, minute(u.Time)) {
			r.dropped.Inc()
		}
	}
}

// FinalFlushTimeout bounds the report Run makes when stopped, so that an
// authority away cannot hold the authorizer's stop for long.
const FinalFlushTimeout = time.Second

// Run sends the pending uses every interval until ctx ends, then once
// more (within FinalFlushTimeout) so that a clean stop loses nothing it
// could send.
func (r *Reporter) Run(ctx context.Context) error {
	if r.opts.Client == nil || r.opts.Interval <= 0 {
		return errors.New("usage: a client and a positive interval are required")
	}
	t := time.NewTicker(r.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), min(r.sendTimeout(), FinalFlushTimeout))
			defer cancel()
			r.Flush(fctx)
			return nil
		case <-t.C:
			r.Flush(ctx)
		}
	}
}

func (r *Reporter) sendTimeout() time.Duration {
	if r.opts.SendTimeout > 0 {
		return r.opts.SendTimeout
	}
	return DefaultSendTimeout
}

// Flush sends every pending use now, in batches of at most MaxBatch. A
// batch the authority could not take for now (unavailable, timed out) is
// put back for the next report; one it refused is dropped (counted as a
// failed batch).
func (r *Reporter) Flush(ctx context.Context) {
	uses := r.Drain()
	for len(uses) > 0 {
		n := min(len(uses), MaxBatch)
		batch := uses[:n]
		uses = uses[n:]
		if err := r.send(ctx, batch); err != nil {
			r.failed.Inc()
			retry := retryable(err)
			r.logger.Warn("token use report failed", "uses", len(batch), "retry", retry, "error", err)
			if retry {
				r.requeue(batch)
				r.requeue(uses) // the authority is away: the rest waits too
				return
			}
		}
	}
}

// send makes one ReportTokenUse call.
func (r *Reporter) send(ctx context.Context, batch []Use) error {
	req := &sigilv1.ReportTokenUseRequest{Uses: make([]*sigilv1.TokenUse, len(batch))}
	for i, u := range batch {
		req.Uses[i] = &sigilv1.TokenUse{TokenId: u.ID.String(), LastUseTime: timestamppb.New(u.Time)}
	}
	if r.opts.Credential != nil {
		cred, err := r.opts.Credential()
		if err != nil {
			return err
		}
		if cred != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+cred)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, r.sendTimeout())
	defer cancel()
	resp, err := r.opts.Client.ReportTokenUse(ctx, req)
	if err != nil {
		return err
	}
	r.sent.Inc()
	r.uses.Add(float64(resp.GetRecorded()))
	return nil
}

// retryable reports whether a failed report may succeed later as it is.
func retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted, codes.Canceled:
		return true
	}
	return false
}
