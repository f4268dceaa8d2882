package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Retention says how long the store keeps what no one can use any more.
// A zero duration keeps that kind of record forever.
type Retention struct {
	// Tokens is how long a token's record stays after the token stopped
	// being usable (its revocation or its expiry, whichever came first).
	// Its audit records stay (see Audit).
	Tokens time.Duration
	// Audit is how long an audit record stays after its time.
	Audit time.Duration
}

// RetentionResult counts what one ApplyRetention removed.
type RetentionResult struct {
	Tokens int      // token records purged, with their index entries
	Audit  int      // audit records deleted, with their index entries
	Keys   []string // signing keys retired
	// Floor is the compaction floor the purge raised, 0 when it did not
	// (see applyRetention).
	Floor uint64
}

// Retainer is a store that applies a retention policy: both backends are.
// It is kept apart from Store so that the mutations' interface stays what
// the request paths use; the app runs it as a background job.
type Retainer interface {
	ApplyRetention(ctx context.Context, now time.Time, r Retention) (RetentionResult, error)
}

var (
	_ Retainer = (*Bolt)(nil)
	_ Retainer = (*Etcd)(nil)
)

// purgeBatch bounds the tokens or audit records one purge transaction
// removes on bbolt, so that a large backlog never makes one long write
// transaction that the other mutations (group-committed with it) wait for.
// On etcd the transaction's own limits (writer.limit, etcdKV.full) bound
// it further.
const purgeBatch = 256

// maxAuditPerRun bounds the audit records one run collects (the next run
// goes on from there).
const maxAuditPerRun = 100_000

// tokenSideBuckets lists buckets keyed by token id whose entry goes with
// the token's record when it is purged (per-token state of the lifecycle
// features: last use, expiry notices sent). Every one of them exists in
// every file opened for writing (Open adds them to older files).
var tokenSideBuckets = [][]byte{bucketLastUse, bucketExpiryNotices}

// retainer is what applyRetention needs of a backend: its mutations and a
// consistent read of the whole store.
type retainer interface {
	mutator
	readKV(ctx context.Context, fn func(r kv) error) error
	// raiseFloor raises the compaction floor to floor (never lowers it,
	// never past the last revision) and drops the history digests below
	// it, as Compact does.
	raiseFloor(ctx context.Context, floor uint64) error
}

// readKV runs fn on one read transaction.
func (s *Bolt) readKV(ctx context.Context, fn func(r kv) error) error {
	return s.view(ctx, func(tx *bolt.Tx) error { return fn(boltKV{tx}) })
}

// readKV runs fn on reads at one etcd revision (the head's).
func (s *Etcd) readKV(ctx context.Context, fn func(r kv) error) error {
	h, err := s.readHead(ctx)
	if err != nil {
		return err
	}
	return fn(&etcdKV{s: s, ctx: ctx, rev: h.etcdRev, writes: map[string][]byte{}})
}

// ApplyRetention purges dead tokens, old audit records and retired keys:
// see applyRetention.
func (s *Bolt) ApplyRetention(ctx context.Context, now time.Time, r Retention) (RetentionResult, error) {
	return applyRetention(ctx, s, now, r)
}

// ApplyRetention purges dead tokens, old audit records and retired keys:
// see applyRetention.
func (s *Etcd) ApplyRetention(ctx context.Context, now time.Time, r Retention) (RetentionResult, error) {
	return applyRetention(ctx, s, now, r)
}

