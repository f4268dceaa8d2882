// Package server implements sigil.v1.TokenAuthorityService: it reads the
// credential, validates requests, calls the rules of package manage and
// maps their errors to gRPC statuses (toStatus).
package server

import (
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sigil-auth/sigil/pkg/grpcserver"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/pkg/token"
	"github.com/sigil-auth/sigil/services/authority/internal/manage"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// Defaults of the stream tunables.
const (
	// DefaultCheckpointInterval is how often an idle revocation stream
	// sends a checkpoint.
	DefaultCheckpointInterval = time.Second
	DefaultSendTimeout        = 5 * time.Second
	// SnapshotChunkSize is the most revoked tokens per snapshot chunk. A
	// chunk encodes to about 48 bytes a token: 500 keep it under 32 KiB,
	// the largest buffer grpc-go pools below 1 MiB, so that a stream stalled
	// with two chunks queued holds tens of KiB, not two 1 MiB buffers.
	SnapshotChunkSize = 500
)

// Options are the server's dependencies and settings.
type Options struct {
	// Options are the domain's dependencies (store, keys, codec, catalog,
	// credentials, dev mode, logger, clock), handed to manage.New.
	manage.Options
	// MinTTL and MaxTTL bound a token's lifetime.
	MinTTL time.Duration
	MaxTTL time.Duration
	// Metrics, when set, counts minted and revoked tokens and subscribers.
	Metrics *Metrics
	// CheckpointInterval of the revocation stream; DefaultCheckpointInterval when 0.
	CheckpointInterval time.Duration
	// SendTimeout is how long one stream message may wait for a slow
	// consumer before the stream is cut off; DefaultSendTimeout when 0.
	SendTimeout time.Duration
	// MaxWatchStreams bounds the open revocation streams per credential;
	// DefaultMaxWatchStreams when 0.
	MaxWatchStreams int
	// Limits counts refused streams (sigil_limit_exceeded_total); nil: not
	// counted.
	Limits *grpcserver.Limits
}

// Server implements sigilv1.TokenAuthorityServiceServer.
type Server struct {
	sigilv1.UnimplementedTokenAuthorityServiceServer

	store   store.Store
	codec   *token.Codec
	catalog *scope.Catalog
	minTTL  time.Duration
	maxTTL  time.Duration
	logger  *slog.Logger
	metrics *Metrics
	now     func() time.Time

	mgr *manage.Manager

	checkpointEvery time.Duration
	sendTimeout     time.Duration

	shutdown     chan struct{}
	shutdownOnce sync.Once

	streamsMu sync.Mutex
	streams   map[*watch]struct{} // open revocation streams, for DrainStreams

	watchSlots *watchSlots
	snapshots  snapshotCache
	// fan shares store reads and encoded messages across the live streams.
	fan *fanout

	// catalogMsg is the catalog as every revocation stream sends it first.
	catalogMsg *sigilv1.WatchRevocationsResponse
}

// New returns a server. Every dependency in opts is required except Metrics,
// Logger and Now.
func New(opts Options) (*Server, error) {
	if opts.Store == nil || opts.Keys == nil || opts.Codec == nil || opts.Catalog == nil {
		return nil, errors.New("server: store, keys, codec and catalog are required")
	}
	if opts.MinTTL <= 0 || opts.MaxTTL < opts.MinTTL {
		return nil, errors.New("server: bad ttl bounds")
	}
	s := &Server{
		store: opts.Store, codec: opts.Codec, catalog: opts.Catalog, minTTL: opts.MinTTL, maxTTL: opts.MaxTTL,
		logger: opts.Logger, metrics: opts.Metrics, now: opts.Now,
		checkpointEvery: opts.CheckpointInterval, sendTimeout: opts.SendTimeout,
		shutdown:   make(chan struct{}),
		streams:    map[*watch]struct{}{},
		watchSlots: newWatchSlots(opts.MaxWatchStreams, opts.Limits),
		catalogMsg: catalogMessage(opts.Catalog),
		fan:        newFanout(),
	}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.checkpointEvery <= 0 {
		s.checkpointEvery = DefaultCheckpointInterval
	}
	if s.sendTimeout <= 0 {
		s.sendTimeout = DefaultSendTimeout
	}
	mo := opts.Options
	mo.Logger, mo.Now = s.logger, s.now
	mgr, err := manage.New(mo)
	if err != nil {
		return nil, err
	}
	s.mgr = mgr
	if s.metrics == nil {
		s.metrics = NewMetrics(nil, nil)
	}
	return s, nil
}

// Shutdown ends every revocation stream with codes.Unavailable. grpc-go's
// GracefulStop waits for streams without cancelling them, so call this first.
func (s *Server) Shutdown() {
	s.shutdownOnce.Do(func() { close(s.shutdown) })
}

// Metrics are the authority's own Prometheus metrics.
type Metrics struct {
	minted      prometheus.Counter
	revoked     prometheus.Counter
	subscribers prometheus.Gauge
}

// NewMetrics creates the metrics and registers them with reg (when not nil),
// with sigil_revision read from revision (when not nil).
func NewMetrics(reg prometheus.Registerer, revision func() uint64) *Metrics {
	m := &Metrics{
		minted:      prometheus.NewCounter(prometheus.CounterOpts{Name: "sigil_tokens_minted_total", Help: "Tokens minted (created or rotated)."}),
		revoked:     prometheus.NewCounter(prometheus.CounterOpts{Name: "sigil_tokens_revoked_total", Help: "Tokens revoked (singly, in bulk, or by rotation)."}),
		subscribers: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sigil_watch_subscribers", Help: "Open revocation streams."}),
	}
	if reg != nil {
		reg.MustRegister(m.minted, m.revoked, m.subscribers)
		if revision != nil {
			reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sigil_revision", Help: "Last committed store revision."},
				func() float64 { return float64(revision()) }))
		}
	}
	return m
}
