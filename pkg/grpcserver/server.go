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
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
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

// DefaultMaxRecvMsgSize bounds every request message. Sigil requests are
// small; a large bound only helps an attacker.
const DefaultMaxRecvMsgSize = 1 << 20

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
	MaxRecvMsgSize int
}

// Server is a gRPC server with Sigil's interceptor chain, health and
// reflection registered. Health starts NOT_SERVING.
type Server struct {
	grpc    *grpc.Server
	health  *health.Server
	logger  *slog.Logger
	metrics *grpcprom.ServerMetrics // nil without a Registerer

	initMetrics sync.Once
}

// New builds a server. The interceptor chain, in order:
//
//  1. recovery: a panic becomes codes.Internal (and is logged), so no panic
//     can turn into an answer; a second recovery sits right before the
//     handler so that the inner layers log and count it;
//  2. request id: taken from x-request-id or made, echoed in the response
//     header and added to the log line;
//  3. logging: one line per finished call, without payloads or metadata;
//  4. metrics: counts and latencies by method and code;
//  5. recovery again, right before the handler.
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
	rec := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		logger.ErrorContext(ctx, "panic in handler", "panic", describePanic(p), "stack", string(debug.Stack()))
		return status.Error(codes.Internal, "internal error")
	})
	logOpts := []logging.Option{
		logging.WithLogOnEvents(logging.FinishCall),
		logging.WithLevels(codeToLevel),
	}
	unary := []grpc.UnaryServerInterceptor{
		recovery.UnaryServerInterceptor(rec),
		requestIDUnary,
		logging.UnaryServerInterceptor(slogAdapter(logger), logOpts...),
	}
	stream := []grpc.StreamServerInterceptor{
		recovery.StreamServerInterceptor(rec),
		requestIDStream,
		logging.StreamServerInterceptor(slogAdapter(logger), logOpts...),
	}
	var metrics *grpcprom.ServerMetrics
	if opts.Registerer != nil {
		metrics = grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
			grpcprom.WithHistogramBuckets([]float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}),
		))
		opts.Registerer.MustRegister(metrics)
		unary = append(unary, metrics.UnaryServerInterceptor())
		stream = append(stream, metrics.StreamServerInterceptor())
	}
	// A second recovery right before the handler, so that a handler's panic
	// is logged with its request id and counted as Internal by the metrics.
	unary = append(unary, recovery.UnaryServerInterceptor(rec))
	stream = append(stream, recovery.StreamServerInterceptor(rec))

	serverOpts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
		grpc.MaxRecvMsgSize(maxRecv),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             5 * time.Second,
			PermitWithoutStream: true,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    30 * time.Second,
			Timeout: 10 * time.Second,
		}),
	}
	if opts.TLS != nil {
		serverOpts = append(serverOpts, grpc.Creds(credentials.NewTLS(opts.TLS)))
	}
	s := &Server{
		grpc:    grpc.NewServer(serverOpts...),
		health:  health.NewServer(),
		logger:  logger,
		metrics: metrics,
	}
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	return s
}

// RegisterService registers a service implementation; call before Serve.
// The service's health status starts NOT_SERVING.
func (s *Server) RegisterService(desc *grpc.ServiceDesc, impl any) {
	s.grpc.RegisterService(desc, impl)
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

// Serve serves on lis until Shutdown. It returns nil after a Shutdown.
// The first call gives every method of every registered service its zero
// series, so dashboards and alerts see a method before its first call.
func (s *Server) Serve(lis net.Listener) error {
	s.initMetrics.Do(func() {
		if s.metrics != nil {
			s.metrics.InitializeMetrics(s.grpc)
		}
	})
	err := s.grpc.Serve(lis)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Shutdown reports NOT_SERVING, then stops gracefully: it waits for
// in-flight calls and streams for at most timeout, then closes what is left.
// Stream handlers must end on a shutdown signal of their own: grpc-go does
// not cancel them.
func (s *Server) Shutdown(timeout time.Duration) {
	s.health.Shutdown()
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.logger.Warn("graceful stop timed out, closing remaining calls", "timeout", timeout)
		s.grpc.Stop()
		// Stop cancels every call; a handler that ignores its context can
		// still hold GracefulStop, so the wait stays bounded.
		select {
		case <-done:
		case <-time.After(time.Second):
			s.logger.Error("handlers still running after stop")
		}
	}
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

// codeToLevel logs successful and expected outcomes at debug level, so a
// busy authorizer does not write a line per check, and server faults at error.
func codeToLevel(code codes.Code) logging.Level {
	switch code {
	case codes.OK, codes.NotFound, codes.Canceled, codes.AlreadyExists, codes.InvalidArgument, codes.FailedPrecondition:
		return logging.LevelDebug
	case codes.Unauthenticated, codes.PermissionDenied, codes.ResourceExhausted, codes.DeadlineExceeded, codes.Unavailable, codes.OutOfRange, codes.Aborted:
		return logging.LevelInfo
	default:
		return logging.LevelError
	}
}

// slogAdapter turns a slog.Logger into the middleware's logger, checking the
// level first so that disabled lines cost little.
func slogAdapter(l *slog.Logger) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		level := slog.Level(lvl)
		if !l.Enabled(ctx, level) {
			return
		}
		l.Log(ctx, level, msg, fields...)
	})
}
