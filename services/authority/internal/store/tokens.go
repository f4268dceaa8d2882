package store

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Page sizes of ListTokens and ListAudit.
const (
	// DefaultPageSize is the page size when the caller asks for none (0 or
	// less).
	DefaultPageSize = 50
	// MaxPageSize caps the page size; larger requests get this many.
	MaxPageSize = 1000
	// MaxPageTokenLen bounds the length of a page token this store makes;
	// a longer one is ErrBadPageToken without being decoded.
	MaxPageTokenLen = 512
)

// maxScanPerPage bounds the index entries one ListTokens call reads, so
// that a filter matching little cannot hold a read transaction for long; a
// page may then come back short, with a page token to go on.
const maxScanPerPage = 10_000

func pageSize(n int) int {
	switch {
	case n <= 0:
		return DefaultPageSize
	case n > MaxPageSize:
		return MaxPageSize
	}
	return n
}

// getToken reads a token record; ErrNotFound when absent.
func getToken(r kv, id string) (Token, uint64, error) {
	v, err := r.get(bucketTokens, []byte(id))
	if err != nil {
		return Token{}, 0, err
	}
	if v == nil {
		return Token{}, 0, fmt.Errorf("token %s: %w", id, ErrNotFound)
	}
	return decodeToken(v)
}

// checkNewToken validates a token about to be stored.
func checkNewToken(t *Token) error {
	switch {
	case t.ID == "":
		return fmt.Errorf("%w: token id is empty", ErrInvalid)
	case t.OrgID == "":
		return fmt.Errorf("%w: token %s: organization is empty", ErrInvalid, t.ID)
	case t.Name == "":
		return fmt.Errorf("%w: token %s: name is empty", ErrInvalid, t.ID)
	case t.KeyID == "":
		return fmt.Errorf("%w: token %s: key id is empty", ErrInvalid, t.ID)
	case t.CreateTime.IsZero() || t.ExpireTime.IsZero():
		return fmt.Errorf("%w: token %s: create and expire times are required", ErrInvalid, t.ID)
	case !t.ExpireTime.After(t.CreateTime):
		return fmt.Errorf("%w: token %s: expires before it is created", ErrInvalid, t.ID)
	case !t.RevokeTime.IsZero() || t.RevokeRev != 0 || t.RevokeReason != "":
		return fmt.Errorf("%w: token %s: a new token cannot be revoked", ErrInvalid, t.ID)
	}
	return nil
}

