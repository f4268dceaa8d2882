package store

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The webhook outbox. When it is on (SetOutbox), a mutation that writes an
// audit record also writes the webhook event that record makes, in the
// same transaction: an event is recorded exactly when its change commits,
// and it survives a crash (and, on etcd, the loss of a replica) until the
// delivery loop has delivered it (AckOutbox) or given up on it
// (RetryOutbox with failed: the entry moves to the failed list, kept for
// inspection). Entries never hold a secret: ids, names, times, reasons.
//
// The outbox is off unless the deployment has a webhook endpoint: a store
// without one would only accumulate events nobody reads. Turning it on
// does not make events for changes made while it was off.

// Webhook event types (the Standard Webhooks "type" of each entry).
const (
	WebhookTokenCreated  = "token.created"
	WebhookTokenRevoked  = "token.revoked"
	WebhookTokenRotated  = "token.rotated"
	WebhookTokenExpiring = "token.expiring"
	WebhookTokenLeaked   = "token.leaked"
	WebhookKeyRotated    = "key.rotated"
	WebhookKeyRevoked    = "key.revoked"
)

// OutboxEntry is one webhook event in the outbox, with the state of its
// delivery.
type OutboxEntry struct {
	// Seq orders the entries: the revision of the change, times 256, plus
	// the entry's rank within that revision.
	Seq uint64
	// ID is the webhook-id: random, made once, the same for every attempt,
	// so that a receiver can drop duplicates.
	ID       string
	Type     string    // WebhookTokenCreated, ...
	Time     time.Time // when the change happened
	Revision uint64    // the store revision of the change
	Actor    string    // who made the change: "operator", "token:<id>" or ActorSystem

	OrgID      string
	TokenID    string // the token concerned (the old one of a rotation)
	NewTokenID string // rotation: the token that replaces TokenID
	Name       string
	CreatedBy  string
	ParentID   string
	KeyID      string // the token's signing key, or the key concerned
	KeyState   string // key events: pending, active, verify-only or revoked
	CreateTime time.Time
	ExpireTime time.Time
	RevokeTime time.Time
	// CutTime is a key cut's time (key.revoked after CutKey): tokens the
	// key signed at or after it are revoked.
	CutTime time.Time
	Reason  string
	Count   int64         // token.revoked, token.leaked: descendants the cascade revoked
	Lead    time.Duration // token.expiring: the notice's lead time

	// Delivery state, written by RetryOutbox.
	Attempts    int
	NextAttempt time.Time // zero: at once
	LastError   string    // of the last attempt: a status code or a transport error, never a body
}

// MaxOutboxList caps ListOutbox's limit.
const MaxOutboxList = 1000

// maxOutboxError bounds LastError as stored.
const maxOutboxError = 256

// errStopScan ends a scan early.
var errStopScan = errors.New("store: stop scan")

// SetOutbox turns the outbox on or off for the mutations that follow.
func (s *Bolt) SetOutbox(on bool) { s.outbox.Store(on) }

// SetOutbox turns the outbox on or off for this process's mutations that
// follow. Every process sharing the prefix should have the same setting.
func (s *Etcd) SetOutbox(on bool) { s.outbox.Store(on) }

// enqueueAudit writes the webhook event of audit record a, written at the
// transaction's last revision, when the outbox is on and the record's
// action makes one. The token or key concerned is read from the
// transaction (where the mutation has just written it).
func (w *writer) enqueueAudit(a *AuditRecord) error {
	if !w.outbox {
		return nil
	}
	switch a.Action {
	case AuditTokenCreated:
		return w.enqueueTokenID(WebhookTokenCreated, a)
	case AuditTokenRevoked:
		return w.enqueueTokenID(WebhookTokenRevoked, a)
	case AuditTokenLeaked:
		return w.enqueueTokenID(WebhookTokenLeaked, a)
	case AuditTokenRotated:
		return w.enqueueRotation(a)
	case AuditKeyRotated:
		return w.enqueueKey(WebhookKeyRotated, a)
	case AuditKeyRevoked:
		return w.enqueueKey(WebhookKeyRevoked, a)
	}
	// AuditTokensRevoked: each selected token had its own event
	// (revokeOne). AuditTokenExpiring: NoticeExpiring writes its event.
	// Any other action makes no event.
	return nil
}

