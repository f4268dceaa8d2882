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
	"github.com/sigil-auth/sigil/services/authority/internal/manage"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// toStatus maps an error of package manage, the store or the keys to a
// gRPC status, with errors.Is. Client messages name the thing and the rule,
// never a request value: rule errors (manage) are written that way, and
// store and key errors, which may quote ids and names, get a fixed message
// per sentinel. Anything unknown is logged and is Internal with a generic
// message.
func (s *Server) toStatus(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var fe *manage.FieldError
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "call cancelled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	case errors.Is(err, manage.ErrUnauthenticated):
		return status.Error(codes.Unauthenticated, strings.TrimPrefix(err.Error(), "manage: "))
	case errors.Is(err, manage.ErrPermissionDenied):
		return status.Error(codes.PermissionDenied, strings.TrimPrefix(err.Error(), "manage: "))
	case errors.As(err, &fe):
		return invalid(fe.Field, "%s", fe.Reason)
	case errors.Is(err, store.ErrBadPageToken):
		return invalid("page_token", "not a page token from a previous response")
	case errors.Is(err, store.ErrNotFound):
		return status.Error(codes.NotFound, "not found")
	case errors.Is(err, store.ErrNameTaken):
		return status.Error(codes.AlreadyExists, "name is taken by a live token of the organization")
	case errors.Is(err, store.ErrTokenExists), errors.Is(err, store.ErrKeyExists):
		return status.Error(codes.AlreadyExists, "already exists")
	case errors.Is(err, store.ErrNotActive):
		return status.Error(codes.FailedPrecondition, "token is not active (revoked or expired)")
	case errors.Is(err, store.ErrKeyRevoked):
		return status.Error(codes.FailedPrecondition, "signing key is revoked")
	case errors.Is(err, keys.ErrNoActiveKey):
		return status.Error(codes.Unavailable, "no active signing key yet (a new key is being announced); retry shortly")
	case errors.Is(err, store.ErrClosed), errors.Is(err, store.ErrLocked):
		return status.Error(codes.Unavailable, "authority is shutting down")
	case errors.Is(err, store.ErrDiskFull):
		s.logger.ErrorContext(ctx, "store write refused: the disk is full", "error", err)
		return status.Error(codes.Unavailable, "token store unavailable: its disk is full; nothing was written; retry once the operator has freed space")
	case errors.Is(err, store.ErrReadOnly):
		s.logger.ErrorContext(ctx, "store write refused: the disk is read-only", "error", err)
		return status.Error(codes.Unavailable, "token store unavailable: its disk is read-only; nothing was written; retry once the operator has fixed the disk")
	case errors.Is(err, store.ErrWritesStalled):
		return status.Error(codes.Unavailable, "token store writes are stalled (a hung disk, or etcd without quorum): nothing was written; retry once the operator has fixed it")
	case errors.Is(err, store.ErrUnavailable):
		// The storage cluster has no quorum or cannot be reached: the
		// write may or may not have been committed, so say how to find out.
		s.logger.WarnContext(ctx, "store unavailable", "error", err)
		return status.Error(codes.Unavailable, "token store unavailable (no quorum or unreachable); retry: a repeated revoke is harmless, and a repeated create answers ALREADY_EXISTS if the first one was committed")
	case errors.Is(err, store.ErrTooLarge):
		return status.Error(codes.FailedPrecondition, "the change is too large for the token store in one step (over about 20,000 tokens at once); revoke by creator or in smaller groups")
	}
	s.logger.ErrorContext(ctx, "internal error", "error", err)
	return status.Error(codes.Internal, "internal error")
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
