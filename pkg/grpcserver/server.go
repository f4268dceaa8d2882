// Package grpcserver is the server bootstrap both Sigil services share: the
// interceptor chain, health, reflection, keepalive, metrics and a bounded
// graceful stop.
package grpcserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
)

// DefaultMaxRecvMsgSize bounds every request message when a service names
// no bound of its own. Sigil requests are small; a large bound only helps an
// attacker, so each service sets MaxRecvMsgSize to its largest legitimate
// request.
const DefaultMaxRecvMsgSize = 64 << 10

// DefaultMaxConnectionIdle closes a connection without calls for this long,
// so that idle clients do not hold a connection slot forever.
const DefaultMaxConnectionIdle = 5 * time.Minute

// Options configures a Server.
type Options struct {
	// Logger receives one line per finished call (method, code, duration,
	// request id) and panics. Payloads and metadata are never logged, so no
	// credential reaches the log.
	Logger *slog.Logger
	// Registerer receives the per-method RPC metrics. Nil disables them.
	Registerer prometheus.Registerer
	// TLS, when set, serves TLS (mTLS when it requires client certificates).
	TLS *tls.Config
	// MaxRecvMsgSize bounds request messages; DefaultMaxRecvMsgSize when 0.
	// Set it to the largest legitimate request of the service.
	MaxRecvMsgSize int
	// MethodMaxRecvSize narrows the bound per full method name
	// ("/pkg.Service/Method"): a larger request is RESOURCE_EXHAUSTED.
	MethodMaxRecvSize map[string]int
	// MaxConnections bounds the open connections Serve accepts;
	// DefaultMaxConnections when 0. Beyond it a connection is closed at once.
	MaxConnections int
	// MaxStreamsPerConnection bounds the concurrent calls of one connection;
	// DefaultMaxStreamsPerConnection when 0.
	MaxStreamsPerConnection int
	// MaxConnectionIdle closes a connection without calls after this long;
	// DefaultMaxConnectionIdle when 0. Half-open connections are reaped by
	// keepalive pings (every 30 s, 10 s to answer).
	MaxConnectionIdle time.Duration
	// Limits counts refusals (sigil_limit_exceeded_total). When nil, one is
	// made and registered on Registerer; get it with Server.Limits to share
	// it with the service's own bounds.
	Limits *Limits
}

// Server is a gRPC server with Sigil's interceptor chain, health and
// reflection registered. Health starts NOT_SERVING.
type Server struct {
	grpc    *grpc.Server
	health  *health.Server
	logger  *slog.Logger
	access  accessLog
	limits  *Limits
	maxConn int

	rpc           *rpcMetrics        // nil without a Registerer
	methodMaxRecv map[string]int     // per-method bounds, by full method
	methods       map[string]*method // resolved by Serve, then only read

	lisMu sync.Mutex
	lis   *limitListener // set by Serve

	initMetrics sync.Once
	creds       *loggedCreds // nil without TLS
	tls         *tls.Config  // nil without TLS; its certificate's expiry is watched while serving

	unaryInFlight atomic.Int64 // unary calls running (Server.unary)
	stopping      atomic.Bool  // set by Stop: unary calls starting now are refused
}