// enqueueTokenID writes an event about the token a names; a token the
// store has no record of (RevokeUnrecorded) is described by a alone.
func (w *writer) enqueueTokenID(typ string, a *AuditRecord) error {
	t, _, err := getToken(w.kv, a.TokenID)
	if isNotFound(err) {
		t, err = Token{ID: a.TokenID, OrgID: a.OrgID, Name: a.Name}, nil
	}
	if err != nil {
		return err
	}
	return w.enqueueToken(typ, a, &t)
}

// enqueueToken writes an event about token t, made by the change a
// describes.
func (w *writer) enqueueToken(typ string, a *AuditRecord, t *Token) error {
	e := tokenEntry(typ, a, t)
	if a.Action == AuditTokenRevoked || a.Action == AuditTokenLeaked {
		e.Count = a.Count // the descendants the cascade revoked
	}
	return w.enqueue(&e)
}

// tokenEntry is the entry of an event about token t.
func tokenEntry(typ string, a *AuditRecord, t *Token) OutboxEntry {
	return OutboxEntry{
		Type: typ, Time: a.Time, Actor: a.Actor, Reason: a.Reason,
		OrgID: t.OrgID, TokenID: t.ID, Name: t.Name, CreatedBy: t.CreatedBy, ParentID: t.ParentID, KeyID: t.KeyID,
		CreateTime: t.CreateTime, ExpireTime: t.ExpireTime, RevokeTime: t.RevokeTime,
	}
}

// enqueueRotation writes a token.rotated event: a names the old token, and
// the name it held has moved to the new one (rotateToken).
func (w *writer) enqueueRotation(a *AuditRecord) error {
	old, _, err := getToken(w.kv, a.TokenID)
	if err != nil {
		return err
	}
	e := tokenEntry(WebhookTokenRotated, a, &old)
	holder, err := w.kv.get(bucketTokenNames, nameKey(old.OrgID, old.Name))
	if err != nil {
		return err
	}
	e.NewTokenID = string(holder)
	return w.enqueue(&e)
}

// enqueueKey writes an event about the signing key a names.
func (w *writer) enqueueKey(typ string, a *AuditRecord) error {
	k, _, err := getKey(w.kv, a.KeyID)
	if err != nil {
		return err
	}
	e := OutboxEntry{
		Type: typ, Time: a.Time, Actor: a.Actor, Reason: a.Reason, KeyID: k.ID, KeyState: keyStateName(k.State),
		CreateTime: k.CreateTime, RevokeTime: k.RevokeTime, CutTime: k.RevokedIssuedAfter,
	}
	return w.enqueue(&e)
}

// enqueue writes e at the transaction's last revision, with a new random
// id.
func (w *writer) enqueue(e *OutboxEntry) error {
	if w.rev == w.start {
		return errors.New("store: webhook event without a revision")
	}
	if w.outboxRev != w.rev {
		w.outboxRev, w.outboxN = w.rev, 0
	}
	if w.outboxN > 0xff {
		return fmt.Errorf("store: more than 256 webhook events at revision %d", w.rev)
	}
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return err
	}
	e.ID = "msg_" + hex.EncodeToString(id[:])
	e.Revision = w.rev
	e.Seq = w.rev<<8 | uint64(w.outboxN)
	w.outboxN++
	return w.put(bucketOutbox, be(e.Seq), encodeOutbox(e))
}

// ---- reads and delivery state, shared by the backends ----

// outboxFrom returns a function for a scan of an outbox bucket from
// be(after+1): it decodes each entry into *out until limit.
func outboxFrom(out *[]OutboxEntry, limit int) func(k, v []byte) error {
	return func(k, v []byte) error {
		if len(*out) == limit {
			return errStopScan
		}
		if len(k) != 8 {
			return fmt.Errorf("%w: webhook event key of %d bytes", ErrCorrupt, len(k))
		}
		e, err := decodeOutbox(binary.BigEndian.Uint64(k), v)
		if err != nil {
			return err
		}
		*out = append(*out, e)
		return nil
	}
}

// OutboxFilter selects outbox entries for ListOutbox.
type OutboxFilter struct {
	Failed bool   // the failed list instead of the pending one
	After  uint64 // entries with Seq > After
	Limit  int    // at most this many (0 or less: 100; capped at MaxOutboxList)
}

