package server

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sigil-auth/sigil/services/authority/internal/keys"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// Errors of the server's own rules, mapped by toStatus.
var (
	errUnauthenticated = errors.New("missing or invalid credential")
	errDenied          = errors.New("permission denied")
)

// toStatus maps a domain error to a gRPC status. Store and key errors are
// matched with errors.Is; handlers wrap them with what they concern (ids
// and names, never secrets). Anything unknown is logged by the caller's
// logging interceptor as Internal with a generic message.
func (s *Server) toStatus(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	// Client-visible messages name the thing (ids, never secrets) without
	// the packages' prefixes.
	msg := strings.NewReplacer("store: ", "", "keys: ", "").Replace(err.Error())
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "call cancelled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	case errors.Is(err, errUnauthenticated):
		return status.Error(codes.Unauthenticated, err.Error())
	case errors.Is(err, errDenied):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, store.ErrNotFound):
		return status.Error(codes.NotFound, msg)
	case errors.Is(err, store.ErrNameTaken), errors.Is(err, store.ErrTokenExists), errors.Is(err, store.ErrKeyExists):
		return status.Error(codes.AlreadyExists, msg)
	case errors.Is(err, store.ErrNotActive), errors.Is(err, store.ErrKeyRevoked):
		return status.Error(codes.FailedPrecondition, msg)
	case errors.Is(err, keys.ErrNoActiveKey):
		return status.Error(codes.Unavailable, "no active signing key yet (a new key is being announced); retry shortly")
	case errors.Is(err, store.ErrClosed), errors.Is(err, store.ErrLocked):
		return status.Error(codes.Unavailable, "authority is shutting down")
	}
	s.logger.ErrorContext(ctx, "internal error", "error", err)
	return status.Error(codes.Internal, "internal error")
}

// denied returns a PERMISSION_DENIED error with a reason.
func denied(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errDenied, fmt.Sprintf(format, args...))
}

// violations collects bad fields of a request.
type violations struct {
	list []*errdetails.BadRequest_FieldViolation
}

func (v *violations) add(field, format string, args ...any) {
	v.list = append(v.list, &errdetails.BadRequest_FieldViolation{Field: field, Description: fmt.Sprintf(format, args...)})
}

// err returns INVALID_ARGUMENT naming every bad field, with a
// google.rpc.BadRequest detail, or nil when there is none.
func (v *violations) err() error {
	if len(v.list) == 0 {
		return nil
	}
	msg := ""
	for i, f := range v.list {
		if i > 0 {
			msg += "; "
		}
		msg += f.Field + ": " + f.Description
	}
	st := status.New(codes.InvalidArgument, "invalid argument: "+msg)
	if d, err := st.WithDetails(&errdetails.BadRequest{FieldViolations: v.list}); err == nil {
		st = d
	}
	return st.Err()
}

// invalid returns INVALID_ARGUMENT for one field.
func invalid(field, format string, args ...any) error {
	var v violations
	v.add(field, format, args...)
	return v.err()
}

// errorf wraps a sentinel with a message.
func errorf(sentinel error, format string, args ...any) error {
	return &msgError{sentinel: sentinel, msg: fmt.Sprintf(format, args...)}
}

// msgError is a sentinel error with its own message.
type msgError struct {
	sentinel error
	msg      string
}

func (e *msgError) Error() string { return e.msg }
func (e *msgError) Unwrap() error { return e.sentinel }