// applyRetention removes what r says is kept no longer, at now:
//
//   - tokens dead (revoked or expired) for longer than r.Tokens, with every
//     index entry (listing, creator, name, unrevoked, parent). A token goes
//     only with all its descendants: a parent whose child is still kept
//     stays, so the parent index and the cascade always find whole trees.
//     Their audit records stay; events and the revoked-token entries are
//     Compact's business: a revoked token that has not expired stays in
//     the snapshot and the stream until it expires, record or no record.
//   - audit records older than r.Audit, in revision order (a record goes
//     once it and every earlier one are older), with their index entries.
//     ListAudit pages by revision, so its page tokens stay good.
//   - signing keys no token can use: verify-only or revoked, no token of
//     theirs kept, and the latest of their times (last token expiry,
//     activation, revocation, creation) older than r.Tokens. They leave the
//     key list, hence the snapshots; a follower that still holds one denies
//     its tokens anyway, all expired.
//   - the history digests of revisions older than r.Tokens: the compaction
//     floor rises to the newest creation revision of a purged token (a
//     revision taken before the cutoff), so that the digest chain, one
//     entry per revision, does not grow forever when no key event lets
//     Compact raise the floor. Only a follower that stopped more than the
//     retention ago lands below it: it loads a snapshot. The digests at and
//     above the floor do not change.
//
// It is maintenance, not a mutation: it takes no revision, appends no event
// (the history and its digests are untouched), writes no audit record and
// wakes no Changed waiter. It works in transactions of at most purgeBatch
// tokens or records (fewer on etcd, within its transaction limits), each
// one checking again what it deletes, so it may run beside the mutations,
// on several authorities at once, and stop anywhere: the next run goes on.
func applyRetention(ctx context.Context, s retainer, now time.Time, r Retention) (RetentionResult, error) {
	var res RetentionResult
	if r.Tokens < 0 || r.Audit < 0 {
		return res, fmt.Errorf("%w: negative retention", ErrInvalid)
	}
	if r.Tokens > 0 {
		n, keys, floor, err := purgeTokens(ctx, s, now.Add(-r.Tokens))
		res.Tokens, res.Keys = n, keys
		if err != nil {
			return res, fmt.Errorf("store: purge tokens: %w", err)
		}
		if floor > 0 {
			if err := s.raiseFloor(ctx, floor); err != nil {
				return res, fmt.Errorf("store: raise the compaction floor: %w", err)
			}
			res.Floor = floor
		}
	}
	if r.Audit > 0 {
		n, err := purgeAudit(ctx, s, now.Add(-r.Audit))
		res.Audit = n
		if err != nil {
			return res, fmt.Errorf("store: purge audit records: %w", err)
		}
	}
	return res, nil
}

// deadAt is when t stopped being usable: its revocation or its expiry,
// whichever came first.
func deadAt(t *Token) time.Time {
	if !t.RevokeTime.IsZero() && t.RevokeTime.Before(t.ExpireTime) {
		return t.RevokeTime
	}
	return t.ExpireTime
}

// purgeable reports whether t has been dead since before cutoff.
func purgeable(t *Token, cutoff time.Time) bool {
	return deadAt(t).Before(cutoff)
}

// purgePlan is what the read phase of a token purge found.
type purgePlan struct {
	order []string        // tokens to purge, every token after its descendants
	used  map[string]bool // keys that a kept token names
	keys  []Key           // candidate keys for retirement
}

// planPurge reads every token and key once and returns what a purge with
// cutoff removes.
func planPurge(ctx context.Context, s retainer, cutoff time.Time) (purgePlan, error) {
	p := purgePlan{used: map[string]bool{}}
	err := s.readKV(ctx, func(r kv) error {
		p = purgePlan{used: map[string]bool{}}
		dead := map[string]bool{}
		keyOf := map[string]string{}
		children := map[string][]string{}
		var candidates []string
		n := 0
		if err := r.scan(bucketTokens, nil, func(_, v []byte) error {
			if n++; n%ctxCheckEvery == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			t, _, err := decodeToken(v)
			if err != nil {
				return err
			}
			if t.ParentID != "" {
				children[t.ParentID] = append(children[t.ParentID], t.ID)
			}
			if purgeable(&t, cutoff) {
				dead[t.ID] = true
				keyOf[t.ID] = t.KeyID
				candidates = append(candidates, t.ID)
			} else {
				p.used[t.KeyID] = true
			}
			return nil
		}); err != nil {
			return err
		}
		// A candidate goes when its whole subtree goes; post-order, so
		// that children come before their parent.
		whole := map[string]bool{}
		visited := map[string]bool{}
		var walk func(id string) bool
		walk = func(id string) bool {
			if visited[id] {
				return whole[id]
			}
			visited[id] = true
			ok := dead[id]
			for _, c := range children[id] {
				if !walk(c) {
					ok = false
				}
			}
			whole[id] = ok
			if ok {
				p.order = append(p.order, id)
			}
			return ok
		}
		for _, id := range candidates {
			walk(id)
		}
		for _, id := range candidates {
			if !whole[id] {
				p.used[keyOf[id]] = true
			}
		}
		return r.scan(bucketKeys, nil, func(_, v []byte) error {
			k, _, err := decodeKey(v)
			if err != nil {
				return err
			}
			if retirable(&k, cutoff) && !p.used[k.ID] {
				p.keys = append(p.keys, k)
			}
			return nil
		})
	})
	return p, err
}

// retirable reports whether k can sign nothing and verify nothing any
// more: verify-only or revoked, and nothing about it happened at or after
// cutoff (its tokens all expired before it).
func retirable(k *Key, cutoff time.Time) bool {
	if k.State != KeyVerifyOnly && k.State != KeyRevoked {
		return false
	}
	for _, at := range []time.Time{k.LastExpiry, k.ActivateTime, k.RevokeTime, k.CreateTime} {
		if !at.Before(cutoff) {
			return false
		}
	}
	return true
}

// fuller is a kv that knows when its transaction is near the backend's
// limits (etcd's).
type fuller interface{ full() bool }

