package grpcserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// accessLog writes one line per finished call, at the level its code calls
// for (codeToLevel), and does nothing else for a call whose level is
// disabled: on a busy authorizer every allowed or denied check ends OK, at
// debug level, so the common call pays for one level check, not for
// fields, a request id and a response header it would never use.
//
// A logged call carries a request id: the caller's x-request-id when it is
// a plain one (validRequestID), else a new random one, which is sent back
// in the x-request-id trailer so that the caller can quote it. Payloads and
// metadata are never logged, so no credential reaches the log.
type accessLog struct {
	logger *slog.Logger
}

// unaryDone logs a finished unary call that started at start; a call whose
// level is disabled costs one level check.
func (a accessLog) unaryDone(ctx context.Context, fullMethod string, start time.Time, err error) {
	if !a.logger.Enabled(ctx, codeToLevel(status.Code(err))) {
		return
	}
	a.finish(ctx, fullMethod, "unary", start, err, func(md metadata.MD) { _ = grpc.SetTrailer(ctx, md) })
}

func (a accessLog) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	start := time.Now()
	err := handler(srv, ss)
	kind := "server_stream"
	switch {
	case info.IsClientStream && info.IsServerStream:
		kind = "bidi_stream"
	case info.IsClientStream:
		kind = "client_stream"
	}
	a.finish(ss.Context(), info.FullMethod, kind, start, err, ss.SetTrailer)
	return err
}

func (a accessLog) finish(ctx context.Context, fullMethod, kind string, start time.Time, err error, setTrailer func(metadata.MD)) {
	code := status.Code(err)
	level := codeToLevel(code)
	if !a.logger.Enabled(ctx, level) {
		return
	}
	id, made := requestID(ctx)
	if made {
		setTrailer(metadata.Pairs(RequestIDHeader, id))
	}
	service, method := splitMethod(fullMethod)
	attrs := make([]slog.Attr, 0, 7)
	attrs = append(attrs,
		slog.String("grpc.service", service),
		slog.String("grpc.method", method),
		slog.String("grpc.method_type", kind),
		slog.String("grpc.code", code.String()),
		slog.Float64("grpc.time_ms", float64(time.Since(start).Microseconds())/1000),
		slog.String("request_id", id),
	)
	if err != nil {
		// The status message: handlers never put a secret or a request
		// value in it.
		attrs = append(attrs, slog.String("grpc.error", status.Convert(err).Message()))
	}
	a.logger.LogAttrs(ctx, level, "finished call", attrs...)
}

// codeToLevel logs successful and expected outcomes at debug level, so a
// busy authorizer does not write a line per check, and server faults at error.
func codeToLevel(code codes.Code) slog.Level {
	switch code {
	case codes.OK, codes.NotFound, codes.Canceled, codes.AlreadyExists, codes.InvalidArgument, codes.FailedPrecondition:
		return slog.LevelDebug
	case codes.Unauthenticated, codes.PermissionDenied, codes.ResourceExhausted, codes.DeadlineExceeded, codes.Unavailable, codes.OutOfRange, codes.Aborted:
		return slog.LevelInfo
	default:
		return slog.LevelError
	}
}

// requestID returns the caller's x-request-id when it is a plain one, or a
// new random id (made true).
func requestID(ctx context.Context) (id string, made bool) {
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(RequestIDHeader); len(v) == 1 && validRequestID(v[0]) {
			return v[0], false
		}
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:]), true
}

// splitMethod splits "/pkg.Service/Method".
func splitMethod(full string) (service, method string) {
	full = strings.TrimPrefix(full, "/")
	if i := strings.LastIndexByte(full, '/'); i >= 0 {
		return full[:i], full[i+1:]
	}
	return "unknown", full
}