func outboxLimit(n int) int {
	switch {
	case n <= 0:
		return 100
	case n > MaxOutboxList:
		return MaxOutboxList
	}
	return n
}

func (f OutboxFilter) bucket() []byte {
	if f.Failed {
		return bucketOutboxFailed
	}
	return bucketOutbox
}

// ackOutbox deletes a delivered entry; an entry already gone (delivered by
// another process) is not an error.
func ackOutbox(ctx context.Context, s mutator, seq uint64) error {
	_, err := s.mutate(ctx, func(w *writer) error {
		v, err := w.kv.get(bucketOutbox, be(seq))
		if err != nil || v == nil {
			return err
		}
		return w.del(bucketOutbox, be(seq))
	})
	return err
}

// retryOutbox records a failed attempt of e: its Attempts, NextAttempt and
// LastError; with failed, the entry moves to the failed list.
// ErrNotFound when the entry is no longer pending.
func retryOutbox(ctx context.Context, s mutator, e OutboxEntry, failed bool) error {
	if len(e.LastError) > maxOutboxError {
		e.LastError = e.LastError[:maxOutboxError]
	}
	_, err := s.mutate(ctx, func(w *writer) error {
		k := be(e.Seq)
		v, err := w.kv.get(bucketOutbox, k)
		if err != nil {
			return err
		}
		if v == nil {
			return reject(fmt.Errorf("webhook event %d: %w", e.Seq, ErrNotFound))
		}
		cur, err := decodeOutbox(e.Seq, v)
		if err != nil {
			return err
		}
		cur.Attempts, cur.NextAttempt, cur.LastError = e.Attempts, e.NextAttempt, e.LastError
		if !failed {
			return w.put(bucketOutbox, k, encodeOutbox(&cur))
		}
		if err := w.put(bucketOutboxFailed, k, encodeOutbox(&cur)); err != nil {
			return err
		}
		return w.del(bucketOutbox, k)
	})
	return err
}

// ---- Bolt ----

// ListOutbox returns outbox entries in order: see OutboxFilter.
func (s *Bolt) ListOutbox(ctx context.Context, f OutboxFilter) ([]OutboxEntry, error) {
	var out []OutboxEntry
	if f.After == ^uint64(0) {
		return nil, nil
	}
	err := s.view(ctx, func(tx *bolt.Tx) error {
		out = nil
		fn := outboxFrom(&out, outboxLimit(f.Limit))
		c := tx.Bucket(f.bucket()).Cursor()
		for k, v := c.Seek(be(f.After + 1)); k != nil; k, v = c.Next() {
			if err := fn(k, v); err != nil {
				return err
			}
		}
		return nil
	})
	if errors.Is(err, errStopScan) {
		err = nil
	}
	return out, err
}

// AckOutbox deletes a delivered entry: see ackOutbox.
func (s *Bolt) AckOutbox(ctx context.Context, seq uint64) error { return ackOutbox(ctx, s, seq) }

// RetryOutbox records a failed attempt: see retryOutbox.
func (s *Bolt) RetryOutbox(ctx context.Context, e OutboxEntry, failed bool) error {
	return retryOutbox(ctx, s, e, failed)
}

// OutboxCounts returns the number of pending and of failed entries.
func (s *Bolt) OutboxCounts(ctx context.Context) (pending, failed int, err error) {
	err = s.view(ctx, func(tx *bolt.Tx) error {
		pending = tx.Bucket(bucketOutbox).Stats().KeyN
		failed = tx.Bucket(bucketOutboxFailed).Stats().KeyN
		return nil
	})
	return pending, failed, err
}

// ---- Etcd ----

// ListOutbox returns outbox entries in order: see OutboxFilter.
func (s *Etcd) ListOutbox(ctx context.Context, f OutboxFilter) ([]OutboxEntry, error) {
	if f.After == ^uint64(0) {
		return nil, nil
	}
	var out []OutboxEntry
	fn := outboxFrom(&out, outboxLimit(f.Limit))
	from := s.key(f.bucket(), nil)
	strip := len(from)
	err := s.rangeAll(ctx, s.key(f.bucket(), be(f.After+1)), prefixEndString(from), 0, func(k, v []byte) error {
		return fn(k[strip:], v)
	})
	if errors.Is(err, errStopScan) {
		err = nil
	}
	return out, err
}

