package manage

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/pkg/token"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// NewToken is a validated request to mint a token: Grants are expanded and
// Expire lies within the deployment's bounds.
type NewToken struct {
	OrgID, Name, Description, CreatedBy string
	Grants                              []scope.Grant
	Expire                              time.Time
}

// CreateToken mints a token and returns its secret and row. From the
// operator, CreatedBy is required; from a PAT holding TokensPermission it is
// the calling token's creator (a different explicit value is denied), the
// new token's parent is the calling token, and grants and expiry may not
// exceed the caller's.
func (m *Manager) CreateToken(ctx context.Context, c *Caller, r NewToken) (string, store.Token, error) {
	if err := m.Admit(c, AccessManage); err != nil {
		return "", store.Token{}, err
	}
	if err := c.CanManage(r.OrgID); err != nil {
		return "", store.Token{}, err
	}
	createdBy, parent, err := c.creator(r)
	if err != nil {
		return "", store.Token{}, err
	}
	now := m.now()
	t := store.Token{
		OrgID: r.OrgID, Name: r.Name, Description: r.Description, Grants: r.Grants,
		CreatedBy: createdBy, ParentID: parent, CreateTime: now.Truncate(time.Second), ExpireTime: r.Expire,
	}
	secret, t, _, err := m.mintAndStore(t, func(t store.Token) (uint64, error) {
		return m.store.CreateToken(ctx, t, store.AuditRecord{
			Time: now, Actor: c.Actor(), OrgID: t.OrgID, Action: store.AuditTokenCreated,
			TokenID: t.ID, Name: t.Name, Grants: t.Grants,
		})
	})
	return secret, t, err
}

// creator returns the creator and parent of a token the caller mints.
func (c *Caller) creator(r NewToken) (createdBy, parent string, err error) {
	if c.Kind != PAT {
		if r.CreatedBy == "" {
			return "", "", &FieldError{Field: "created_by", Reason: "required when the operator mints"}
		}
		return r.CreatedBy, "", nil
	}
	if r.CreatedBy != "" && r.CreatedBy != c.Token.CreatedBy {
		return "", "", denied("a token mints only for its own creator")
	}
	if err := c.CheckNoEscalation(r.Grants, r.Expire); err != nil {
		return "", "", err
	}
	return c.Token.CreatedBy, c.Token.ID, nil
}

// mintAndStore signs t with the active key and stores it with save. When
// the key is revoked between the two, it retries once with the new key.
func (m *Manager) mintAndStore(t store.Token, save func(store.Token) (uint64, error)) (string, store.Token, uint64, error) {
	for attempt := 0; ; attempt++ {
		id, err := token.NewID()
		if err != nil {
			return "", t, 0, err
		}
		keyID, priv, err := m.keys.Signer()
		if err != nil {
			return "", t, 0, err
		}
		t.ID, t.KeyID = id.String(), keyID
		secret, err := m.codec.Mint(token.Claims{
			ID: id, OrgID: t.OrgID, KeyID: keyID, IssuedAt: t.CreateTime, ExpiresAt: t.ExpireTime, Grants: t.Grants,
		}, priv)
		if errors.Is(err, token.ErrTooLong) {
			// The caller asked for more grants than a token can carry: its
			// mistake, named before anything is stored.
			return "", t, 0, &FieldError{Field: "grants", Reason: fmt.Sprintf("too many or too long: the token would exceed %d bytes", token.MaxLen)}
		}
		if err != nil {
			return "", t, 0, err
		}
		rev, err := save(t)
		if errors.Is(err, store.ErrKeyRevoked) && attempt == 0 {
			continue
		}
		if err != nil {
			return "", t, 0, err
		}
		return secret, t, rev, nil
	}
}

// GetToken returns the token ref names, if the caller may see it.
func (m *Manager) GetToken(ctx context.Context, c *Caller, ref Ref) (store.Token, error) {
	return m.target(ctx, c, ref)
}

// ListTokens lists an organization's tokens, for a caller that may manage
// them.
func (m *Manager) ListTokens(ctx context.Context, c *Caller, f store.ListFilter) ([]store.Token, string, error) {
	if err := m.Admit(c, AccessManage); err != nil {
		return nil, "", err
	}
	if err := c.CanManage(f.OrgID); err != nil {
		return nil, "", err
	}
	return m.store.ListTokens(ctx, f)
}

