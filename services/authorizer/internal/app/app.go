// Package app wires the authorizer together and runs it until its context ends.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/sigil-auth/sigil/pkg/gcfloor"
	"github.com/sigil-auth/sigil/pkg/grpcserver"
	"github.com/sigil-auth/sigil/pkg/logging"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/pkg/tlsconfig"
	"github.com/sigil-auth/sigil/pkg/token"
	"github.com/sigil-auth/sigil/services/authorizer/internal/check"
	"github.com/sigil-auth/sigil/services/authorizer/internal/config"
	"github.com/sigil-auth/sigil/services/authorizer/internal/decision"
	"github.com/sigil-auth/sigil/services/authorizer/internal/extauthz"
	"github.com/sigil-auth/sigil/services/authorizer/internal/follower"
	"github.com/sigil-auth/sigil/services/authorizer/internal/forwardauth"
	"github.com/sigil-auth/sigil/services/authorizer/internal/routes"
	"github.com/sigil-auth/sigil/services/authorizer/internal/server"
	"github.com/sigil-auth/sigil/services/authorizer/internal/usage"
)

// healthInterval is how often freshness is turned into the health status.
const healthInterval = 200 * time.Millisecond

// maxSnapshotMsg bounds one message of the revocation stream (a snapshot
// chunk); the authority chunks its snapshots well below it.
const maxSnapshotMsg = 16 << 20

// Run validates cfg, starts the authorizer and serves until ctx is done,
// then drains in-flight calls within cfg.ShutdownTimeout. Logs are JSON on
// standard error.
func Run(ctx context.Context, cfg config.Config) error {
	return RunWith(ctx, cfg, Options{gcFloor: true})
}

// Options are what RunWith takes besides the configuration: hooks for
// tests that run the authorizer in process.
type Options struct {
	// Now is the wall clock: token issue and expiry times, the skew
	// against the authority's clock, pruning. time.Now when nil. Freshness
	// never reads it: it is measured on the monotonic clock of the
	// process, so that a wall-clock step can neither make a stale
	// authorizer fresh nor a fresh one stale.
	Now func() time.Time
	// LogOut receives the JSON logs; standard error when nil.
	LogOut io.Writer

	// stopHook, when set, runs as the last step of the stop (tests: a
	// step that does not finish).
	stopHook func()
	// gcFloor sets the garbage collector's floor (package gcfloor) for
	// the process: Run, that is the binary, does; tests that run several
	// authorizers in one process do not.
	gcFloor bool
}

// RunWith is Run with opts.
func RunWith(ctx context.Context, cfg config.Config, opts Options) error {
	if opts.LogOut == nil {
		opts.LogOut = os.Stderr
	}
	return run(ctx, cfg, opts)
}

// reconnectBackoff is the gRPC connection's own backoff towards the
// authority. grpc-go's default grows to 120 s, which would override the
// follower's capped retry (the stream waits for the connection): an
// authority back after a minute would be reached up to two minutes later.
// Capped like the follower's, it is reached within about two seconds.
var reconnectBackoff = grpc.ConnectParams{
	Backoff: backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
	// A connection attempt gets this long (TCP and TLS handshakes); on
	// a dead address it fails at once anyway.
	MinConnectTimeout: 2 * time.Second,
}

