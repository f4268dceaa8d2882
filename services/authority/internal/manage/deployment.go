package manage

import (
	"context"
	"fmt"
	"time"

	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// ListAudit lists an organization's audit log, oldest first, for a caller
// that may manage its tokens.
func (m *Manager) ListAudit(ctx context.Context, c *Caller, f store.AuditFilter) ([]store.AuditRecord, string, error) {
	if err := m.Admit(c, AccessManage); err != nil {
		return nil, "", err
	}
	if err := c.CanManage(f.OrgID); err != nil {
		return nil, "", err
	}
	return m.store.ListAudit(ctx, f)
}

// ListPermissions returns the permission catalog to the operator and to
// any PAT.
func (m *Manager) ListPermissions(c *Caller) ([]scope.Permission, error) {
	if err := m.Admit(c, AccessManage); err != nil {
		return nil, err
	}
	return m.catalog.Permissions(), nil
}

// Watch checks that the caller may watch revocations.
func (m *Manager) Watch(c *Caller) error { return m.Admit(c, AccessWatch) }

// ConfirmHistory checks that the caller may ask whether a point of history
// is the store's (an authorizer's freshness probe): the same callers as
// Watch.
func (m *Manager) ConfirmHistory(c *Caller) error { return m.Admit(c, AccessWatch) }

// RotateSigningKey adds a pending key (operator only).
func (m *Manager) RotateSigningKey(ctx context.Context, c *Caller) (store.Key, uint64, error) {
	if err := m.Admit(c, AccessOperator); err != nil {
		return store.Key{}, 0, err
	}
	return m.keys.Rotate(ctx, c.Actor())
}

// RevokeSigningKey revokes a key at once (operator only).
func (m *Manager) RevokeSigningKey(ctx context.Context, c *Caller, keyID string) (uint64, error) {
	if err := m.Admit(c, AccessOperator); err != nil {
		return 0, err
	}
	return m.keys.Revoke(ctx, keyID, c.Actor())
}

// CutSigningKey revokes the tokens a key signed after issuedAfter
// (operator only): the key stops signing, older tokens keep verifying.
func (m *Manager) CutSigningKey(ctx context.Context, c *Caller, keyID string, issuedAfter time.Time) (uint64, error) {
	if err := m.Admit(c, AccessOperator); err != nil {
		return 0, err
	}
	return m.keys.Cut(ctx, keyID, issuedAfter, c.Actor())
}

// ListSigningKeys returns the public halves of the keys (operator only).
func (m *Manager) ListSigningKeys(c *Caller) ([]store.Key, error) {
	if err := m.Admit(c, AccessOperator); err != nil {
		return nil, err
	}
	return m.keys.List(), nil
}

// RunCompaction compacts the event log at once and then every interval
// until ctx ends: events no follower needs (revocations of tokens expired
// more than ExpiryMargin ago, token creations) are dropped.
func (m *Manager) RunCompaction(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		rev, err := m.store.Compact(ctx, m.now().Add(-ExpiryMargin))
		if err != nil && ctx.Err() == nil {
			m.logger.Error("compaction failed", "error", fmt.Sprint(err))
		} else if err == nil {
			m.logger.Debug("compacted event log", "revision", rev)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