// New builds a server. The interceptor chain, in order:
//
//  1. recovery: a panic becomes codes.Internal (and is logged), so no panic
//     can turn into an answer; a second recovery sits right before the
//     handler so that the inner layers log and count it;
//  2. access log: one line per finished call whose level is enabled (not
//     OK calls, at debug), with a request id (the caller's x-request-id or
//     a new one, sent back in the x-request-id trailer), without payloads
//     or metadata; a call that is not logged costs one level check;
//  3. metrics: counts and latencies by method and code;
//  4. the per-method request size bound, when set;
//  5. recovery again, right before the handler.
//
// For unary calls the five run as one interceptor (chain.go). Requests
// over MaxRecvMsgSize, which grpc-go refuses while decoding them, are
// counted as LimitMessageSize.
//
// Calls run on a pool of workers that New starts: Shutdown or Stop
// releases them, also for a server that never served.
//
// Authentication is not an interceptor: each handler states which callers
// it admits, after validating its request.
func New(opts Options) *Server {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	maxRecv := opts.MaxRecvMsgSize
	if maxRecv == 0 {
		maxRecv = DefaultMaxRecvMsgSize
	}
	maxStreams := opts.MaxStreamsPerConnection
	if maxStreams <= 0 {
		maxStreams = DefaultMaxStreamsPerConnection
	}
	maxIdle := opts.MaxConnectionIdle
	if maxIdle <= 0 {
		maxIdle = DefaultMaxConnectionIdle
	}
	limits := opts.Limits
	if limits == nil {
		limits = NewLimits(opts.Registerer)
	}
	s := &Server{logger: logger, limits: limits, access: accessLog{logger: logger}}
	rec := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error { return s.recovered(ctx, p) })
	stream := []grpc.StreamServerInterceptor{
		recovery.StreamServerInterceptor(rec),
		connStream(s.listener),
		s.access.stream,
		// Metrics, and the count of messages grpc-go refuses as too large.
		s.observeStream,
		recovery.StreamServerInterceptor(rec),
	}
	if opts.Registerer != nil {
		s.rpc = newRPCMetrics()
		opts.Registerer.MustRegister(s.rpc)
	}
	for name, max := range opts.MethodMaxRecvSize {
		if s.methodMaxRecv == nil {
			s.methodMaxRecv = map[string]int{}
		}
		s.methodMaxRecv[name] = max
	}

	serverOpts := []grpc.ServerOption{
		grpc.UnaryInterceptor(s.unary),
		grpc.ChainStreamInterceptor(stream...),
		grpc.MaxRecvMsgSize(maxRecv),
		grpc.MaxConcurrentStreams(uint32(maxStreams)),
		// Calls run on long-lived workers whose stacks have grown to what a
		// call needs, instead of a new goroutine per call that grows its
		// stack (copying it) on every call: in a profile of the authorizer
		// under load the stack growth was 15 % of its CPU. When every
		// worker is busy a call still gets a goroutine of its own, so long
		// streams cannot starve unary calls.
		grpc.NumStreamWorkers(uint32(streamWorkers(maxStreams))),
		// A client pinging more often than every 5 s gets GOAWAY.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             5 * time.Second,
			PermitWithoutStream: true,
		}),
		// Idle connections are closed after MaxConnectionIdle; a connection
		// whose peer vanished (half-open) fails the ping every 30 s within
		// 10 s and is closed.
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: maxIdle,
			Time:              30 * time.Second,
			Timeout:           10 * time.Second,
		}),
	}
	if opts.TLS != nil {
		s.creds = newLoggedCreds(credentials.NewTLS(opts.TLS), logger, opts.Registerer)
		watchCertExpiry(opts.TLS, CertServer, logger, opts.Registerer, time.Now())
		s.tls = opts.TLS
		serverOpts = append(serverOpts, grpc.Creds(s.creds))
	}
	s.grpc = grpc.NewServer(serverOpts...)
	s.health = health.NewServer()
	s.maxConn = opts.MaxConnections
	if s.maxConn <= 0 {
		s.maxConn = DefaultMaxConnections
	}
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(registrar{s}, s.health)
	reflection.Register(registrar{s})
	return s
}

// maxStreamWorkers bounds the workers that run calls.
const maxStreamWorkers = 256

// streamWorkers is the number of workers that run calls: as many as one
// connection may run calls at once (at most maxStreamWorkers), so that a
// burst of calls on a connection still finds workers waiting; fewer left
// most calls to new goroutines. An idle worker costs its stack.
func streamWorkers(maxStreams int) int { return min(maxStreams, maxStreamWorkers) }

// listener returns the listener Serve wraps, nil before Serve.
func (s *Server) listener() *limitListener {
	s.lisMu.Lock()
	defer s.lisMu.Unlock()
	return s.lis
}

// Limits returns the refusal counter, to count a service's own bounds in
// the same metric.
func (s *Server) Limits() *Limits { return s.limits }