func run(ctx context.Context, cfg config.Config, opts Options) error {
	logOut, now := opts.LogOut, opts.Now
	if err := cfg.Validate(); err != nil {
		return err
	}
	level, _ := logging.ParseLevel(cfg.LogLevel) // validated with the config
	logger := logging.New(logOut, level, "authorizer")
	if opts.gcFloor {
		defer startGCFloor(logger)()
	}

	serverTLS, err := tlsconfig.Server(cfg.TLSCert, cfg.TLSKey, cfg.TLSClientCA)
	if err != nil {
		return err
	}
	authorityTLS, err := tlsconfig.Client(cfg.AuthorityCA, cfg.AuthorityCert, cfg.AuthorityKey)
	if err != nil {
		return err
	}
	var policy *routes.Live
	if cfg.Routes != "" {
		if policy, err = routes.LoadLive(cfg.Routes); err != nil {
			return fmt.Errorf("--routes: %w", err)
		}
		p := policy.Policy()
		logger.Info("ext_authz enabled", "routes_file", cfg.Routes, "routes", len(p.Routes), "default_allow", p.Default == routes.DefaultAllow)
	}
	codec, err := token.NewCodec(cfg.TokenPrefix)
	if err != nil {
		return fmt.Errorf("token prefix: %w", err)
	}
	credential := func() (string, error) { return "", nil }
	if cfg.AuthorityTokenFile != "" {
		cred := &credentialFile{path: cfg.AuthorityTokenFile}
		if _, err := cred.read(); err != nil {
			return err
		}
		credential = cred.read
		logger.Info("watch credential", "file", cfg.AuthorityTokenFile)
	} else {
		logger.Warn("no --authority-token-file: the revocation stream is requested anonymously, which only a --dev authority accepts")
	}

	authority, _ := config.ParseAuthority(cfg.Authority) // validated with the config
	conns, err := dialAuthority(authority, authorityTLS)
	if err != nil {
		return err
	}
	connOpen := true
	closeConns := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	defer func() {
		if connOpen {
			closeConns()
		}
	}()
	replicas := make([]follower.Replica, len(conns))
	for i, c := range conns {
		replicas[i] = follower.Replica{Addr: authority.Targets()[i], Client: sigilv1.NewTokenAuthorityServiceClient(c)}
	}
	if authority.DNS != "" {
		// One balancing client: the follower names the replica it reached
		// by the peer's address.
		replicas[0].Addr, replicas[0].Balanced = "", true
	}

	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	lisOpen := true
	defer func() {
		if lisOpen {
			lis.Close()
		}
	}()
	self := false
	for _, a := range authority.Addrs {
		self = self || isSelf(a, lis.Addr())
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if cfg.AuthorityCert != "" {
		grpcserver.WatchCertExpiry(authorityTLS, grpcserver.CertAuthorityClient, logger, reg, time.Now())
	}

	failoverSeconds := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "sigil_authorizer_failover_seconds",
		Help:    "Time from a revocation stream breaking to its resumption on another authority replica (first message received there).",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	})
	reg.MustRegister(failoverSeconds)
	// A routes file naming a permission outside the authority's catalog
	// fails the start (the first catalog); a later catalog without it
	// logs an ERROR per route (the engine then denies those routes).
	routesFault := make(chan error, 1)
	fol := follower.New(follower.Options{
		OnCatalog:    func(c *scope.Catalog) { checkRoutesCatalog(policy, c, logger, routesFault) },
		Replicas:     replicas,
		OnFailover:   func(ev follower.Failover) { failoverSeconds.Observe(ev.Outage.Seconds()) },
		Credential:   credential,
		Logger:       logger.With("component", "follower"),
		MaxStaleness: cfg.MaxStaleness,
		Retention:    cfg.ClockLeeway + time.Minute,
		SkewWarning:  cfg.ClockLeeway,
		MaxClockSkew: cfg.ClockSkewBound(),
		Now:          now,
		BackoffMax:   reconnectBackoff.Backoff.MaxDelay,
		// The authority being this very process is told once, clearly,
		// by the follower's error line.
		AuthorityIsSelf: self,
	})
	var uses decision.Recorder // nil: use is not reported
	var reporter *usage.Reporter
	if cfg.UsageInterval > 0 {
		reporter = usage.New(usage.Options{Client: newReplicasClient(conns), Credential: credential,
			Interval: cfg.UsageInterval, Logger: logger.With("component", "usage"), Registerer: reg})
		uses = reporter
	}
	dec, err := decision.New(decision.Options{Codec: codec, State: fol, Leeway: cfg.ClockLeeway, CacheSize: cfg.CacheSize, Now: now, Usage: uses})
	if err != nil {
		return err
	}
	registerStateMetrics(reg, fol, dec)

	// The largest legitimate request bounds every message: CheckPermissions
	// with MaxChecks checks, or an Envoy check with its headers.
	maxRecv := server.MaxCheckPermissionsRequestSize
	if policy != nil {
		maxRecv = max(maxRecv, extauthz.MaxCheckRequestSize)
	}
	limits := grpcserver.NewLimits(reg)
	srv := grpcserver.New(grpcserver.Options{
		Logger: logger, Registerer: reg, TLS: serverTLS, Limits: limits,
		MaxRecvMsgSize: maxRecv, MethodMaxRecvSize: server.MethodMaxRecvSize(),
		MaxConnections: cfg.MaxConnections, MaxStreamsPerConnection: cfg.MaxStreams,
	})
	// Until Serve takes over, a failed start must release the server's call
	// workers (in-process runs: tests).
	serving := false
	defer func() {
		if !serving {
			srv.Shutdown(0)
		}
	}()
	decisionMetrics := check.NewMetrics(reg)
	srv.RegisterService(&sigilv1.AuthorizerService_ServiceDesc, server.New(server.Options{
		Decider: dec, Follower: fol, MaxWait: cfg.MaxWait, Metrics: decisionMetrics,
		Parking: check.NewParking(cfg.MaxParkedWaits, limits),
	}))
	if policy != nil {
		reloadRoutesOnHangup(ctx, policy, logger, reg)
		srv.RegisterService(&extauthz.ServiceDesc, extauthz.New(extauthz.Options{
			Live: policy, Decider: dec, Follower: fol, Metrics: decisionMetrics, Registerer: reg,
			Logger: logger.With("component", "extauthz"),
		}))
	}
	var fa *forwardauth.Server
	if cfg.HTTPListen != "" { // HTTP forward-auth, on the same decision path (Validate: needs --routes)
		fa, err = forwardauth.Listen(cfg.HTTPListen, extauthz.NewEngine(extauthz.Options{Live: policy, Decider: dec, Follower: fol,
			Metrics: decisionMetrics, Registerer: reg, Logger: logger.With("component", "forwardauth")}, "forwardauth"), logger)
		if err != nil {
			return fmt.Errorf("http listen %s: %w", cfg.HTTPListen, err)
		}
		defer func() {
			if fa != nil {
				fa.Close(time.Second)
			}
		}()
	}

	var metricsAddr string
	var metrics *grpcserver.MetricsServer
	if cfg.MetricsListen != "" {
		metrics, err = grpcserver.ListenMetrics(cfg.MetricsListen, reg, logger)
		if err != nil {
			return fmt.Errorf("metrics listen %s: %w", cfg.MetricsListen, err)
		}
		metricsAddr = metrics.Addr().String()
	}
	logger.Info("listening", "addr", lis.Addr().String(), "metrics_addr", metricsAddr,
		"authority", cfg.Authority, "tls", serverTLS != nil, "authority_tls", authorityTLS != nil,
		"max_staleness", cfg.MaxStaleness.String(), "clock_leeway", cfg.ClockLeeway.String())

	bg, stopBG := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = fol.Run(bg) })
	if len(conns) > 1 {
		for _, c := range conns {
			wg.Go(func() { keepConnected(bg, c) })
		}
	}
	wg.Go(func() { watchHealth(bg, fol, srv, logger, healthInterval) })
	if reporter != nil {
		wg.Go(func() { _ = reporter.Run(bg) })
	}

	serveErr := make(chan error, 1)
	lisOpen, serving = false, true // Serve owns them
	go func() { serveErr <- srv.Serve(lis) }()

	var runErr error
	select {
	case <-ctx.Done():
		logger.Info("shutting down", "timeout", cfg.ShutdownTimeout.String())
	case runErr = <-serveErr:
		logger.Error("server stopped", "error", runErr)
	case runErr = <-routesFault:
		logger.Error("stopping: the routes file names a permission that is not in the authority's catalog", "error", runErr)
	}
	// Reverse order of start: stop answering (draining in-flight checks),
	// then stop following, then close the connection and metrics. The
	// whole stop has one bound; past it the process gives up, says so and
	// fails, and "stopped" is never logged.
	start := time.Now()
	stopCtx, cancelStop := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancelStop()
	done := make(chan error, 1)
	faStop, metricsStop := fa, metrics
	fa, metrics, connOpen = nil, nil, false // stopped below, not by the deferred calls
	go func() {
		var errs []error
		if err := srv.Stop(stopCtx, nil); err != nil {
			errs = append(errs, err)
		}
		stopBG()
		wg.Wait()
		if faStop != nil {
			dl, _ := stopCtx.Deadline()
			faStop.Close(time.Until(dl))
		}
		if metricsStop != nil {
			_ = metricsStop.Close(stopCtx)
		}
		closeConns()
		if opts.stopHook != nil {
			opts.stopHook()
		}
		done <- errors.Join(errs...)
	}()
	select {
	case err := <-done:
		if err != nil {
			logger.Error("stop did not finish cleanly within --shutdown-timeout", "error", err, "timeout", cfg.ShutdownTimeout.String())
			return fmt.Errorf("stop did not finish within --shutdown-timeout %s: %w", cfg.ShutdownTimeout, err)
		}
	case <-stopCtx.Done():
		logger.Error("stop did not finish within --shutdown-timeout: exiting with work still running", "timeout", cfg.ShutdownTimeout.String())
		return fmt.Errorf("stop did not finish within --shutdown-timeout %s", cfg.ShutdownTimeout)
	}
	if runErr == nil {
		if err := <-serveErr; err != nil {
			runErr = err
		}
	}
	if runErr != nil {
		return runErr
	}
	logger.Info("stopped", "took", time.Since(start).String())
	return nil
}

