package store

import (
	"context"
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

// getKey reads a key record; ErrNotFound when absent.
func getKey(r kv, id string) (Key, keyMeta, error) {
	v, err := r.get(bucketKeys, []byte(id))
	if err != nil {
		return Key{}, keyMeta{}, err
	}
	if v == nil {
		return Key{}, keyMeta{}, fmt.Errorf("signing key %s: %w", id, ErrNotFound)
	}
	return decodeKey(v)
}

// publicKey returns k without its sealed private half, for events and
// snapshots.
func publicKey(k Key) *Key {
	k.SealedPrivate = nil
	return &k
}

// addKey stores a new signing key (pending, active or verify-only) with an
// EventKeyAdded carrying its public part, and an audit record.
// ErrKeyExists when the id is taken.
func addKey(ctx context.Context, s mutator, k Key, a AuditRecord) (uint64, error) {
	switch {
	case k.ID == "":
		return 0, fmt.Errorf("%w: key id is empty", ErrInvalid)
	case k.State != KeyPending && k.State != KeyActive && k.State != KeyVerifyOnly:
		return 0, fmt.Errorf("%w: signing key %s: a new key is pending, active or verify-only, not state %d", ErrInvalid, k.ID, k.State)
	case len(k.Public) == 0:
		return 0, fmt.Errorf("%w: signing key %s: public key is empty", ErrInvalid, k.ID)
	}
	return s.mutate(ctx, func(w *writer) error {
		if v, err := w.kv.get(bucketKeys, []byte(k.ID)); err != nil {
			return err
		} else if v != nil {
			return reject(fmt.Errorf("signing key %s: %w", k.ID, ErrKeyExists))
		}
		rev, err := w.event(Event{Kind: EventKeyAdded, Key: publicKey(k)})
		if err != nil {
			return err
		}
		if err := w.put(bucketKeys, []byte(k.ID), encodeKey(&k, keyMeta{addRev: rev, stateRev: rev})); err != nil {
			return err
		}
		rec := a
		if rec.KeyID == "" {
			rec.KeyID = k.ID
		}
		return w.audit(rec)
	})
}

// setKeyState moves a key to pending, active or verify-only, with an
// EventKeyAdded carrying the key in its new state. ErrNotFound when
// unknown, ErrKeyRevoked when revoked (revocation is final), ErrInvalid for
// any other target state. Setting the state a key already has writes
// nothing and returns the revision of its last change.
//
// The interface gives it no audit record, but every mutation is audited:
// it writes one with Action AuditKeyRotated, Actor ActorSystem (state
// changes are the key manager's scheduled steps of a rotation that was
// audited when the key was added), the time of the call, and the new state
// in Reason.
func setKeyState(ctx context.Context, s mutator, id string, st KeyState) (uint64, error) {
	if st != KeyPending && st != KeyActive && st != KeyVerifyOnly {
		return 0, fmt.Errorf("%w: signing key %s: SetKeyState to state %d", ErrInvalid, id, st)
	}
	now := time.Now() // taken outside the transaction function, which may run twice
	var rev uint64
	last, err := s.mutate(ctx, func(w *writer) error {
		rev = 0
		k, km, err := getKey(w.kv, id)
		if err != nil {
			if isNotFound(err) {
				return reject(err)
			}
			return err
		}
		switch {
		case k.State == KeyRevoked:
			return reject(fmt.Errorf("signing key %s: %w", id, ErrKeyRevoked))
		case k.State == st:
			rev = km.stateRev
			return nil
		}
		k.State = st
		if km.stateRev, err = w.event(Event{Kind: EventKeyAdded, Key: publicKey(k)}); err != nil {
			return err
		}
		if err := w.put(bucketKeys, []byte(k.ID), encodeKey(&k, km)); err != nil {
			return err
		}
		return w.audit(AuditRecord{
			Time: now, Actor: ActorSystem, Action: AuditKeyRotated, KeyID: id,
			Reason: "key state: " + keyStateName(st),
		})
	})
	if err != nil {
		return 0, err
	}
	if last != 0 {
		return last, nil
	}
	return rev, nil
}

// keyStateName names a key state for audit reasons.
func keyStateName(s KeyState) string {
	switch s {
	case KeyPending:
		return "pending"
	case KeyActive:
		return "active"
	case KeyVerifyOnly:
		return "verify-only"
	case KeyRevoked:
		return "revoked"
	}
	return fmt.Sprintf("unknown (%d)", s)
}

// revokeKey revokes a key at once (a.Time is the revocation time), with an
// EventKeyRevoked and an audit record. ErrNotFound when unknown. Revoking a
// revoked key writes nothing and returns the revision of its revocation.
func revokeKey(ctx context.Context, s mutator, id string, a AuditRecord) (uint64, error) {
	if a.Time.IsZero() {
		return 0, fmt.Errorf("%w: revocation time is zero", ErrInvalid)
	}
	var rev uint64
	last, err := s.mutate(ctx, func(w *writer) error {
		rev = 0
		k, km, err := getKey(w.kv, id)
		if err != nil {
			if isNotFound(err) {
				return reject(err)
			}
			return err
		}
		if k.State == KeyRevoked {
			rev = km.stateRev
			return nil
		}
		k.State, k.RevokeTime = KeyRevoked, a.Time
		if km.stateRev, err = w.event(Event{Kind: EventKeyRevoked, KeyID: id}); err != nil {
			return err
		}
		if err := w.put(bucketKeys, []byte(k.ID), encodeKey(&k, km)); err != nil {
			return err
		}
		rec := a
		if rec.KeyID == "" {
			rec.KeyID = id
		}
		return w.audit(rec)
	})
	if err != nil {
		return 0, err
	}
	if last != 0 {
		return last, nil
	}
	return rev, nil
}

// ListKeys returns every key, in the order they were added, with their
// sealed private halves.
func (s *Bolt) ListKeys(ctx context.Context) ([]Key, error) {
	var out []Key
	err := s.view(ctx, func(tx *bolt.Tx) error {
		var err error
		out, err = allKeys(tx, true)
		return err
	})
	return out, err
}

// allKeys reads every key in the order they were added.
func allKeys(tx *bolt.Tx, withPrivate bool) ([]Key, error) {
	return keysInOrder(func(fn func(v []byte) error) error {
		return tx.Bucket(bucketKeys).ForEach(func(_, v []byte) error { return fn(v) })
	}, withPrivate)
}

// keysInOrder decodes every key record forEach hands it and returns the keys
// in the order they were added, without their sealed private halves unless
// withPrivate: what both backends' key listings share.
func keysInOrder(forEach func(fn func(v []byte) error) error, withPrivate bool) ([]Key, error) {
	type entry struct {
		k   Key
		rev uint64
	}
	var es []entry
	err := forEach(func(v []byte) error {
		k, km, err := decodeKey(v)
		if err != nil {
			return err
		}
		if !withPrivate {
			k.SealedPrivate = nil
		}
		es = append(es, entry{k, km.addRev})
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(es, func(i, j int) bool { return es[i].rev < es[j].rev })
	out := make([]Key, len(es))
	for i, e := range es {
		out[i] = e.k
	}
	return out, nil
}

// cutKey revokes the tokens key id signed after issuedAfter (a.Time is when
// the cut is made): the key becomes verify-only, so it signs nothing more,
// and carries the cut (Key.RevokedIssuedAfter, truncated to the second as
// token issue times are) in its record and in an EventKeyAdded, so that
// followers deny the tokens it signed in or after that second. Tokens it
// signed earlier keep verifying.
//
// A cut only ever narrows what the key vouches for: cutting a cut key keeps
// the earlier of the two cuts, and a cut that changes nothing writes nothing
// and returns the revision of the key's last change. A revoked key stays
// revoked (ErrKeyRevoked is not returned: the cut is already implied) and
// its revocation's revision is returned. ErrNotFound when unknown.
func cutKey(ctx context.Context, s mutator, id string, issuedAfter time.Time, a AuditRecord) (uint64, error) {
	switch {
	case a.Time.IsZero():
		return 0, fmt.Errorf("%w: cut time is zero", ErrInvalid)
	case issuedAfter.IsZero():
		return 0, fmt.Errorf("%w: signing key %s: issued-after time is zero", ErrInvalid, id)
	}
	cut := issuedAfter.Truncate(time.Second).UTC()
	var rev uint64
	last, err := s.mutate(ctx, func(w *writer) error {
		rev = 0
		k, km, err := getKey(w.kv, id)
		if err != nil {
			if isNotFound(err) {
				return reject(err)
			}
			return err
		}
		if k.State == KeyRevoked || (k.State == KeyVerifyOnly && !k.RevokedIssuedAfter.IsZero() && !cut.Before(k.RevokedIssuedAfter)) {
			rev = km.stateRev
			return nil
		}
		k.State = KeyVerifyOnly
		if k.RevokedIssuedAfter.IsZero() || cut.Before(k.RevokedIssuedAfter) {
			k.RevokedIssuedAfter = cut
		}
		if km.stateRev, err = w.event(Event{Kind: EventKeyAdded, Key: publicKey(k)}); err != nil {
			return err
		}
		if err := w.put(bucketKeys, []byte(k.ID), encodeKey(&k, km)); err != nil {
			return err
		}
		rec := a
		if rec.KeyID == "" {
			rec.KeyID = id
		}
		if rec.Reason == "" {
			rec.Reason = "tokens issued after " + cut.Format(time.RFC3339) + " revoked"
		}
		return w.audit(rec)
	})
	if err != nil {
		return 0, err
	}
	if last != 0 {
		return last, nil
	}
	return rev, nil
}
