package manage

import (
	"context"
	"crypto/ed25519"
	"errors"

	"github.com/sigil-auth/sigil/pkg/token"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// anyStateKeys lends the authority's keys to Verify as if none were
// revoked: RevokeTokenString asks only whether a token is ours, and a token
// of a revoked or cut key is ours all the same.
type anyStateKeys struct{ ks token.KeySet }

func (a anyStateKeys) Lookup(keyID string) (ed25519.PublicKey, bool, bool) {
	pub, _, ok := a.ks.Lookup(keyID)
	return pub, false, ok
}

// RevokeTokenString revokes the token tok, handed over as a string: the way
// to revoke a token the store has no record of, such as one minted after
// the backup a restored store was made from. Its signature must verify
// under one of the authority's keys (in any state), which proves the
// authority made it; then the caller must be allowed to manage the token's
// organization (the operator, or a PAT holding organization:tokens in it).
// A recorded token is revoked as RevokeToken does; an unrecorded one gets a
// revocation without a record (store.RevokeUnrecorded), audited, unless
// it has expired (more than ExpiryMargin ago: a token the retention purged
// is one): then nothing is written and the token comes back expired, not
// revoked. The string is neither stored nor logged nor put in an error.
//
// It returns the token (for an unrecorded one, what the token says), the
// revision at which it is revoked, the number of descendants the cascade
// revoked (none for an unrecorded token: nothing records its children) and
// whether this call revoked it.
func (m *Manager) RevokeTokenString(ctx context.Context, c *Caller, tok, reason string) (store.Token, uint64, int64, bool, error) {
	if err := m.Admit(c, AccessManage); err != nil {
		return store.Token{}, 0, 0, false, err
	}
	if c.Kind == PAT {
		// Before anything about the token: a caller without the right
		// learns nothing, not even whether the string is a token of ours.
		if err := c.CanManage(c.Token.OrgID); err != nil {
			return store.Token{}, 0, 0, false, err
		}
	}
	if len(tok) > token.MaxLen {
		return store.Token{}, 0, 0, false, &FieldError{Field: "token", Reason: "not a token signed by this authority"}
	}
	claims, err := m.codec.Verify(tok, anyStateKeys{m.keys})
	if err != nil || claims == nil {
		return store.Token{}, 0, 0, false, &FieldError{Field: "token", Reason: "not a token signed by this authority"}
	}
	if err := c.CanManage(claims.OrgID); err != nil {
		return store.Token{}, 0, 0, false, err
	}
	id := claims.ID.String()
	if _, err := m.store.GetToken(ctx, id); err == nil {
		return m.RevokeToken(ctx, c, Ref{ID: id}, reason)
	} else if !errors.Is(err, store.ErrNotFound) {
		return store.Token{}, 0, 0, false, err
	}
	now := m.now()
	t := store.Token{
		ID: id, OrgID: claims.OrgID, KeyID: claims.KeyID, Grants: claims.Grants,
		CreateTime: claims.IssuedAt, ExpireTime: claims.ExpiresAt,
	}
	if !t.ExpireTime.After(now.Add(-ExpiryMargin)) {
		// Expired (past every follower's leeway) and without a record, as
		// a token purged by the retention is: nothing can accept it, so
		// nothing is revoked; the answer says it is expired.
		return t, m.store.Revision(), 0, false, nil
	}
	rev, already, err := m.store.RevokeUnrecorded(ctx, t, store.AuditRecord{
		Time: now, Actor: c.Actor(), Action: store.AuditTokenRevoked, Reason: reason,
	})
	if errors.Is(err, store.ErrTokenExists) {
		// Recorded meanwhile (it cannot be minted twice, but a restore may
		// race): revoke the record.
		return m.RevokeToken(ctx, c, Ref{ID: id}, reason)
	}
	if err != nil {
		return store.Token{}, 0, 0, false, err
	}
	t.RevokeTime, t.RevokeReason, t.RevokeRev = now, reason, rev
	if m.logger != nil {
		m.logger.Info("token revoked by its string (no record)", "token_id", id, "org_id", claims.OrgID, "revision", rev, "actor", c.Actor())
	}
	return t, rev, 0, !already, nil
}
