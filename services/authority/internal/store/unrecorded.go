package store

import (
	"context"
	"fmt"
)

// revokeUnrecorded revokes a token the store has no record of: one minted
// after the backup a restored file was made from, which the caller has
// proved genuine by verifying its signature. t carries what the token
// itself says (ID, OrgID, KeyID, ExpireTime, Grants; never the string).
// It writes an EventTokenRevoked (so that followers deny the token until
// its expiry), an entry in the revoked-token bucket (so that snapshots carry
// it) and an audit record, but no token record: there is nothing to list or
// describe, and no name to hold.
//
// It returns the revision at which the token is revoked. When the token is
// already revoked that way, it writes nothing and returns the current
// revision (at or after the original revocation, so still good for a
// read-after-revoke wait) with already set. ErrTokenExists when the store
// has a record of the token: revoke it with RevokeToken.
func revokeUnrecorded(ctx context.Context, s mutator, t Token, a AuditRecord) (rev uint64, already bool, err error) {
	switch {
	case t.ID == "":
		return 0, false, fmt.Errorf("%w: token id is empty", ErrInvalid)
	case a.Time.IsZero():
		return 0, false, fmt.Errorf("%w: revocation time is zero", ErrInvalid)
	case t.ExpireTime.IsZero():
		return 0, false, fmt.Errorf("%w: token %s: expiry is zero", ErrInvalid, t.ID)
	}
	last, err := s.mutate(ctx, func(w *writer) error {
		rev, already = 0, false
		id := []byte(t.ID)
		if v, err := w.kv.get(bucketTokens, id); err != nil {
			return err
		} else if v != nil {
			return reject(fmt.Errorf("token %s: %w", t.ID, ErrTokenExists))
		}
		if v, err := w.kv.get(bucketRevoked, id); err != nil {
			return err
		} else if v != nil {
			already = true
			rev = w.start
			return nil
		}
		if _, err := w.event(Event{Kind: EventTokenRevoked, TokenID: t.ID, ExpiresAt: t.ExpireTime}); err != nil {
			return err
		}
		if err := w.put(bucketRevoked, id, encodeExpiry(t.ExpireTime)); err != nil {
			return err
		}
		rec := a
		rec.OrgID, rec.TokenID, rec.Grants = t.OrgID, t.ID, t.Grants
		return w.audit(rec)
	})
	if err != nil {
		return 0, false, err
	}
	if last != 0 {
		return last, false, nil
	}
	return rev, already, nil
}