// dialAuthority returns one client connection per target of --authority
// (TLS, when set, applies to each): a listed replica each, or one for a
// dns:/// target, balanced round-robin over every address the name
// resolves to (gRPC's resolver re-resolves when a connection fails), so
// that a stream or probe goes to a replica that is up.
// authorityWindow is the HTTP/2 flow-control window of the authorizer's
// connections to the authority, per stream and per connection: at most
// this much of the stream can be in flight unread.
const authorityWindow = 4 << 20

func dialAuthority(a config.Authority, tlsCfg *tls.Config) ([]*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if tlsCfg != nil {
		creds = credentials.NewTLS(tlsCfg)
	}
	dialOpts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxSnapshotMsg)),
		grpc.WithConnectParams(reconnectBackoff),
		// Fixed flow-control windows, which also turn off grpc-go's
		// bandwidth-delay estimation: with it on, every message of the
		// revocation stream that starts a burst made this end send a ping
		// that the authority had to read and answer, one read and one
		// write more per follower and revocation for an authority fanning
		// out to many (BENCHMARKS.md). authorityWindow is what the
		// estimation would grow to on a fast link, ample for a
		// million-token snapshot across a WAN.
		grpc.WithInitialWindowSize(authorityWindow),
		grpc.WithInitialConnWindowSize(authorityWindow),
	}
	if a.DNS != "" {
		dialOpts = append(dialOpts, grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`))
	}
	var conns []*grpc.ClientConn
	for _, target := range a.Targets() {
		conn, err := grpc.NewClient(target, dialOpts...)
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return nil, fmt.Errorf("authority %s: %w", target, err)
		}
		conns = append(conns, conn)
	}
	return conns, nil
}

// keepConnected keeps conn connected (reconnecting at its capped backoff)
// until ctx ends: a replica the stream is not on is otherwise dialled
// only when the stream fails over to it, or left idle after it restarted,
// and the failover would wait for a TCP and TLS handshake.
func keepConnected(ctx context.Context, conn *grpc.ClientConn) {
	for {
		s := conn.GetState()
		if s == connectivity.Idle {
			conn.Connect()
		}
		if !conn.WaitForStateChange(ctx, s) {
			return
		}
	}
}

// isSelf reports whether addr (--authority) names the listener's own
// address: same port, and a loopback, unspecified or equal host.
func isSelf(addr string, own net.Addr) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ta, ok := own.(*net.TCPAddr)
	if !ok || port != strconv.Itoa(ta.Port) {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && (ip.IsLoopback() || ip.IsUnspecified() || ip.Equal(ta.IP))
}

func watchHealth(ctx context.Context, fol *follower.Follower, srv *grpcserver.Server, logger *slog.Logger, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	serving := false
	srv.SetServing(false)
	for {
		changed := fol.Changed() // before reading, so that no change is missed
		if ready := fol.Ready(); ready != serving {
			serving = ready
			srv.SetServing(serving)
			stale, _ := fol.Staleness()
			logger.Info("health changed", "serving", serving, "synced", fol.Synced(), "revision", fol.Revision(), "staleness", stale.String())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-changed:
		}
	}
}

// registerStateMetrics exposes the follower's and the cache's state.
func registerStateMetrics(reg prometheus.Registerer, fol *follower.Follower, dec *decision.Decider) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sigil_authorizer_applied_revision", Help: "Authority revision applied by the follower."},
			func() float64 { return float64(fol.Revision()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sigil_authorizer_staleness_seconds", Help: "Seconds since the sending of the last history probe the authority confirmed (+Inf before the first): the authorizer is fresh while it is at most --max-staleness."},
			func() float64 {
				d, ok := fol.Staleness()
				if !ok {
					return posInf
				}
				return d.Seconds()
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sigil_authorizer_clock_skew_seconds", Help: "Local clock minus the authority's, at the last checkpoint."},
			func() float64 { d, _ := fol.ClockSkew(); return d.Seconds() }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sigil_authorizer_synced", Help: "1 once a complete snapshot was applied."},
			func() float64 { return b2f(fol.Synced()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sigil_authorizer_ready", Help: "1 while synced and fresh (checks are answered)."},
			func() float64 { return b2f(fol.Ready()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sigil_authorizer_revoked_tokens", Help: "Revoked, unexpired tokens held."},
			func() float64 { return float64(fol.RevokedCount()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sigil_authorizer_stream_reconnects_total", Help: "Revocation streams reopened after the first."},
			func() float64 { return float64(fol.Stats().Reconnects) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sigil_authorizer_stream_snapshots_total", Help: "Complete snapshots applied."},
			func() float64 { return float64(fol.Stats().Snapshots) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sigil_authorizer_stream_events_total", Help: "Live events applied."},
			func() float64 { return float64(fol.Stats().Events) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sigil_authorizer_stream_duplicate_events_total", Help: "Events at or below the applied revision, ignored."},
			func() float64 { return float64(fol.Stats().Duplicates) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sigil_authorizer_stream_malformed_total", Help: "Stream messages or entries rejected as malformed or unknown."},
			func() float64 { return float64(fol.Stats().Malformed) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sigil_authorizer_history_probes_total", Help: "ConfirmHistory probes sent (freshness, min_revision)."},
			func() float64 { return float64(fol.Stats().Probes) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sigil_authorizer_history_diverged_total", Help: "Probes answered \"not in history\": the state was of another history (a restored or replaced store); each forces a snapshot."},
			func() float64 { return float64(fol.Stats().Diverged) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sigil_authorizer_stream_wrong_server_total", Help: "Stream attempts answered UNIMPLEMENTED: the server at --authority is not a Sigil authority (or is this authorizer)."},
			func() float64 { return float64(fol.Stats().WrongServer) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sigil_authorizer_clock_skew_exceeded", Help: "1 while the clock is not known to be within --max-clock-skew of the authority's (checks fail closed)."},
			func() float64 { return b2f(fol.ClockSkewExceeded()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sigil_authorizer_failovers_total", Help: "Revocation streams resumed on another authority replica than the previous stream's."},
			func() float64 { return float64(fol.Stats().Failovers) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sigil_authorizer_stream_gaps_total", Help: "Live events that did not follow the applied revision (a lost message); each drops the stream."},
			func() float64 { return float64(fol.Stats().Gaps) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sigil_authorizer_cache_hits_total", Help: "Checks whose token was found in the verified-claims cache."},
			func() float64 { h, _ := dec.CacheStats(); return float64(h) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sigil_authorizer_cache_misses_total", Help: "Checks whose token had to be parsed and verified."},
			func() float64 { _, m := dec.CacheStats(); return float64(m) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sigil_authorizer_cache_entries", Help: "Tokens in the verified-claims cache."},
			func() float64 { return float64(dec.CacheLen()) }),
	)
}

var posInf = math.Inf(1)

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// credentialFile reads the watch credential, keeping the last good value
// when a later read fails (a file being replaced).
type credentialFile struct {
	path string
	mu   sync.Mutex
	last string
}

func (c *credentialFile) read() (string, error) {
	b, err := os.ReadFile(c.path)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil {
		if v := strings.TrimSpace(string(b)); v != "" {
			c.last = v
			return v, nil
		}
		err = errors.New("file is empty")
	}
	if c.last != "" {
		return c.last, nil
	}
	// The error names the file, never its content.
	return "", fmt.Errorf("--authority-token-file %s: %w", c.path, err)
}

// startGCFloor keeps the garbage collector from running more often than
// once per gcfloor.DefaultFloor of allocation while the live heap is small:
// every check allocates a few KiB, and with GOGC=100 over a heap of a few
// MiB a third of the CPU under load went to collecting. GOGC or GOMEMLIMIT
// in the environment leave the collector to the operator. The returned
// function restores GOGC.
func startGCFloor(logger *slog.Logger) func() {
	if !gcfloor.Enabled() {
		logger.Info("GOGC or GOMEMLIMIT set: the garbage collector is left as configured")
		return func() {}
	}
	f := gcfloor.Start(gcfloor.DefaultFloor)
	logger.Info("garbage collector floor", "floor_bytes", gcfloor.DefaultFloor)
	return f.Stop
}