// RevokeToken revokes the token ref names, and every unrevoked token minted
// through it, transitively (store.Bolt.RevokeToken), whatever their
// creator: a descendant is as much the holder's doing as the token itself.
// It returns the token, the revision at which all are revoked and the
// number of descendants revoked; revoked is false when the token was
// already revoked (the original revocation is returned).
func (m *Manager) RevokeToken(ctx context.Context, c *Caller, ref Ref, reason string) (t store.Token, rev uint64, descendants int64, revoked bool, err error) {
	t, err = m.target(ctx, c, ref)
	if err != nil {
		return store.Token{}, 0, 0, false, err
	}
	wasRevoked := !t.RevokeTime.IsZero()
	id := t.ID
	t, rev, descendants, err = m.store.RevokeToken(ctx, id, store.AuditRecord{
		Time: m.now(), Actor: c.Actor(), OrgID: t.OrgID, Action: store.AuditTokenRevoked,
		TokenID: id, Name: t.Name, Grants: t.Grants, Reason: reason,
	})
	if err != nil {
		return store.Token{}, 0, 0, false, err
	}
	return t, rev, descendants, !wasRevoked && t.RevokeRev == rev, nil
}

// RevokeTokens revokes, atomically, every live token of org, or only those
// made for createdBy when it is set, for a caller that may manage them, and
// the unrevoked tokens minted through them; the count includes those.
func (m *Manager) RevokeTokens(ctx context.Context, c *Caller, org, createdBy, reason string) (int64, uint64, error) {
	if err := m.Admit(c, AccessManage); err != nil {
		return 0, 0, err
	}
	if err := c.CanManage(org); err != nil {
		return 0, 0, err
	}
	return m.store.RevokeTokens(ctx, org, createdBy, store.AuditRecord{
		Time: m.now(), Actor: c.Actor(), OrgID: org, Action: store.AuditTokensRevoked, Reason: reason,
	})
}

// RotateToken mints a new secret with the same name, description, grants
// and creator as the token ref names, expiring at expire, and revokes the
// old token in the same transaction. Callers as for RevokeToken; a PAT
// caller gets the new secret, so the rotated token's grants must be within
// its own and expire no later than its own (a token rotating itself cannot
// extend its life). The new token's parent is the calling PAT, or the old
// token's parent when the operator rotates or a PAT rotates itself: never
// the old token, whose descendants the rotation revokes (the cascade, as in
// RevokeToken; descendants is their number). A PAT minted through the old
// token, which the rotation would revoke, may not rotate it.
func (m *Manager) RotateToken(ctx context.Context, c *Caller, ref Ref, expire time.Time) (secret string, next store.Token, rev uint64, descendants int64, err error) {
	old, err := m.target(ctx, c, ref)
	if err != nil {
		return "", store.Token{}, 0, 0, err
	}
	if err := c.CheckNoEscalation(old.Grants, expire); err != nil {
		return "", store.Token{}, 0, 0, err
	}
	now := m.now()
	if old.StateAt(now) != store.StateActive {
		return "", store.Token{}, 0, 0, fmt.Errorf("token %s: %w", old.ID, store.ErrNotActive)
	}
	parent := old.ParentID
	if c.Kind == PAT && c.Token.ID != old.ID {
		if err := m.checkNotDescendant(ctx, c.Token, old.ID); err != nil {
			return "", store.Token{}, 0, 0, err
		}
		parent = c.Token.ID
	}
	next = store.Token{
		OrgID: old.OrgID, Name: old.Name, Description: old.Description, Grants: old.Grants,
		CreatedBy: old.CreatedBy, ParentID: parent, CreateTime: now.Truncate(time.Second), ExpireTime: expire,
	}
	secret, next, rev, err = m.mintAndStore(next, func(t store.Token) (uint64, error) {
		r, d, err := m.store.RotateToken(ctx, old.ID, t, store.AuditRecord{
			Time: now, Actor: c.Actor(), OrgID: old.OrgID, Action: store.AuditTokenRotated,
			TokenID: old.ID, Name: old.Name, Grants: old.Grants, Reason: "rotated to " + t.ID,
		})
		descendants = d
		return r, err
	})
	if err != nil {
		return "", store.Token{}, 0, 0, err
	}
	return secret, next, rev, descendants, nil
}

// maxAncestry bounds the parent chain checkNotDescendant walks; a chain
// this long means a loop in corrupt data, not a real tree.
const maxAncestry = 100_000

// checkNotDescendant denies a caller minted (transitively) through the
// token ancestorID: rotating that token would revoke the caller.
func (m *Manager) checkNotDescendant(ctx context.Context, caller store.Token, ancestorID string) error {
	for id, n := caller.ParentID, 0; id != ""; n++ {
		if id == ancestorID {
			return denied("a token may not rotate a token it was minted through: the rotation would revoke it")
		}
		if n == maxAncestry {
			return fmt.Errorf("%w: parent chain of token %s longer than %d", store.ErrCorrupt, caller.ID, maxAncestry)
		}
		p, err := m.store.GetToken(ctx, id)
		if err != nil {
			return err
		}
		id = p.ParentID
	}
	return nil
}