// isFull reports whether w's transaction should take no more work.
func isFull(w *writer) bool {
	f, ok := w.kv.(fuller)
	return ok && f.full()
}

// batchSize is how many tokens or records one of w's transactions takes.
func batchSize(w *writer) int {
	if w.limit > 0 {
		return min(w.limit, purgeBatch)
	}
	return purgeBatch
}

// purgeTokens purges the tokens dead since before cutoff (see
// applyRetention), then retires the keys no kept token names, and returns
// how many tokens went, which keys, and the newest creation revision of a
// purged token (0 for none).
func purgeTokens(ctx context.Context, s retainer, cutoff time.Time) (int, []string, uint64, error) {
	p, err := planPurge(ctx, s, cutoff)
	if err != nil {
		return 0, nil, 0, err
	}
	total := 0
	var newest uint64
	for len(p.order) > 0 {
		if err := ctx.Err(); err != nil {
			return total, nil, newest, err
		}
		var done, purged int
		var kept []string
		var batchNewest uint64
		if _, err := s.mutate(ctx, func(w *writer) error {
			done, purged, kept, batchNewest = 0, 0, nil, 0
			batch := p.order[:min(len(p.order), batchSize(w))]
			// Every read of an index comes before the first write (etcd
			// reads at one revision and refuses a scan after a write).
			kids := make([][]string, len(batch))
			for i, id := range batch {
				var err error
				if kids[i], err = childrenOf(w.kv, id); err != nil {
					return err
				}
			}
			gone := map[string]bool{}
			for i, id := range batch {
				if isFull(w) {
					break
				}
				done++
				createRev, err := purgeToken(w, id, kids[i], gone, cutoff)
				if err != nil {
					return err
				}
				if createRev != 0 {
					gone[id] = true
					purged++
					batchNewest = max(batchNewest, createRev)
				} else {
					kept = append(kept, id)
				}
			}
			return nil
		}); err != nil {
			return total, nil, newest, err
		}
		if done == 0 {
			return total, nil, newest, errors.New("store: a purge transaction took no token")
		}
		total += purged
		newest = max(newest, batchNewest)
		for _, id := range kept {
			// Kept after all (a child appeared, or it is gone already):
			// its key stays named.
			if t, err := getTokenRead(ctx, s, id); err == nil {
				p.used[t.KeyID] = true
			} else if !isNotFound(err) {
				return total, nil, newest, err
			}
		}
		p.order = p.order[done:]
	}
	keys, err := retireKeys(ctx, s, p, cutoff)
	return total, keys, newest, err
}

// getTokenRead reads one token outside a mutation.
func getTokenRead(ctx context.Context, s retainer, id string) (Token, error) {
	var t Token
	err := s.readKV(ctx, func(r kv) error {
		var err error
		t, _, err = getToken(r, id)
		return err
	})
	return t, err
}

// purgeToken deletes token id's record and index entries if it is still
// stored, still dead since before cutoff, and every child (kids, read at the
// transaction's start) went earlier in the same transaction. It returns
// the token's creation revision when it did, else 0.
func purgeToken(w *writer, id string, kids []string, gone map[string]bool, cutoff time.Time) (uint64, error) {
	t, createRev, err := getToken(w.kv, id)
	if isNotFound(err) {
		return 0, nil // another authority purged it
	}
	if err != nil {
		return 0, err
	}
	if !purgeable(&t, cutoff) {
		return 0, nil
	}
	for _, c := range kids {
		if !gone[c] {
			return 0, nil
		}
	}
	key := []byte(id)
	dels := []struct{ b, k []byte }{
		{bucketTokens, key},
		{bucketTokensByOrg, byOrgKey(t.OrgID, createRev, id)},
		{bucketTokensByCreator, byCreatorKey(t.OrgID, t.CreatedBy, createRev, id)},
	}
	if t.RevokeRev == 0 {
		dels = append(dels, struct{ b, k []byte }{bucketUnrevoked, unrevokedKey(t.OrgID, t.CreatedBy, id)})
	}
	if t.ParentID != "" {
		dels = append(dels, struct{ b, k []byte }{bucketTokensByParent, childKey(t.ParentID, id)})
	}
	nk := nameKey(t.OrgID, t.Name)
	holder, err := w.kv.get(bucketTokenNames, nk)
	if err != nil {
		return 0, err
	}
	if string(holder) == id {
		dels = append(dels, struct{ b, k []byte }{bucketTokenNames, nk})
	}
	for _, b := range tokenSideBuckets {
		dels = append(dels, struct{ b, k []byte }{b, key})
	}
	for _, d := range dels {
		if err := w.del(d.b, d.k); err != nil {
			return 0, err
		}
	}
	return createRev, nil
}