// RegisterService registers a service implementation; call before Serve.
// The service's health status starts NOT_SERVING.
func (s *Server) RegisterService(desc *grpc.ServiceDesc, impl any) {
	registrar{s}.RegisterService(desc, impl)
	s.health.SetServingStatus(desc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
}

// SetServing sets the health of the server and of every registered service.
func (s *Server) SetServing(serving bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus("", st)
	for name := range s.grpc.GetServiceInfo() {
		if name == healthpb.Health_ServiceDesc.ServiceName {
			continue
		}
		s.health.SetServingStatus(name, st)
	}
}

// Serve serves on lis, at most MaxConnections at a time, until Shutdown. It
// returns nil after a Shutdown.
// The first call gives every method of every registered service its zero
// series, so dashboards and alerts see a method before its first call.
func (s *Server) Serve(lis net.Listener) error {
	s.initMetrics.Do(s.resolveMethods)
	ll := newLimitListener(lis, s.maxConn, s.limits)
	s.lisMu.Lock()
	s.lis = ll
	s.lisMu.Unlock()
	if s.tls != nil {
		// A long-running server warns again as its certificate nears
		// expiry (the alert on the gauge is the main signal).
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			t := time.NewTicker(time.Hour)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case now := <-t.C:
					warnCertExpiry(s.tls, CertServer, s.logger, now)
				}
			}
		}()
	}
	err := s.grpc.Serve(ll)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Shutdown reports NOT_SERVING, then stops gracefully: it waits for
// in-flight calls and streams for at most timeout, then closes what is left.
// Stream handlers must end on a shutdown signal of their own: grpc-go does
// not cancel them. It is Stop without a stream hook, logging its error.
func (s *Server) Shutdown(timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := s.Stop(ctx, nil); err != nil {
		s.logger.Error("handlers still running after stop", "error", err)
	}
}

// ErrStopTimeout is returned by Stop when calls are still running at its
// deadline.
var ErrStopTimeout = errors.New("grpcserver: calls still running at the shutdown deadline")

// Stop reports NOT_SERVING and stops within ctx's deadline: new calls are
// refused at once; when endStreams is set, it waits for the in-flight
// unary calls (so that every write a client sees acknowledged is done),
// then calls endStreams, where the service flushes and ends its streams
// (grpc-go does not cancel them); then it waits for the rest. A quarter of
// the time left (at most a second) is kept for the end: when the graceful
// part has not finished by then, every call is cancelled and the
// connections closed. It returns ErrStopTimeout when a handler still runs
// at the deadline (one that ignores its context).
func (s *Server) Stop(ctx context.Context, endStreams func()) error {
	// Refuse unary calls that start from now on, including those grpc-go
	// still delivers from connections that have not yet seen its GOAWAY:
	// otherwise one could be acknowledged after endStreams, its write
	// never reaching the streams. (Server.unary counts itself in flight
	// before it reads the flag, and waitUnary reads the count after it is
	// set: a call is either refused or waited for.)
	s.stopping.Store(true)
	s.health.Shutdown()
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	reserve := time.Second
	if dl, ok := ctx.Deadline(); ok {
		reserve = min(reserve, time.Until(dl)/4)
	}
	graceful, cancel := context.WithCancel(ctx)
	defer cancel()
	if dl, ok := ctx.Deadline(); ok {
		graceful, cancel = context.WithDeadline(ctx, dl.Add(-reserve))
		defer cancel()
	}
	if endStreams != nil {
		s.waitUnary(graceful)
		endStreams()
	}
	select {
	case <-done:
		return nil
	case <-graceful.Done():
	}
	s.logger.Warn("graceful stop timed out, closing remaining calls")
	s.grpc.Stop()
	// Stop cancels every call; a handler that ignores its context can
	// still hold GracefulStop, so the wait stays bounded.
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ErrStopTimeout
	}
}

// waitUnary waits until no unary call is in flight, or ctx is done.
func (s *Server) waitUnary(ctx context.Context) {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for s.unaryInFlight.Load() > 0 {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// recovered logs a panic (its stack, not its value) and returns the
// Internal error the caller gets instead of an answer.
func (s *Server) recovered(ctx context.Context, p any) error {
	s.logger.ErrorContext(ctx, "panic in handler", "panic", describePanic(p), "stack", string(debug.Stack()))
	return status.Error(codes.Internal, "internal error")
}

// describePanic names a panic without its value, which may hold request
// data: runtime errors (index out of range, nil dereference) are safe to
// print, anything else is reduced to its type.
func describePanic(p any) string {
	if err, ok := p.(runtime.Error); ok {
		return err.Error()
	}
	return fmt.Sprintf("panic of type %T", p)
}

// handshakeFailures is the TLS handshake failure counter (tests).
func (s *Server) handshakeFailures() prometheus.Counter {
	if s.creds == nil {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "none"})
	}
	return s.creds.failed
}