// insertToken stores a new token at the next revision (EventTokenCreated)
// with its indexes, takes its name, and moves its key's LastExpiry. now is
// the mutation's time: a live token (active at now) holding the name makes
// it ErrNameTaken. Everything it rejects is rejected before any write.
func insertToken(w *writer, t *Token, now time.Time, nameFrom string) error {
	if v, err := w.kv.get(bucketTokens, []byte(t.ID)); err != nil {
		return err
	} else if v != nil {
		return reject(fmt.Errorf("token %s: %w", t.ID, ErrTokenExists))
	}
	nk := nameKey(t.OrgID, t.Name)
	holder, err := w.kv.get(bucketTokenNames, nk)
	if err != nil {
		return err
	}
	if holder != nil && string(holder) != nameFrom {
		h, _, err := getToken(w.kv, string(holder))
		if isNotFound(err) {
			return fmt.Errorf("%w: name index names token %s that is not stored", ErrCorrupt, holder)
		}
		if err != nil {
			return err
		}
		if h.StateAt(now) == StateActive {
			return reject(fmt.Errorf("organization %q, name %q: %w", t.OrgID, t.Name, ErrNameTaken))
		}
	}
	kval, err := w.kv.get(bucketKeys, []byte(t.KeyID))
	if err != nil {
		return err
	}
	if kval == nil {
		return reject(fmt.Errorf("signing key %s: %w", t.KeyID, ErrNotFound))
	}
	k, km, err := decodeKey(kval)
	if err != nil {
		return err
	}
	if k.State == KeyRevoked {
		return reject(fmt.Errorf("signing key %s: %w", t.KeyID, ErrKeyRevoked))
	}
	if t.ParentID != "" {
		// The minting token was authenticated before this transaction: if
		// it has been revoked since, its cascade could not see this child,
		// which would outlive it. Checked here, under the write lock.
		p, _, err := getToken(w.kv, t.ParentID)
		if isNotFound(err) {
			return reject(fmt.Errorf("%w: token %s: parent token %s is not stored", ErrInvalid, t.ID, t.ParentID))
		}
		if err != nil {
			return err
		}
		if p.RevokeRev != 0 {
			return reject(fmt.Errorf("parent token %s: %w", t.ParentID, ErrNotActive))
		}
	}

	rev, err := w.event(Event{Kind: EventTokenCreated, TokenID: t.ID, ExpiresAt: t.ExpireTime})
	if err != nil {
		return err
	}
	id := []byte(t.ID)
	if err := w.put(bucketTokens, id, encodeToken(t, rev)); err != nil {
		return err
	}
	if err := w.put(bucketTokenNames, nk, id); err != nil {
		return err
	}
	if err := w.put(bucketTokensByOrg, byOrgKey(t.OrgID, rev, t.ID), nil); err != nil {
		return err
	}
	if err := w.put(bucketTokensByCreator, byCreatorKey(t.OrgID, t.CreatedBy, rev, t.ID), nil); err != nil {
		return err
	}
	if err := w.put(bucketUnrevoked, unrevokedKey(t.OrgID, t.CreatedBy, t.ID), encodeExpiry(t.ExpireTime)); err != nil {
		return err
	}
	if t.ParentID != "" {
		if err := w.put(bucketTokensByParent, childKey(t.ParentID, t.ID), nil); err != nil {
			return err
		}
	}
	if t.ExpireTime.After(k.LastExpiry) {
		k.LastExpiry = t.ExpireTime
		return w.put(bucketKeys, []byte(k.ID), encodeKey(&k, km))
	}
	return nil
}

// revokeToken revokes a live token at the next revision (EventTokenRevoked),
// updating the indexes. It returns the updated token.
func revokeToken(w *writer, t Token, createRev uint64, a *AuditRecord) (Token, error) {
	rev, err := w.event(Event{Kind: EventTokenRevoked, TokenID: t.ID, ExpiresAt: t.ExpireTime})
	if err != nil {
		return Token{}, err
	}
	t.RevokeTime, t.RevokeReason, t.RevokeRev = a.Time, a.Reason, rev
	id := []byte(t.ID)
	if err := w.put(bucketTokens, id, encodeToken(&t, createRev)); err != nil {
		return Token{}, err
	}
	if err := w.del(bucketUnrevoked, unrevokedKey(t.OrgID, t.CreatedBy, t.ID)); err != nil {
		return Token{}, err
	}
	if err := w.put(bucketRevoked, id, encodeExpiry(t.ExpireTime)); err != nil {
		return Token{}, err
	}
	// Free the name if this token holds it (a rotation has already moved it).
	nk := nameKey(t.OrgID, t.Name)
	holder, err := w.kv.get(bucketTokenNames, nk)
	if err != nil {
		return Token{}, err
	}
	if bytes.Equal(holder, id) {
		if err := w.del(bucketTokenNames, nk); err != nil {
			return Token{}, err
		}
	}
	return t, nil
}

// fillAudit completes an audit record of a token mutation: the
// organization is always the token's (ListAudit is by organization), the
// token id, name and grants are the token's when the caller left them empty.
func fillAudit(a *AuditRecord, t *Token) {
	a.OrgID = t.OrgID
	if a.TokenID == "" {
		a.TokenID = t.ID
	}
	if a.Name == "" {
		a.Name = t.Name
	}
	if a.Grants == nil {
		a.Grants = t.Grants
	}
}

