package store

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Limits of EventsAfter.
const (
	// DefaultEventLimit is the number of events EventsAfter returns at most
	// when the caller gives no limit (0 or less).
	DefaultEventLimit = 1000
	// MaxEventLimit caps EventsAfter's limit.
	MaxEventLimit = 10_000
)

// ctxCheckEvery is how many entries long scans read between checks of
// their context.
const ctxCheckEvery = 4096

// compactedRevision reads the compaction floor.
func compactedRevision(tx *bolt.Tx) (uint64, error) {
	return decodeUint64("compacted", tx.Bucket(bucketMeta).Get(metaCompacted))
}

// EventsAfter returns up to limit events with revision > after, in
// revision order, skipping EventTokenCreated and EventTokenExpiring (not
// streamed). limit <= 0
// means DefaultEventLimit; it is capped at MaxEventLimit.
//
// It returns an error wrapping ErrCompacted when after is below the
// compaction floor (events the caller needs may be gone), and also when
// after is beyond the store's revision: a follower cannot be ahead of the
// file it follows unless the file was replaced by an older copy, and
// either way it needs a snapshot.
func (s *Bolt) EventsAfter(ctx context.Context, after uint64, limit int) ([]Event, error) {
	switch {
	case limit <= 0:
		limit = DefaultEventLimit
	case limit > MaxEventLimit:
		limit = MaxEventLimit
	}
	var out []Event
	err := s.view(ctx, func(tx *bolt.Tx) error {
		out = nil
		floor, err := compactedRevision(tx)
		if err != nil {
			return err
		}
		rev, err := currentRevision(tx)
		if err != nil {
			return err
		}
		switch {
		case after < floor:
			return fmt.Errorf("%w: revision %d is below the compacted revision %d", ErrCompacted, after, floor)
		case after > rev:
			return fmt.Errorf("%w: revision %d is ahead of the store's revision %d", ErrCompacted, after, rev)
		case after == rev:
			return nil
		}
		c := tx.Bucket(bucketEvents).Cursor()
		n := 0
		for k, v := c.Seek(be(after + 1)); k != nil && len(out) < limit; k, v = c.Next() {
			if n++; n%ctxCheckEvery == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			kind, err := eventKindOf(v)
			if err != nil {
				return err
			}
			if kind == EventTokenCreated || kind == EventTokenExpiring {
				continue
			}
			ev, err := decodeEvent(binary.BigEndian.Uint64(k), v)
			if err != nil {
				return err
			}
			out = append(out, ev)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Compact drops events no follower needs and prunes the revoked-token
// bucket, and returns the compaction floor: EventsAfter refuses any after
// below it (ErrCompacted), and such a follower loads a snapshot. Compact
// is maintenance, not a mutation: it takes no revision, writes no audit
// record and wakes no Changed waiter.
//
// A revocation is needed until its token expires (a follower drops the
// entry then anyway); a key event is never needed by a follower that loads
// a snapshot, which carries every key; token creations are never streamed.
// So Compact deletes:
//
//   - every EventTokenCreated, and every EventTokenRevoked of a token
//     expired at now, wherever it is in the log: a follower that resumes
//     does not miss them;
//   - the key events of the log's prefix that holds no revocation of an
//     unexpired token: only a follower behind those needs a snapshot.
//
// The floor therefore rises only to the newest key event deleted, not to
// every deleted revision: followers that are merely behind on token events
// keep streaming, and a busy log compacts without sending every follower
// back to a snapshot. Pass now minus the authorizers' expiry leeway, so
// that an authorizer whose clock is a little behind never lacks a
// revocation it still needs.
//
// Revoked tokens whose expiry is not after now leave the revoked bucket.
func (s *Bolt) Compact(ctx context.Context, now time.Time) (uint64, error) {
	if err := s.usable(ctx); err != nil {
		return 0, err
	}
	var floor uint64
	err := s.db.Update(func(tx *bolt.Tx) error {
		var err error
		if floor, err = compactedRevision(tx); err != nil {
			return err
		}
		var drop [][]byte
		prefix := true
		n := 0
		c := tx.Bucket(bucketEvents).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if n++; n%ctxCheckEvery == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			kind, err := eventKindOf(v)
			if err != nil {
				return err
			}
			switch kind {
			case EventTokenCreated:
			case EventTokenRevoked:
				ev, err := decodeEvent(0, v)
				if err != nil {
					return err
				}
				if now.Before(ev.ExpiresAt) {
					prefix = false
					continue
				}
			case EventKeyAdded, EventKeyRevoked:
				if !prefix {
					continue
				}
				floor = max(floor, binary.BigEndian.Uint64(k))
			}
			drop = append(drop, append([]byte(nil), k...))
		}
		events := tx.Bucket(bucketEvents)
		for _, k := range drop {
			if err := events.Delete(k); err != nil {
				return err
			}
		}

		drop = drop[:0]
		revoked := tx.Bucket(bucketRevoked)
		if err := revoked.ForEach(func(k, v []byte) error {
			exp, err := decodeExpiry(v)
			if err != nil {
				return err
			}
			if !now.Before(exp) {
				drop = append(drop, append([]byte(nil), k...))
			}
			return nil
		}); err != nil {
			return err
		}
		for _, k := range drop {
			if err := revoked.Delete(k); err != nil {
				return err
			}
		}
		if err := compactDigests(tx, floor); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(metaCompacted, be(floor))
	})
	if err != nil {
		return 0, mapErr(err)
	}
	return floor, nil
}

// Snapshot returns, from one read transaction, the epoch, the current
// revision, every revoked token whose expiry is after now (by token id) and
// every key without its private half (in the order they were added).
func (s *Bolt) Snapshot(ctx context.Context, now time.Time) (Snapshot, error) {
	var snap Snapshot
	err := s.view(ctx, func(tx *bolt.Tx) error {
		snap = Snapshot{Epoch: s.epoch}
		var err error
		if snap.Revision, err = currentRevision(tx); err != nil {
			return err
		}
		if snap.Digest, err = digestAt(tx, snap.Revision); err != nil {
			return err
		}
		b := tx.Bucket(bucketRevoked)
		// Stats walks the pages, not the entries: far cheaper than the
		// copies and garbage of growing the slice 100,000 entries long.
		snap.Revoked = make([]Revoked, 0, b.Stats().KeyN)
		n := 0
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if n++; n%ctxCheckEvery == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			exp, err := decodeExpiry(v)
			if err != nil {
				return err
			}
			if now.Before(exp) {
				snap.Revoked = append(snap.Revoked, Revoked{TokenID: string(k), ExpiresAt: exp})
			}
		}
		snap.Keys, err = allKeys(tx, false)
		return err
	})
	if err != nil {
		return Snapshot{}, err
	}
	return snap, nil
}
