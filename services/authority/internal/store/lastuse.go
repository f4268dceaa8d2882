package store

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Last use. Authorizers report when they last saw each token allowed
// (RecordTokenUse), at minute precision. A use is not a revocation event:
// it takes no revision, appends nothing to the event log or the audit log,
// and wakes no Changed waiter. It lives in a bucket of its own, beside the
// token record, so that recording it never rewrites the record.

// bucketLastUse maps a token id to the unix minute of its last reported
// use (be(minute)). Entries only move forward; a token never used has
// none. Files made before it get the bucket when opened (initLastUse).
var bucketLastUse = []byte("last_use")

// MaxTokenUses bounds the uses of one RecordTokenUse call (one
// transaction).
const MaxTokenUses = 1000

// TokenUse is one reported use: the token and the minute it was last seen
// used.
type TokenUse struct {
	TokenID string
	Time    time.Time // truncated to the minute by the store
}

// RecordTokenUse records uses, each only when the token is stored and the
// use is later than the one recorded, all in one transaction that takes no
// revision. It returns how many were recorded; unknown tokens are skipped.
func (s *Bolt) RecordTokenUse(ctx context.Context, uses []TokenUse) (int, error) {
	return recordTokenUse(ctx, s, uses)
}

// RecordTokenUse records uses: see Bolt.RecordTokenUse.
func (s *Etcd) RecordTokenUse(ctx context.Context, uses []TokenUse) (int, error) {
	return recordTokenUse(ctx, s, uses)
}

// recordTokenUse is RecordTokenUse on either backend.
func recordTokenUse(ctx context.Context, s mutator, uses []TokenUse) (int, error) {
	if len(uses) > MaxTokenUses {
		return 0, fmt.Errorf("%w: %d uses in one call, at most %d", ErrInvalid, len(uses), MaxTokenUses)
	}
	for _, u := range uses {
		if u.TokenID == "" || u.Time.IsZero() || u.Time.Unix() < 0 {
			return 0, fmt.Errorf("%w: a use needs a token id and a time", ErrInvalid)
		}
	}
	var recorded int
	_, err := s.mutate(ctx, func(w *writer) error {
		recorded = 0 // the function may run more than once
		for _, u := range uses {
			ok, err := recordUse(w, u)
			if err != nil {
				return err
			}
			if ok {
				recorded++
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return recorded, nil
}

// recordUse records one use when its token is stored and it is later than
// the recorded one.
func recordUse(w *writer, u TokenUse) (bool, error) {
	id := []byte(u.TokenID)
	if v, err := w.kv.get(bucketTokens, id); err != nil || v == nil {
		return false, err
	}
	minute := useMinute(u.Time)
	old, err := w.kv.get(bucketLastUse, id)
	if err != nil {
		return false, err
	}
	if len(old) == 8 && binary.BigEndian.Uint64(old) >= minute {
		return false, nil
	}
	return true, w.put(bucketLastUse, id, be(minute))
}

// useMinute is t's unix minute.
func useMinute(t time.Time) uint64 {
	return uint64(t.Unix() / 60)
}

// lastUseOf decodes a bucketLastUse value: the zero time when absent (or
// not 8 bytes long, which checkInvariants would have reported).
func lastUseOf(v []byte) time.Time {
	if len(v) != 8 {
		return time.Time{}
	}
	return time.Unix(int64(binary.BigEndian.Uint64(v))*60, 0).UTC()
}

// withLastUse sets t's LastUseTime from the store.
func withLastUse(r kv, t *Token) error {
	v, err := r.get(bucketLastUse, []byte(t.ID))
	if err != nil {
		return err
	}
	t.LastUseTime = lastUseOf(v)
	return nil
}

// initLastUse creates the bucket in a file made before it. It runs in
// Open's write transaction.
func initLastUse(tx *bolt.Tx) error {
	_, err := tx.CreateBucketIfNotExists(bucketLastUse)
	return err
}

// matchesUse reports whether t passes the filter's use and expiry
// conditions (UnusedSince, ExpireBefore).
func (f *ListFilter) matchesUse(t *Token) bool {
	if !f.UnusedSince.IsZero() && !t.LastUseTime.IsZero() && !t.LastUseTime.Before(f.UnusedSince) {
		return false
	}
	if !f.ExpireBefore.IsZero() && !t.ExpireTime.Before(f.ExpireBefore) {
		return false
	}
	return true
}