// createToken stores a new token, its indexes and its audit record in one
// fsynced transaction, and returns its revision. The name is taken when no
// live token of the organization holds it at the time of the create (the
// audit record's time, or the token's create time when that is zero):
// ErrNameTaken otherwise. ErrTokenExists when the id is taken; the signing
// key must exist (ErrNotFound) and not be revoked (ErrKeyRevoked), and its
// LastExpiry moves up to the token's expiry.
func createToken(ctx context.Context, s mutator, t Token, a AuditRecord) (uint64, error) {
	if err := checkNewToken(&t); err != nil {
		return 0, err
	}
	now := a.Time
	if now.IsZero() {
		now = t.CreateTime
	}
	return s.mutate(ctx, func(w *writer) error {
		if err := insertToken(w, &t, now, ""); err != nil {
			return err
		}
		rec := a
		fillAudit(&rec, &t)
		rec.Time = now
		return w.audit(rec)
	})
}

// GetToken returns one token, ErrNotFound when unknown.
func (s *Bolt) GetToken(ctx context.Context, id string) (Token, error) {
	var t Token
	err := s.view(ctx, func(tx *bolt.Tx) error {
		var err error
		if t, _, err = getToken(boltKV{tx}, id); err != nil {
			return err
		}
		return withLastUse(boltKV{tx}, &t)
	})
	return t, err
}

// Page tokens are base64url (no padding) of a tag byte saying which index
// the listing walks, then the index key of the last entry read. The next
// page starts before that key (the walk goes backwards).
const (
	pageTagOrg     byte = 'o'
	pageTagCreator byte = 'c'
)

