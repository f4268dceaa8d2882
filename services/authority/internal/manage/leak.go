package manage

import (
	"context"
	"errors"
	"time"

	"github.com/sigil-auth/sigil/pkg/token"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// LeakOutcome is what a leak report did with one string.
type LeakOutcome int

// Leak outcomes.
const (
	// LeakNotAToken: not a genuine token of this deployment (malformed, bad
	// checksum, unknown key or bad signature, which are not told apart).
	LeakNotAToken LeakOutcome = iota + 1
	// LeakRevoked: the token was live and is now revoked.
	LeakRevoked
	// LeakAlreadyRevoked: the token was revoked before.
	LeakAlreadyRevoked
	// LeakExpired: the token had expired.
	LeakExpired
)

// LeakResult is the outcome for one reported string. TokenID is set only
// for a genuine token.
type LeakResult struct {
	Outcome LeakOutcome
	TokenID string
	// Revoked counts the tokens this report revoked for this string: the
	// token and its descendants (the cascade); 0 when nothing was revoked.
	Revoked int64
}

// ReportLeaked handles strings found in public, for the operator or the
// reporter credential: each genuine token among them (its signature
// verifies under one of the authority's keys, in any state) is revoked at
// once, as RevokeToken does (with the cascade) or, when the store has no
// record of it (a restore), as RevokeTokenString does, with an audit
// record of action store.AuditTokenLeaked whose reason names source and
// url. Anything else is LeakNotAToken and nothing more is said of it.
//
// A token that expired less than ExpiryMargin ago is revoked all the same
// (an authorizer whose clock runs behind may still accept it) and reported
// LeakExpired. The same string given twice is answered twice and revoked
// once.
//
// It returns one result per string, in order, and the highest revision of
// the revocations of the report's genuine tokens (new or earlier ones; 0
// when there is none): an authorizer at that revision denies them all.
// A store error ends the report; the revocations already made stay, and
// reporting again is harmless.
func (m *Manager) ReportLeaked(ctx context.Context, c *Caller, tokens []string, source, url string) ([]LeakResult, uint64, error) {
	if err := m.Admit(c, AccessReport); err != nil {
		return nil, 0, err
	}
	reason := LeakReason(source, url)
	results := make([]LeakResult, len(tokens))
	seen := make(map[string]int, len(tokens))
	var maxRev uint64
	for i, tok := range tokens {
		if j, ok := seen[tok]; ok {
			results[i] = results[j]
			results[i].Revoked = 0
			continue
		}
		seen[tok] = i
		r, rev, err := m.leakOne(ctx, c, tok, reason)
		if err != nil {
			return nil, 0, err
		}
		results[i] = r
		maxRev = max(maxRev, rev)
	}
	return results, maxRev, nil
}

// LeakReason is the revocation reason of a leaked token.
func LeakReason(source, url string) string {
	r := "leaked: reported by " + source
	if url != "" {
		r += " at " + url
	}
	return r
}

// leakOne handles one reported string: its result and the revision of the
// token's revocation (0 when it is not revoked).
func (m *Manager) leakOne(ctx context.Context, c *Caller, tok, reason string) (LeakResult, uint64, error) {
	notAToken := LeakResult{Outcome: LeakNotAToken}
	if len(tok) > token.MaxLen {
		return notAToken, 0, nil
	}
	claims, err := m.codec.Verify(tok, anyStateKeys{m.keys})
	if err != nil || claims == nil {
		return notAToken, 0, nil
	}
	id := claims.ID.String()
	row, err := m.store.GetToken(ctx, id)
	switch {
	case err == nil:
		return m.leakRecorded(ctx, c, row, reason)
	case errors.Is(err, store.ErrNotFound):
		t := store.Token{
			ID: id, OrgID: claims.OrgID, KeyID: claims.KeyID, Grants: claims.Grants,
			CreateTime: claims.IssuedAt, ExpireTime: claims.ExpiresAt,
		}
		return m.leakUnrecorded(ctx, c, t, reason)
	}
	return LeakResult{}, 0, err
}

// leakOutcome says what to do with a genuine, unrevoked token expiring at
// exp: revoke it (and the outcome to report), or leave it (long expired).
func (m *Manager) leakOutcome(now, exp time.Time) (LeakOutcome, bool) {
	switch {
	case now.Before(exp):
		return LeakRevoked, true
	case now.Sub(exp) < ExpiryMargin:
		return LeakExpired, true
	}
	return LeakExpired, false
}

// leakRecorded revokes a leaked token the store has a record of.
func (m *Manager) leakRecorded(ctx context.Context, c *Caller, row store.Token, reason string) (LeakResult, uint64, error) {
	res := LeakResult{TokenID: row.ID}
	if !row.RevokeTime.IsZero() {
		res.Outcome = LeakAlreadyRevoked
		return res, row.RevokeRev, nil
	}
	now := m.now()
	outcome, revoke := m.leakOutcome(now, row.ExpireTime)
	res.Outcome = outcome
	if !revoke {
		return res, 0, nil
	}
	t, rev, descendants, err := m.store.RevokeToken(ctx, row.ID, store.AuditRecord{
		Time: now, Actor: c.Actor(), OrgID: row.OrgID, Action: store.AuditTokenLeaked,
		TokenID: row.ID, Name: row.Name, Grants: row.Grants, Reason: reason,
	})
	if err != nil {
		return LeakResult{}, 0, err
	}
	if t.RevokeRev != rev || t.RevokeReason != reason {
		// Revoked by another call between the read and this one.
		res.Outcome = LeakAlreadyRevoked
		return res, rev, nil
	}
	res.Revoked = 1 + descendants
	m.logger.Info("leaked token revoked", "token_id", row.ID, "org_id", row.OrgID, "revision", rev,
		"descendants_revoked", descendants, "actor", c.Actor(), "reason", reason)
	return res, rev, nil
}

// leakUnrecorded revokes a leaked token the store has no record of, by
// what the token says (store.RevokeUnrecorded).
func (m *Manager) leakUnrecorded(ctx context.Context, c *Caller, t store.Token, reason string) (LeakResult, uint64, error) {
	res := LeakResult{TokenID: t.ID}
	now := m.now()
	outcome, revoke := m.leakOutcome(now, t.ExpireTime)
	res.Outcome = outcome
	if !revoke {
		return res, 0, nil
	}
	rev, already, err := m.store.RevokeUnrecorded(ctx, t, store.AuditRecord{
		Time: now, Actor: c.Actor(), Action: store.AuditTokenLeaked, Reason: reason,
	})
	if errors.Is(err, store.ErrTokenExists) {
		// Recorded meanwhile (a restore may race): revoke the record.
		row, err := m.store.GetToken(ctx, t.ID)
		if err != nil {
			return LeakResult{}, 0, err
		}
		return m.leakRecorded(ctx, c, row, reason)
	}
	if err != nil {
		return LeakResult{}, 0, err
	}
	if already {
		res.Outcome = LeakAlreadyRevoked
		return res, rev, nil
	}
	res.Revoked = 1
	m.logger.Info("leaked token revoked (no record)", "token_id", t.ID, "org_id", t.OrgID, "revision", rev,
		"actor", c.Actor(), "reason", reason)
	return res, rev, nil
}