// retireKeys deletes the candidate keys of p that no kept token names, each
// checked again in its transaction, and returns their ids.
func retireKeys(ctx context.Context, s retainer, p purgePlan, cutoff time.Time) ([]string, error) {
	var out []string
	for _, k := range p.keys {
		if p.used[k.ID] {
			continue
		}
		retired := false
		if _, err := s.mutate(ctx, func(w *writer) error {
			retired = false
			cur, _, err := getKey(w.kv, k.ID)
			if isNotFound(err) {
				return nil
			}
			if err != nil {
				return err
			}
			if !retirable(&cur, cutoff) {
				return nil
			}
			retired = true
			return w.del(bucketKeys, []byte(k.ID))
		}); err != nil {
			return out, err
		}
		if retired {
			out = append(out, k.ID)
		}
	}
	return out, nil
}

// auditEntry locates one audit record and its index entry.
type auditEntry struct {
	rev uint64
	org string
}

// purgeAudit deletes, in revision order, the audit records older than
// cutoff up to the first one that is not (at most maxAuditPerRun a run),
// with their index entries, and returns how many went.
func purgeAudit(ctx context.Context, s retainer, cutoff time.Time) (int, error) {
	var old []auditEntry
	err := s.readKV(ctx, func(r kv) error {
		old = old[:0]
		err := r.scan(bucketAudit, nil, func(k, v []byte) error {
			if len(old) == maxAuditPerRun {
				return errStopScan
			}
			if len(old)%ctxCheckEvery == ctxCheckEvery-1 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			if len(k) != 8 {
				return fmt.Errorf("%w: audit key of %d bytes", ErrCorrupt, len(k))
			}
			a, err := decodeAudit(binary.BigEndian.Uint64(k), v)
			if err != nil {
				return err
			}
			if !a.Time.Before(cutoff) {
				return errStopScan
			}
			old = append(old, auditEntry{rev: a.Revision, org: a.OrgID})
			return nil
		})
		if errors.Is(err, errStopScan) {
			return nil
		}
		return err
	})
	if err != nil {
		return 0, err
	}
	total := 0
	for len(old) > 0 {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		var done int
		if _, err := s.mutate(ctx, func(w *writer) error {
			done = 0
			for _, e := range old[:min(len(old), batchSize(w)*4)] {
				if isFull(w) {
					break
				}
				done++
				if err := w.del(bucketAudit, be(e.rev)); err != nil {
					return err
				}
				if err := w.del(bucketAuditByOrg, auditOrgKey(e.org, e.rev)); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return total, err
		}
		if done == 0 {
			return total, errors.New("store: a purge transaction took no audit record")
		}
		total += done
		old = old[done:]
	}
	return total, nil
}

// raiseFloor raises the compaction floor to floor and drops the digests
// below it, in one transaction (serialized with Compact by bbolt's single
// writer).
func (s *Bolt) raiseFloor(ctx context.Context, floor uint64) error {
	if err := s.usable(ctx); err != nil {
		return err
	}
	return mapErr(s.db.Update(func(tx *bolt.Tx) error {
		cur, err := compactedRevision(tx)
		if err != nil {
			return err
		}
		rev, err := currentRevision(tx)
		if err != nil {
			return err
		}
		if floor = min(floor, rev); floor <= cur {
			return nil
		}
		if err := compactDigests(tx, floor); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(metaCompacted, be(floor))
	}))
}

// raiseFloor raises the compaction floor to floor in a transaction guarded
// by the floor's value (as Compact's: floors only rise, whoever raises
// them), then drops the digests below it in transactions of at most the
// operation limit (digests below the floor are never read).
func (s *Etcd) raiseFloor(ctx context.Context, floor uint64) error {
	for attempt := 0; ; attempt++ {
		h, err := s.readHead(ctx)
		if err != nil {
			return err
		}
		floor = min(floor, h.rev)
		if floor <= h.floor {
			break
		}
		ck := s.key(bucketMeta, metaCompacted)
		rctx, cancel := context.WithTimeout(ctx, s.timeout)
		resp, err := s.cli.Txn(rctx).If(clientv3.Compare(clientv3.Value(ck), "=", string(be(h.floor)))).Then(clientv3.OpPut(ck, string(be(floor)))).Commit()
		cancel()
		if err != nil {
			return s.mapErr(ctx, err)
		}
		if resp.Succeeded {
			break
		}
		if attempt == 3 {
			return fmt.Errorf("%w: etcd: the compaction floor kept changing", ErrUnavailable)
		}
	}
	var drop []string
	from := s.key(bucketDigests, nil)
	if err := s.rangeAll(ctx, from, s.key(bucketDigests, be(floor)), 0, func(k, _ []byte) error {
		drop = append(drop, string(k))
		return nil
	}); err != nil {
		return err
	}
	return s.deleteKeys(ctx, drop)
}