// AckOutbox deletes a delivered entry: see ackOutbox.
func (s *Etcd) AckOutbox(ctx context.Context, seq uint64) error { return ackOutbox(ctx, s, seq) }

// RetryOutbox records a failed attempt: see retryOutbox.
func (s *Etcd) RetryOutbox(ctx context.Context, e OutboxEntry, failed bool) error {
	return retryOutbox(ctx, s, e, failed)
}

// OutboxCounts returns the number of pending and of failed entries.
func (s *Etcd) OutboxCounts(ctx context.Context) (pending, failed int, err error) {
	count := func(bucket []byte) (int, error) {
		from := s.key(bucket, nil)
		resp, err := s.get(ctx, from, clientv3.WithRange(prefixEndString(from)), clientv3.WithCountOnly())
		if err != nil {
			return 0, err
		}
		return int(resp.Count), nil
	}
	if pending, err = count(bucketOutbox); err != nil {
		return 0, 0, err
	}
	failed, err = count(bucketOutboxFailed)
	return pending, failed, err
}

// ---- codec ----

func encodeOutbox(x *OutboxEntry) []byte {
	e := newEncoder(256)
	e.str(x.ID)
	e.str(x.Type)
	e.time(x.Time)
	e.uvarint(x.Revision)
	e.str(x.Actor)
	e.str(x.OrgID)
	e.str(x.TokenID)
	e.str(x.NewTokenID)
	e.str(x.Name)
	e.str(x.CreatedBy)
	e.str(x.ParentID)
	e.str(x.KeyID)
	e.str(x.KeyState)
	e.time(x.CreateTime)
	e.time(x.ExpireTime)
	e.time(x.RevokeTime)
	e.time(x.CutTime)
	e.str(x.Reason)
	e.varint(x.Count)
	e.varint(int64(x.Lead))
	e.uvarint(uint64(x.Attempts))
	e.time(x.NextAttempt)
	e.str(x.LastError)
	return e.b
}

func decodeOutbox(seq uint64, v []byte) (OutboxEntry, error) {
	d := newDecoder("webhook event", v)
	x := OutboxEntry{Seq: seq}
	x.ID = d.str()
	x.Type = d.str()
	x.Time = d.time()
	x.Revision = d.uvarint()
	x.Actor = d.str()
	x.OrgID = d.str()
	x.TokenID = d.str()
	x.NewTokenID = d.str()
	x.Name = d.str()
	x.CreatedBy = d.str()
	x.ParentID = d.str()
	x.KeyID = d.str()
	x.KeyState = d.str()
	x.CreateTime = d.time()
	x.ExpireTime = d.time()
	x.RevokeTime = d.time()
	x.CutTime = d.time()
	x.Reason = d.str()
	x.Count = d.varint()
	x.Lead = time.Duration(d.varint())
	attempts := d.uvarint()
	x.NextAttempt = d.time()
	x.LastError = d.str()
	if attempts > 1<<31 {
		d.fail("%d attempts", attempts)
	}
	x.Attempts = int(attempts)
	if err := d.finish(); err != nil {
		return OutboxEntry{}, err
	}
	return x, nil
}

// checkOutbox checks that every outbox entry, pending or failed, decodes,
// and was made at or before the revision counter (an invariant of
// checkInvariants). A file made before the outbox lacks its buckets.
func checkOutbox(tx invKV, rev uint64) error {
	for _, b := range [][]byte{bucketOutbox, bucketOutboxFailed} {
		if !tx.has(b) {
			continue
		}
		if err := tx.scan(b, nil, func(k, v []byte) error {
			if len(k) != 8 {
				return fmt.Errorf("bucket %s: key of %d bytes", b, len(k))
			}
			e, err := decodeOutbox(binary.BigEndian.Uint64(k), v)
			if err != nil {
				return err
			}
			if e.Revision > rev || e.Seq>>8 != e.Revision {
				return fmt.Errorf("bucket %s: entry %d at revision %d (store at %d)", b, e.Seq, e.Revision, rev)
			}
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}
