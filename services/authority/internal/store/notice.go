package store

import (
	"context"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Expiry notices. NoticeExpiring finds the live tokens whose expiry is
// within a lead time and records, for each, in one transaction: the notice
// (bucketExpiryNotices, so that it is made once per token and lead time,
// across restarts and processes), an EventTokenExpiring (a revision for
// the audit record; not streamed), an AuditTokenExpiring record and, when
// the outbox is on, a token.expiring webhook event.
//
// A notice for lead L is due once the token expires within L. When several
// are due at once (a token minted with less than the longest lead left, or
// the authority was down), only the shortest is made: the others would say
// less, later. A lead not shorter than the token's whole lifetime is never
// noticed: whoever minted the token knew its expiry then.
//
// It finds the tokens by reading the unrevoked-token index (token id →
// expiry) whole: no index by expiry is kept, as the read costs little
// beside the interval of the job (BenchmarkNoticeScan).

// noticeBatch bounds the notices of one transaction (etcd bounds a
// transaction's operations: a notice writes six keys).
const noticeBatch = 10

// MaxNoticesPerCall bounds the notices one NoticeExpiring call makes; the
// next call goes on.
const MaxNoticesPerCall = 1000

// noticeCandidate is a token found expiring within the longest lead.
type noticeCandidate struct {
	id  string
	exp time.Time
}

// expiringWithin returns the unrevoked tokens that are live at now and
// expire within lead, soonest first.
func expiringWithin(ctx context.Context, r kv, now time.Time, lead time.Duration) ([]noticeCandidate, error) {
	var out []noticeCandidate
	n := 0
	err := r.scan(bucketUnrevoked, nil, func(k, v []byte) error {
		if n++; n%ctxCheckEvery == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		exp, err := decodeExpiry(v)
		if err != nil {
			return err
		}
		if !now.Before(exp) || exp.Sub(now) > lead {
			return nil
		}
		id, err := tokenIDOfUnrevoked(k)
		if err != nil {
			return err
		}
		out = append(out, noticeCandidate{id: id, exp: exp})
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b noticeCandidate) int { return a.exp.Compare(b.exp) })
	return out, nil
}

// dueLead returns the shortest lead of leads (ascending) due for t at now,
// and false when none is (see NoticeExpiring).
func dueLead(t *Token, now time.Time, leads []time.Duration) (time.Duration, bool) {
	left, life := t.ExpireTime.Sub(now), t.ExpireTime.Sub(t.CreateTime)
	for _, l := range leads {
		if left <= l {
			return l, l < life
		}
	}
	return 0, false
}

// checkLeads validates NoticeExpiring's lead times and returns them
// ascending.
func checkLeads(leads []time.Duration) ([]time.Duration, error) {
	if len(leads) == 0 {
		return nil, fmt.Errorf("%w: no expiry notice lead time", ErrInvalid)
	}
	out := slices.Clone(leads)
	slices.Sort(out)
	if out[0] <= 0 {
		return nil, fmt.Errorf("%w: expiry notice lead time %s is not positive", ErrInvalid, out[0])
	}
	return out, nil
}

// noticeExpiring is NoticeExpiring on a backend: read reads, s writes.
func noticeExpiring(ctx context.Context, read reader, s mutator, now time.Time, leads []time.Duration) (int, error) {
	leads, err := checkLeads(leads)
	if err != nil {
		return 0, err
	}
	if now.IsZero() {
		return 0, fmt.Errorf("%w: notice time is zero", ErrInvalid)
	}
	var cands []noticeCandidate
	var stale []string
	if err := read(func(r kv) error {
		live, err := expiringWithin(ctx, r, now, leads[len(leads)-1])
		if err != nil {
			return err
		}
		noticed, err := readNotices(r)
		if err != nil {
			return err
		}
		stale = staleNotices(noticed, live)
		cands, err = dueNotices(r, live, noticed, now, leads)
		return err
	}); err != nil {
		return 0, err
	}
	if err := pruneNotices(ctx, s, stale, now); err != nil {
		return 0, err
	}
	total := 0
	for len(cands) > 0 {
		batch := cands[:min(len(cands), noticeBatch)]
		cands = cands[len(batch):]
		var n int
		if _, err := s.mutate(ctx, func(w *writer) error {
			n = 0
			for _, c := range batch {
				made, err := noticeOne(w, c.id, now, leads)
				if err != nil {
					return err
				}
				if made {
					n++
				}
			}
			return nil
		}); err != nil {
			return total, err
		}
		total += n
	}
	return total, nil
}

// noticeOne makes the notice due for token id at now, if any and not made
// yet, and reports whether it made one.
func noticeOne(w *writer, id string, now time.Time, leads []time.Duration) (bool, error) {
	t, _, err := getToken(w.kv, id)
	if isNotFound(err) {
		return false, nil // purged meanwhile
	}
	if err != nil {
		return false, err
	}
	if t.StateAt(now) != StateActive {
		return false, nil
	}
	lead, ok := dueLead(&t, now, leads)
	if !ok {
		return false, nil
	}
	v, err := w.kv.get(bucketExpiryNotices, []byte(id))
	if err != nil {
		return false, err
	}
	if v != nil {
		noticed, err := decodeUint64("expiry notice", v)
		if err != nil {
			return false, err
		}
		if time.Duration(noticed) <= lead {
			return false, nil
		}
	}
	if _, err := w.event(Event{Kind: EventTokenExpiring, TokenID: t.ID, ExpiresAt: t.ExpireTime}); err != nil {
		return false, err
	}
	if err := w.put(bucketExpiryNotices, []byte(id), be(uint64(lead))); err != nil {
		return false, err
	}
	rec := AuditRecord{
		Time: now, Actor: ActorSystem, Action: AuditTokenExpiring,
		Reason: fmt.Sprintf("expires at %s (notice %s before)", t.ExpireTime.UTC().Format(time.RFC3339), lead),
	}
	fillAudit(&rec, &t)
	if err := w.writeAudit(rec); err != nil {
		return false, err
	}
	if w.outbox {
		e := tokenEntry(WebhookTokenExpiring, &rec, &t)
		e.Lead = lead
		if err := w.enqueue(&e); err != nil {
			return false, err
		}
	}
	return true, nil
}

// readNotices reads every notice record: token id → lead noticed.
func readNotices(r kv) (map[string]time.Duration, error) {
	out := map[string]time.Duration{}
	err := r.scan(bucketExpiryNotices, nil, func(k, v []byte) error {
		n, err := decodeUint64("expiry notice", v)
		if err != nil {
			return err
		}
		out[string(k)] = time.Duration(n)
		return nil
	})
	return out, err
}

// staleNotices returns the noticed tokens (at most MaxNoticesPerCall) not
// among live, the tokens live and within the longest lead: a token noticed
// and still live is among them, as its time left only shrinks.
func staleNotices(noticed map[string]time.Duration, live []noticeCandidate) []string {
	in := make(map[string]bool, len(live))
	for _, c := range live {
		in[c.id] = true
	}
	var out []string
	for id := range noticed {
		if len(out) == MaxNoticesPerCall {
			break
		}
		if !in[id] {
			out = append(out, id)
		}
	}
	return out
}

// dueNotices returns the tokens of live (soonest first) for which a notice
// is due and not made yet, at most MaxNoticesPerCall: only those are
// written (and checked again) by noticeOne, so that a run with nothing due
// writes nothing.
func dueNotices(r kv, live []noticeCandidate, noticed map[string]time.Duration, now time.Time, leads []time.Duration) ([]noticeCandidate, error) {
	var out []noticeCandidate
	for _, c := range live {
		if len(out) == MaxNoticesPerCall {
			break
		}
		left := c.exp.Sub(now)
		i, _ := slices.BinarySearch(leads, left) // the shortest lead ≥ left
		if n, ok := noticed[c.id]; ok && i < len(leads) && n <= leads[i] {
			continue
		}
		t, _, err := getToken(r, c.id)
		if isNotFound(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if _, ok := dueLead(&t, now, leads); ok {
			out = append(out, c)
		}
	}
	return out, nil
}

// pruneNotices deletes the notice records ids of tokens that are no longer
// live at now (revoked, expired or purged; checked again in the
// transaction): no notice is due for them again. Maintenance: it takes no
// revision.
func pruneNotices(ctx context.Context, s mutator, ids []string, now time.Time) error {
	for len(ids) > 0 {
		batch := ids[:min(len(ids), 8*noticeBatch)]
		ids = ids[len(batch):]
		if _, err := s.mutate(ctx, func(w *writer) error {
			for _, id := range batch {
				live, err := liveAt(w.kv, id, now)
				if err != nil {
					return err
				}
				if live {
					continue
				}
				if err := w.del(bucketExpiryNotices, []byte(id)); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}

// liveAt reports whether token id is stored and active at now.
func liveAt(r kv, id string, now time.Time) (bool, error) {
	t, _, err := getToken(r, id)
	if isNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return t.StateAt(now) == StateActive, nil
}

// reader runs fn on a consistent read of the store.
type reader func(fn func(r kv) error) error

// NoticeExpiring makes the expiry notices due at now for the lead times
// leads (each > 0, any order), at most MaxNoticesPerCall, and returns how
// many it made; it also forgets the notices of tokens no longer live. See
// the top of notice.go.
func (s *Bolt) NoticeExpiring(ctx context.Context, now time.Time, leads []time.Duration) (int, error) {
	return noticeExpiring(ctx, func(fn func(kv) error) error {
		return s.view(ctx, func(tx *bolt.Tx) error { return fn(boltKV{tx}) })
	}, s, now, leads)
}

// NoticeExpiring makes the expiry notices due at now: see Bolt.NoticeExpiring.
func (s *Etcd) NoticeExpiring(ctx context.Context, now time.Time, leads []time.Duration) (int, error) {
	return noticeExpiring(ctx, func(fn func(kv) error) error {
		if err := s.usable(ctx); err != nil {
			return err
		}
		// rev 0: the latest revision; a scan's later pages stay at the
		// revision of its first.
		return fn(&etcdKV{s: s, ctx: ctx, writes: map[string][]byte{}})
	}, s, now, leads)
}
