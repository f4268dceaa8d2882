package server

import (
	"context"
	"fmt"
	"log/slog"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// TestStoreErrorsMapToCodes: storage that cannot answer is UNAVAILABLE,
// a change too large for it FAILED_PRECONDITION, never INTERNAL.
func TestStoreErrorsMapToCodes(t *testing.T) {
	s := &Server{logger: slog.New(slog.DiscardHandler)}
	for _, tc := range []struct {
		err  error
		want codes.Code
	}{
		{fmt.Errorf("revoke: %w", store.ErrUnavailable), codes.Unavailable},
		{fmt.Errorf("revoke tokens: %w", store.ErrTooLarge), codes.FailedPrecondition},
		{store.ErrClosed, codes.Unavailable},
		{fmt.Errorf("create: %w: %w", store.ErrUnavailable, store.ErrDiskFull), codes.Unavailable},
		{fmt.Errorf("create: %w: %w", store.ErrUnavailable, store.ErrReadOnly), codes.Unavailable},
		{fmt.Errorf("create: %w: %w", store.ErrUnavailable, store.ErrWritesStalled), codes.Unavailable},
		{fmt.Errorf("boom"), codes.Internal},
	} {
		if got := status.Code(s.toStatus(context.Background(), tc.err)); got != tc.want {
			t.Errorf("%v → %v, want %v", tc.err, got, tc.want)
		}
	}
}
