package app

import (
	"context"
	"fmt"
	"time"

	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// errWritesStalled is what a management write gets while writes are
// stalled: UNAVAILABLE at once, with a hint, rather than a call that
// queues behind the stalled commit until its caller's deadline.
var errWritesStalled = fmt.Errorf("%w: %w", store.ErrUnavailable, store.ErrWritesStalled)

// gatedStore is the store the management RPCs use: while stalled reports
// true (the write probe finds that writes do not commit), their mutations
// are refused without being tried, so that nothing queues behind a hung
// disk. Reads, the revocation streams and the background jobs (which use
// the store directly) are unaffected.
type gatedStore struct {
	store.Store
	stalled func() bool
}

func (g gatedStore) check() error {
	if g.stalled() {
		return errWritesStalled
	}
	return nil
}

func (g gatedStore) CreateToken(ctx context.Context, t store.Token, a store.AuditRecord) (uint64, error) {
	if err := g.check(); err != nil {
		return 0, err
	}
	return g.Store.CreateToken(ctx, t, a)
}

func (g gatedStore) RevokeToken(ctx context.Context, id string, a store.AuditRecord) (store.Token, uint64, int64, error) {
	if err := g.check(); err != nil {
		return store.Token{}, 0, 0, err
	}
	return g.Store.RevokeToken(ctx, id, a)
}

func (g gatedStore) RevokeTokens(ctx context.Context, orgID, createdBy string, a store.AuditRecord) (int64, uint64, error) {
	if err := g.check(); err != nil {
		return 0, 0, err
	}
	return g.Store.RevokeTokens(ctx, orgID, createdBy, a)
}

func (g gatedStore) RevokeUnrecorded(ctx context.Context, t store.Token, a store.AuditRecord) (uint64, bool, error) {
	if err := g.check(); err != nil {
		return 0, false, err
	}
	return g.Store.RevokeUnrecorded(ctx, t, a)
}

func (g gatedStore) RotateToken(ctx context.Context, oldID string, next store.Token, a store.AuditRecord) (uint64, int64, error) {
	if err := g.check(); err != nil {
		return 0, 0, err
	}
	return g.Store.RotateToken(ctx, oldID, next, a)
}

func (g gatedStore) RevokeKey(ctx context.Context, id string, a store.AuditRecord) (uint64, error) {
	if err := g.check(); err != nil {
		return 0, err
	}
	return g.Store.RevokeKey(ctx, id, a)
}

func (g gatedStore) CutKey(ctx context.Context, id string, issuedAfter time.Time, a store.AuditRecord) (uint64, error) {
	if err := g.check(); err != nil {
		return 0, err
	}
	return g.Store.CutKey(ctx, id, issuedAfter, a)
}

func (g gatedStore) RecordTokenUse(ctx context.Context, uses []store.TokenUse) (int, error) {
	if err := g.check(); err != nil {
		return 0, err
	}
	return g.Store.RecordTokenUse(ctx, uses)
}

// CurrentRevision reads the committed revision through the wrapped store
// (an etcd replica reads it from etcd, not from its watch), so that
// ConfirmHistory answers the same through the gate.
func (g gatedStore) CurrentRevision(ctx context.Context) (uint64, error) {
	return store.CurrentRevision(ctx, g.Store)
}

var _ store.CurrentReader = gatedStore{}
