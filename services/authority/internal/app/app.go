// Package app wires the authority together and runs it until its context ends.
package app

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/sigil-auth/sigil/pkg/grpcserver"
	"github.com/sigil-auth/sigil/pkg/logging"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/pkg/tlsconfig"
	"github.com/sigil-auth/sigil/pkg/token"
	"github.com/sigil-auth/sigil/services/authority/internal/config"
	"github.com/sigil-auth/sigil/services/authority/internal/keys"
	"github.com/sigil-auth/sigil/services/authority/internal/manage"
	"github.com/sigil-auth/sigil/services/authority/internal/secrets"
	"github.com/sigil-auth/sigil/services/authority/internal/server"
)

// DBFile is the name of the bbolt file in the data directory.
const DBFile = "sigil.db"

// streamDrain bounds how long, at a stop, the revocation streams get after
// the last write has finished, to send what it committed before they end
// (they usually need a few milliseconds; a stalled consumer must not hold
// the stop).
const streamDrain = 2 * time.Second

// compactInterval is how often the event log is compacted.
const compactInterval = time.Minute

// Options are the process-level inputs of Run, replaceable in tests.
type Options struct {
	// Stderr receives the JSON log; os.Stderr when nil.
	Stderr io.Writer
	// LookupEnv reads SIGIL_AUTHORITY_KEK; os.LookupEnv when nil.
	LookupEnv func(string) (string, bool)
	// Ready, when set, is called once the server serves, with its addresses
	// (metrics nil when disabled).
	Ready func(grpcAddr, metricsAddr net.Addr)

	// stopHook, when set, runs as the last step of the stop (tests: a
	// step that does not finish).
	stopHook func()
}

// Run runs the authority with cfg until ctx ends, then stops gracefully.
// maxRequestSize bounds every request to the authority. The largest
// legitimate one is a CreateToken whose grants fill a token (token.MaxLen
// bytes) plus its other fields (about 2 KiB), and a ReportLeakedTokens of
// 100 strings of at most 1 KiB with a source and a URL (about 103 KiB);
// grants that cannot fit in a token are refused anyway, so 128 KiB leaves
// ample room.
const maxRequestSize = 128 << 10

func Run(ctx context.Context, cfg config.Config) error {
	return RunWithOptions(ctx, cfg, Options{})
}