// ListTokens returns one page of an organization's tokens, newest first
// (by creation revision, walking a listing index backwards), filtered by creator and by state at f.Now, and
// the token of the next page ("" after the last). PageSize defaults to
// DefaultPageSize and is capped at MaxPageSize. A page may hold fewer tokens than asked when the
// filter skips many; only "" means the end. A page token that this store
// did not make for the same organization and creator is ErrBadPageToken.
func (s *Bolt) ListTokens(ctx context.Context, f ListFilter) ([]Token, string, error) {
	if f.OrgID == "" {
		return nil, "", fmt.Errorf("%w: organization is empty", ErrInvalid)
	}
	size := pageSize(f.PageSize)
	bucket, tag, prefix := bucketTokensByOrg, pageTagOrg, orgPrefix(f.OrgID)
	if f.CreatedBy != "" {
		bucket, tag, prefix = bucketTokensByCreator, pageTagCreator, creatorPrefix(f.OrgID, f.CreatedBy)
	}
	var after []byte
	if len(f.PageToken) > MaxPageTokenLen {
		return nil, "", ErrBadPageToken
	}
	if f.PageToken != "" {
		raw, err := base64.RawURLEncoding.DecodeString(f.PageToken)
		if err != nil || len(raw) < 1+len(prefix)+8+1 || raw[0] != tag || !bytes.HasPrefix(raw[1:], prefix) {
			return nil, "", ErrBadPageToken
		}
		after = raw[1:]
	}
	var (
		out  []Token
		next string
	)
	err := s.view(ctx, func(tx *bolt.Tx) error {
		out, next = nil, ""
		tokens := tx.Bucket(bucketTokens)
		// Walk backwards from the page token's key, or from the end of
		// the prefix's range: newest first.
		c := tx.Bucket(bucket).Cursor()
		from := after
		if from == nil {
			from = prefixEnd(prefix)
		}
		var k []byte
		if from == nil {
			k, _ = c.Last()
		} else if k, _ = c.Seek(from); k == nil {
			k, _ = c.Last() // nothing at or after from: the last key is before it
		} else {
			k, _ = c.Prev()
		}
		var lastOut, lastSeen []byte
		for scanned := 0; hasPrefix(k, prefix); k, _ = c.Prev() {
			if scanned == maxScanPerPage {
				next = pageToken(tag, lastSeen)
				return nil
			}
			scanned++
			if len(k) < len(prefix)+8+1 {
				return fmt.Errorf("%w: short listing key", ErrCorrupt)
			}
			id := k[len(prefix)+8:]
			v := tokens.Get(id)
			if v == nil {
				return fmt.Errorf("%w: listing names token %s that is not stored", ErrCorrupt, id)
			}
			t, _, err := decodeToken(v)
			if err != nil {
				return err
			}
			lastSeen = k
			lu, _ := boltKV{tx}.get(bucketLastUse, id) // nil in a file opened read-only before the bucket existed
			t.LastUseTime = lastUseOf(lu)
			if f.State != StateAny && t.StateAt(f.Now) != f.State || !f.matchesUse(&t) {
				continue
			}
			if len(out) == size {
				// Another match exists: the next page starts after this page.
				next = pageToken(tag, lastOut)
				return nil
			}
			out = append(out, t)
			lastOut = k
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	return out, next, nil
}

// pageToken encodes a listing position; it copies k, which belongs to the
// transaction.
func pageToken(tag byte, k []byte) string {
	raw := make([]byte, 0, 1+len(k))
	raw = append(raw, tag)
	raw = append(raw, k...)
	return base64.RawURLEncoding.EncodeToString(raw)
}

// revokeTokenOp revokes one token (a.Time is the revocation time and a.Reason
// its reason) and every unrevoked token minted through it, transitively
// (the cascade: see revocationOrder), and returns the token with the
// revision of its revocation and the number of descendants revoked. Each
// descendant gets its own event and audit record (AuditTokenRevoked, reason
// CascadeReason), at revisions before the token's own, so the revision
// returned covers the whole cascade. A token past its expiry can still be
// revoked.
//
// Revoking a revoked token returns the stored token and its original
// revision and writes nothing, unless a descendant of it is still
// unrevoked, which only a file written before the cascade existed can hold:
// those descendants are revoked then (reason CascadeReason(id, a.Reason)).
// The revision returned is always the latest revocation of the token and
// its descendants, so that it covers the tree as a min_revision: the
// token's own but in that case.
func revokeTokenOp(ctx context.Context, s mutator, id string, a AuditRecord) (Token, uint64, int64, error) {
	if a.Time.IsZero() {
		return Token{}, 0, 0, fmt.Errorf("%w: revocation time is zero", ErrInvalid)
	}
	var (
		out      Token
		rev      uint64
		n        int64
		deferred bool
	)
	last, err := s.mutate(ctx, func(w *writer) error {
		out, rev, n, deferred = Token{}, 0, 0, false
		t, _, err := getToken(w.kv, id)
		if err != nil {
			if isNotFound(err) {
				return reject(err)
			}
			return err
		}
		order, maxRevoked, err := revocationOrder(w.kv, []string{id}, "")
		if err != nil {
			return err
		}
		if w.tooMany(len(order)) {
			// Carried out in chunks after this commit (etcd): the
			// results are known but for the last revision.
			deferred, n, out = true, cascadedCount(order), t
			var final *AuditRecord
			if t.RevokeRev == 0 {
				rec := a
				fillAudit(&rec, &t)
				rec.Count = n
				final = &rec
				out.RevokeTime, out.RevokeReason = a.Time, a.Reason
			}
			return w.deferRevocations(order, &a, final)
		}
		if n, err = revokeAll(w, order, &a); err != nil {
			return err
		}
		if t.RevokeRev != 0 {
			// The revision covers every revocation of the tree, for a
			// min_revision: the token's own unless a file from before the
			// cascade left descendants to revoke later or now.
			out, rev = t, maxRevoked
			if n > 0 {
				rev = w.rev
			}
			return nil
		}
		// The token is the last of the order: its revocation is the last
		// revision, where its audit record goes.
		if out, _, err = getToken(w.kv, id); err != nil {
			return err
		}
		rev = out.RevokeRev
		rec := a
		fillAudit(&rec, &t)
		rec.Count = n // the descendants the cascade revoked
		return w.audit(rec)
	})
	if err != nil {
		return Token{}, 0, 0, err
	}
	if deferred {
		rev = last
		if out.RevokeRev == 0 {
			out.RevokeRev = last
		}
	}
	return out, rev, n, nil
}

// CascadePrefix starts the reason of every revocation made by the cascade:
// CascadeReason.
const CascadePrefix = "cascade from "

// CascadeReason is the revocation reason of a token revoked because the
// token from, which it descends, was revoked for reason: "cascade from
// <from>", then ": <reason>" when reason is not empty.
func CascadeReason(from, reason string) string {
	if reason == "" {
		return CascadePrefix + from
	}
	return CascadePrefix + from + ": " + reason
}

// revocation is one token a revocation revokes.
type revocation struct {
	t         Token
	createRev uint64
	requested bool   // named by the request; false: revoked by the cascade
	cause     string // cascade: the nearest requested token it descends from
}

// revocationOrder returns what revoking roots revokes: the unrevoked roots
// and every unrevoked token minted through one of them, transitively
// (tokens expired but not revoked included: a cascade leaves no token of
// the tree unrevoked), except spare and its descendants. Each token comes
// after all of its descendants (a post-order walk of the parent index), so
// that at no revision is a token revoked while a descendant is not, and the
// last element is a root.
//
// Revoked tokens are walked through, not stopped at: their descendants are
// revoked already, unless the file was written before the cascade existed.
// The walk reads each token of the trees once, so its cost is linear in
// their size. It only reads: the caller writes once it has the order. It
// also returns the latest revocation revision among the tokens of the
// trees already revoked (roots included).
func revocationOrder(tx kv, roots []string, spare string) ([]revocation, uint64, error) {
	requested := make(map[string]bool, len(roots))
	for _, id := range roots {
		requested[id] = true
	}
	visited := map[string]bool{}
	if spare != "" {
		visited[spare] = true
	}
	type frame struct {
		r        revocation
		children []string
		next     int
	}
	var (
		out        []revocation
		stack      []frame
		maxRevoked uint64
	)
	push := func(id, parent, cause string) error {
		visited[id] = true
		t, createRev, err := getToken(tx, id)
		if err != nil {
			if parent != "" && isNotFound(err) {
				return fmt.Errorf("%w: parent index names token %s that is not stored", ErrCorrupt, id)
			}
			return err
		}
		if parent != "" && t.ParentID != parent {
			return fmt.Errorf("%w: parent index puts token %s under %s, its record under %q", ErrCorrupt, id, parent, t.ParentID)
		}
		children, err := childrenOf(tx, id)
		if err != nil {
			return err
		}
		r := revocation{t: t, createRev: createRev, requested: requested[id], cause: cause}
		stack = append(stack, frame{r: r, children: children})
		return nil
	}
	for _, root := range roots {
		if visited[root] {
			continue
		}
		if err := push(root, "", ""); err != nil {
			return nil, 0, err
		}
		for len(stack) > 0 {
			top := &stack[len(stack)-1]
			if top.next < len(top.children) {
				child := top.children[top.next]
				top.next++
				if visited[child] {
					continue
				}
				cause := top.r.cause
				if top.r.requested {
					cause = top.r.t.ID
				}
				if err := push(child, top.r.t.ID, cause); err != nil {
					return nil, 0, err
				}
				continue
			}
			if top.r.t.RevokeRev == 0 {
				out = append(out, top.r)
			}
			maxRevoked = max(maxRevoked, top.r.t.RevokeRev)
			stack = stack[:len(stack)-1]
		}
	}
	return out, maxRevoked, nil
}

// childrenOf returns the ids of the tokens minted through id, from the
// parent index.
func childrenOf(tx kv, id string) ([]string, error) {
	prefix := lp(nil, id)
	var out []string
	err := tx.scan(bucketTokensByParent, prefix, func(k, _ []byte) error {
		if len(k) == len(prefix) {
			return fmt.Errorf("%w: parent index key without a child id", ErrCorrupt)
		}
		out = append(out, string(k[len(prefix):]))
		return nil
	})
	return out, err
}

// revokeAll revokes the tokens of order, in order: a requested one with a
// (its audit record is the caller's business), a cascaded one with its own
// audit record at its revocation's revision. It returns how many it revoked
// by the cascade.
func revokeAll(w *writer, order []revocation, a *AuditRecord) (int64, error) {
	var cascaded int64
	for _, r := range order {
		if err := revokeOne(w, r, a); err != nil {
			return 0, err
		}
		if !r.requested {
			cascaded++
		}
	}
	return cascaded, nil
}

// revokeOne revokes one token of a revocation order (see revokeAll).
func revokeOne(w *writer, r revocation, a *AuditRecord) error {
	if r.requested {
		t, err := revokeToken(w, r.t, r.createRev, a)
		if err != nil || a.Action != AuditTokensRevoked {
			return err
		}
		// A bulk revocation writes one audit record for all the tokens
		// it selected, but each gets its own webhook event.
		return w.enqueueToken(WebhookTokenRevoked, a, &t)
	}
	rec := AuditRecord{Time: a.Time, Actor: a.Actor, Action: AuditTokenRevoked, Reason: CascadeReason(r.cause, a.Reason)}
	fillAudit(&rec, &r.t)
	if _, err := revokeToken(w, r.t, r.createRev, &rec); err != nil {
		return err
	}
	return w.audit(rec)
}

// cascadedCount is how many tokens of order the cascade revokes (those
// the request did not name).
func cascadedCount(order []revocation) int64 {
	var n int64
	for _, r := range order {
		if !r.requested {
			n++
		}
	}
	return n
}

// addParentIndex makes bucketTokensByParent in a file written before it
// existed, from the tokens' records.
func addParentIndex(tx *bolt.Tx) error {
	b, err := tx.CreateBucket(bucketTokensByParent)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketTokens).ForEach(func(_, v []byte) error {
		t, _, err := decodeToken(v)
		if err != nil || t.ParentID == "" {
			return err
		}
		return b.Put(childKey(t.ParentID, t.ID), nil)
	})
}

// revokeTokens revokes, in one transaction, every live token (not revoked,
// not expired at a.Time) of an organization, or only those made for
// createdBy when it is set, and every unrevoked token minted through them,
// transitively (the cascade, as in RevokeToken). Each revoked token gets its
// own event and revision, and each cascaded one its own audit record
// (reason CascadeReason from the nearest selected ancestor); one audit
// record, with Count the number of tokens the filter selected, is written at
// the last revision, which is returned. The count returned includes the
// cascaded tokens. With no live token nothing is written, and the revision
// returned is the current one.
func revokeTokens(ctx context.Context, s mutator, orgID, createdBy string, a AuditRecord) (int64, uint64, error) {
	if orgID == "" {
		return 0, 0, fmt.Errorf("%w: organization is empty", ErrInvalid)
	}
	if a.Time.IsZero() {
		return 0, 0, fmt.Errorf("%w: revocation time is zero", ErrInvalid)
	}
	prefix := orgPrefix(orgID)
	if createdBy != "" {
		prefix = creatorPrefix(orgID, createdBy)
	}
	var (
		count    int64
		rev      uint64
		deferred bool
	)
	last, err := s.mutate(ctx, func(w *writer) error {
		count, rev, deferred = 0, w.start, false
		// Collect first: a bucket must not change under its cursor.
		var ids []string
		if err := w.kv.scan(bucketUnrevoked, prefix, func(k, v []byte) error {
			exp, err := decodeExpiry(v)
			if err != nil {
				return err
			}
			if !a.Time.Before(exp) {
				return nil // expired: not live, nothing to revoke
			}
			id, err := tokenIDOfUnrevoked(k)
			if err != nil {
				return err
			}
			ids = append(ids, id)
			return nil
		}); err != nil {
			return err
		}
		for _, id := range ids {
			t, _, err := getToken(w.kv, id)
			if err != nil {
				return err
			}
			if t.RevokeRev != 0 || (createdBy != "" && t.CreatedBy != createdBy) || t.OrgID != orgID {
				return fmt.Errorf("%w: unrevoked index disagrees with token %s", ErrCorrupt, id)
			}
		}
		if len(ids) == 0 {
			return nil
		}
		order, _, err := revocationOrder(w.kv, ids, "")
		if err != nil {
			return err
		}
		if w.tooMany(len(order)) {
			count, deferred = int64(len(order)), true
			rec := a
			rec.OrgID, rec.Count = orgID, count-cascadedCount(order)
			return w.deferRevocations(order, &a, &rec)
		}
		cascaded, err := revokeAll(w, order, &a)
		if err != nil {
			return err
		}
		count = int64(len(order))
		rev = w.rev
		rec := a
		rec.OrgID, rec.Count = orgID, count-cascaded
		return w.audit(rec)
	})
	if err != nil {
		return 0, 0, err
	}
	if deferred {
		rev = last
	}
	return count, rev, nil
}

// tokenIDOfUnrevoked returns the token id of a bucketUnrevoked key
// lp(org)+lp(createdBy)+id, copied.
func tokenIDOfUnrevoked(k []byte) (string, error) {
	d := &decoder{what: "unrevoked index key", b: k}
	d.raw() // org
	d.raw() // creator
	if d.err == nil && len(d.b) == 0 {
		d.fail("no token id")
	}
	if d.err != nil {
		return "", d.err
	}
	return string(d.b), nil
}

// isNotFound reports whether err is ErrNotFound.
func isNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// rotateToken stores next and revokes oldID in one transaction, with every
// unrevoked token minted through oldID (the cascade, as in RevokeToken:
// they were minted through a credential that is now revoked), and returns
// the revision of the old token's revocation, which is the last: next is
// created first, then the descendants are revoked. It also returns the
// number of descendants revoked. The old token must be active at a.Time
// (ErrNotActive when revoked or expired, ErrNotFound when unknown); next
// keeps its organization and name (ErrInvalid otherwise), and the name
// moves to next. next is never revoked by the cascade; its parent must not
// be: a parent that is oldID or descends from it is ErrInvalid.
func rotateToken(ctx context.Context, s mutator, oldID string, next Token, a AuditRecord) (uint64, int64, error) {
	if err := checkNewToken(&next); err != nil {
		return 0, 0, err
	}
	if a.Time.IsZero() {
		return 0, 0, fmt.Errorf("%w: rotation time is zero", ErrInvalid)
	}
	var n int64
	rev, err := s.mutate(ctx, func(w *writer) error {
		n = 0
		old, createRev, err := getToken(w.kv, oldID)
		if err != nil {
			if isNotFound(err) {
				return reject(err)
			}
			return err
		}
		if old.StateAt(a.Time) != StateActive {
			return reject(fmt.Errorf("token %s: %w", oldID, ErrNotActive))
		}
		if next.OrgID != old.OrgID || next.Name != old.Name {
			return reject(fmt.Errorf("%w: rotation of token %s must keep its organization and name", ErrInvalid, oldID))
		}
		order, _, err := revocationOrder(w.kv, []string{oldID}, next.ID)
		if err != nil {
			return err
		}
		for _, r := range order {
			if r.t.ID == next.ParentID {
				return reject(fmt.Errorf("%w: rotation of token %s: the new token's parent would be revoked with it", ErrInvalid, oldID))
			}
		}
		// The old token holds the name and is live: insertToken may take it.
		if err := insertToken(w, &next, a.Time, oldID); err != nil {
			return err
		}
		if order[len(order)-1].t.ID != old.ID || createRev != order[len(order)-1].createRev {
			return fmt.Errorf("%w: rotation of token %s: revocation order does not end with it", ErrCorrupt, oldID)
		}
		if w.tooMany(len(order)) {
			n = cascadedCount(order)
			rec := a
			fillAudit(&rec, &next)
			return w.deferRevocations(order, &a, &rec)
		}
		if n, err = revokeAll(w, order, &a); err != nil {
			return err
		}
		rec := a
		fillAudit(&rec, &next)
		return w.audit(rec)
	})
	if err != nil {
		return 0, 0, err
	}
	return rev, n, nil
}