// RunWithOptions is Run with process-level inputs replaced.
func RunWithOptions(ctx context.Context, cfg config.Config, opts Options) (err error) {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if opts.Stderr == nil {
		opts.Stderr = os.Stderr
	}
	if opts.LookupEnv == nil {
		opts.LookupEnv = os.LookupEnv
	}
	level, _ := logging.ParseLevel(cfg.LogLevel) // validated with the config
	logger := logging.New(opts.Stderr, level, "authority")

	// Everything that can fail without side effects first.
	tlsCfg, err := tlsconfig.Server(cfg.TLSCert, cfg.TLSKey, cfg.TLSClientCA)
	if err != nil {
		return err
	}
	catalog := scope.Builtin()
	if cfg.CatalogFile != "" {
		if catalog, err = scope.LoadCatalogFile(cfg.CatalogFile); err != nil {
			return fmt.Errorf("catalog: %w", err)
		}
	}
	codec, err := token.NewCodec(cfg.TokenPrefix)
	if err != nil {
		return err
	}
	hooks, err := newWebhooks(cfg, logger)
	if err != nil {
		return err
	}

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	operator, err := secrets.LoadOrCreateCredential(cfg.OperatorTokenFile, secrets.OperatorPrefix, logger)
	if err != nil {
		return err
	}
	watch, err := secrets.LoadOrCreateCredential(cfg.WatchTokenFile, secrets.WatchPrefix, logger)
	if err != nil {
		return err
	}
	if watch.Equal(operator) {
		// Every authorizer holds the watch credential: equal to the
		// operator's, each could mint and revoke anything.
		return fmt.Errorf("the watch credential (%s) equals the operator credential (%s): give the watch credential a value of its own",
			cfg.WatchTokenFile, cfg.OperatorTokenFile)
	}
	reporter, err := secrets.LoadOrCreateCredential(cfg.ReporterTokenFile, secrets.ReporterPrefix, logger)
	if err != nil {
		return err
	}
	if reporter.Equal(operator) || reporter.Equal(watch) {
		// The reporter credential sits in a secret scanner's
		// configuration: equal to another, it would carry that one's rights.
		return fmt.Errorf("the reporter credential (%s) equals the operator or the watch credential: give it a value of its own", cfg.ReporterTokenFile)
	}

	// From here on, what is opened is closed in reverse order, also when
	// start-up fails halfway.
	var closers []func()
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}()

	faults := &faultReporter{logger: logger}
	st, where, etcdTLS, err := openStore(ctx, cfg, faults.report)
	if err != nil {
		return err
	}
	closers = append(closers, func() {
		if err := st.Close(); err != nil {
			logger.Error("closing the database", "error", err)
		}
	})
	logger.Info("database open", "store", cfg.Store, "path", where, "epoch", st.Epoch(), "revision", st.Revision(),
		"check_took", checkTook(st))

	reg := prometheus.NewRegistry()
	if cfg.EtcdCert != "" {
		grpcserver.WatchCertExpiry(etcdTLS, grpcserver.CertEtcdClient, logger, reg, time.Now())
	}
	if err := hooks.attach(st, reg); err != nil {
		return err
	}
	rewinds := newRewindCounter()
	reg.MustRegister(rewinds)
	markPath := filepath.Join(cfg.DataDir, HighWaterFile)
	if err := checkMark(markPath, st, cfg.Restored, logger, rewinds); err != nil {
		return err
	}
	mw := &markWriter{path: markPath, st: st, logger: logger, done: make(chan struct{}), last: st.Revision()}
	markCtx, stopMark := context.WithCancel(context.Background())
	go mw.run(markCtx)
	// Runs after the server has stopped (closers run in reverse): the
	// last acknowledged revision is marked.
	closers = append(closers, func() { stopMark(); <-mw.done })

	// The key-encryption key is created only for a store without sealed
	// keys: for one with keys, a new key could open none of them.
	sealed, err := st.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("read signing keys: %w", err)
	}
	kekEnv, kekSet := opts.LookupEnv(config.EnvPrefix + "_KEK")
	kek, err := secrets.LoadKEK(kekEnv, kekSet, cfg.KEKFile, len(sealed) == 0, logger)
	if err != nil {
		return err
	}
	sealer, err := secrets.NewSealer(kek)
	if err != nil {
		return err
	}

	km, err := keys.New(ctx, st, sealer, keys.Options{ActivationDelay: cfg.KeyActivationDelay, Logger: logger, ExternalSchedule: true})
	if err != nil {
		return err
	}
	closers = append(closers, km.Close)

	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := server.NewMetrics(reg, st.Revision)
	limits := grpcserver.NewLimits(reg)

	srv, err := server.New(server.Options{
		Options: manage.Options{
			Store: gatedStore{Store: st, stalled: faults.isStalled}, Keys: km, Codec: codec, Catalog: catalog, Operator: operator, Watch: watch, Reporter: reporter,
			Dev: cfg.Dev, Logger: logger,
		},
		MinTTL: cfg.MinTTL, MaxTTL: cfg.MaxTTL, Metrics: metrics,
		MaxWatchStreams: cfg.MaxWatchStreams, Limits: limits,
	})
	if err != nil {
		return err
	}
	if cfg.Dev {
		logger.Warn("dev mode: WatchRevocations is open to anonymous callers")
	}

	gs := grpcserver.New(grpcserver.Options{
		Logger: logger, Registerer: reg, TLS: tlsCfg, Limits: limits,
		MaxRecvMsgSize: maxRequestSize,
		MaxConnections: cfg.MaxConnections, MaxStreamsPerConnection: cfg.MaxStreams,
	})
	gs.RegisterService(&sigilv1.TokenAuthorityService_ServiceDesc, srv)
	// Until Serve takes over, a failed start must release the server's
	// call workers (in-process runs: tests).
	serving := false
	closers = append(closers, func() {
		if !serving {
			gs.Shutdown(0)
		}
	})

	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	var metricsAddr net.Addr
	if cfg.MetricsListen != "" {
		ms, err := grpcserver.ListenMetrics(cfg.MetricsListen, reg, logger)
		if err != nil {
			lis.Close()
			return fmt.Errorf("metrics listen %s: %w", cfg.MetricsListen, err)
		}
		metricsAddr = ms.Addr()
		closers = append(closers, func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_ = ms.Close(ctx)
		})
		logger.Info("metrics listening", "addr", metricsAddr.String())
	}

	bg, stopBG := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	closers = append(closers, func() { stopBG(); wg.Wait() })
	runBackground(bg, &wg, st, srv, km, faults, reg, logger, cfg.EtcdLeaderTTL, append(hooks.jobs(), retentionJobs(st, cfg, reg, logger, faults.report)...)...)

	if cfg.WriteProbeInterval > 0 {
		wp := newWriteProbe(st.ProbeWrite, cfg.WriteProbeInterval, cfg.WriteProbeTimeout, logger, faults.stall, reg)
		wg.Add(1)
		go func() { defer wg.Done(); wp.run(bg) }()
	}

	serveErr := make(chan error, 1)
	serving = true
	go func() { serveErr <- gs.Serve(lis) }()
	// The gRPC server goes before the store, keys and metrics: its
	// closer runs first. stopCtx bounds the whole stop (set when it
	// begins; a stop after a serve error gets the timeout from then).
	stopped := false
	var stopCtx context.Context
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		ctx := stopCtx
		if ctx == nil {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
			defer cancel()
		}
		gs.SetServing(false)
		// New calls are refused at once; in-flight writes finish, then the
		// streams send what those writes committed before they end: every
		// open stream is waited for until it has sent a checkpoint at the
		// store's revision (DrainStreams), so a revocation a client saw
		// acknowledged reaches the connected authorizers. A stream that
		// cannot keep up (a stalled consumer) gets at most streamDrain.
		if err := gs.Stop(ctx, func() {
			drain := streamDrain
			if dl, ok := ctx.Deadline(); ok {
				drain = min(drain, time.Until(dl)/4)
			}
			dctx, cancel := context.WithTimeout(ctx, drain)
			rev := st.Revision()
			if behind := srv.DrainStreams(dctx, rev); behind > 0 {
				logger.Warn("revocation streams still behind the last acknowledged revision at the stop: their authorizers catch up on reconnecting",
					"streams", behind, "revision", rev, "waited", drain.String())
			}
			cancel()
			srv.Shutdown() // ends streams: GracefulStop does not cancel them
		}); err != nil {
			logger.Error("gRPC calls still running at the shutdown deadline", "error", err)
		}
	}
	closers = append(closers, stop)

	faults.serving(gs.SetServing)
	logger.Info("listening", "addr", lis.Addr().String(), "tls", tlsCfg != nil, "mtls", cfg.TLSClientCA != "",
		"operator_token_file", cfg.OperatorTokenFile, "watch_token_file", cfg.WatchTokenFile)
	if opts.Ready != nil {
		opts.Ready(lis.Addr(), metricsAddr)
	}

	select {
	case <-ctx.Done():
		logger.Info("shutting down", "timeout", cfg.ShutdownTimeout.String())
		start := time.Now()
		// One bound for the whole stop, the database's close included:
		// the closers run aside, and past the bound the process gives up,
		// says so and fails ("stopped" only when everything stopped).
		sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		stopCtx = sctx
		list := closers
		closers = nil
		done := make(chan struct{})
		go func() {
			for i := len(list) - 1; i >= 0; i-- {
				list[i]()
			}
			if opts.stopHook != nil {
				opts.stopHook()
			}
			close(done)
		}()
		select {
		case <-done:
		case <-sctx.Done():
			logger.Error("stop did not finish within --shutdown-timeout: exiting with work still running", "timeout", cfg.ShutdownTimeout.String())
			return fmt.Errorf("stop did not finish within --shutdown-timeout %s", cfg.ShutdownTimeout)
		}
		logger.Info("stopped", "took", time.Since(start).String())
		return nil
	case err := <-serveErr:
		if err != nil {
			return fmt.Errorf("serve: %w", err)
		}
		return nil
	}
}
