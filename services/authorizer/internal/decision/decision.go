// Package decision decides permission checks: offline token verification,
// key state, time, revocation, organization and grants, with a bounded cache
// of verified claims. It knows nothing of gRPC.
//
// The checks run in this order; the first that fails is the denial's reason:
//  1. size, prefix, checksum and encoding: Malformed;
//  2. the signing key is known: UnknownKey;
//  3. the signature verifies under it: BadSignature (claims that do not
//     decode after a good signature are Malformed);
//  4. the key is not revoked, and the token was not issued in or after its
//     cut (RevokeSigningKey with issued_after) when it has one: KeyRevoked;
//  5. issue and expiry times, with the clock leeway: NotYetValid, Expired;
//  6. the token is not revoked: Revoked;
//  7. the organization, when the check names one: OrgMismatch;
//  8. a grant carries the permission: PermissionNotGranted; and covers the
//     resource (equal to one of the grant's, or below it; an unrestricted
//     grant when no resource is named): ResourceNotGranted.
//
// Only a check that passes all eight is an Allow.
package decision

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/pkg/token"
)

// Reason is the outcome of a decision. Its zero value is a denial
// (Malformed), so a Decision nobody filled in never allows.
type Reason int

// The outcomes, one per DenyReason of the API, plus Allow.
const (
	// Malformed: not a well-formed token (size, prefix, checksum, encoding,
	// version or claims).
	Malformed Reason = iota
	// BadSignature: the signature does not verify.
	BadSignature
	// UnknownKey: the token names a key the authority has not announced.
	UnknownKey
	// KeyRevoked: the token's signing key was revoked.
	KeyRevoked
	// NotYetValid: the token's issue time is beyond now plus the leeway.
	NotYetValid
	// Expired: the token's expiry is at or before now minus the leeway.
	Expired
	// Revoked: the token was revoked.
	Revoked
	// OrgMismatch: the token belongs to another organization than asked.
	OrgMismatch
	// PermissionNotGranted: no grant carries the permission.
	PermissionNotGranted
	// ResourceNotGranted: a grant carries the permission, not on the resource.
	ResourceNotGranted
	// Allow: every check passed. It is set in one place only (Verdict.Check).
	Allow
	numReasons
)

// Reasons lists every Reason, in order.
func Reasons() []Reason {
	out := make([]Reason, numReasons)
	for i := range out {
		out[i] = Reason(i)
	}
	return out
}

var reasonNames = [numReasons]string{
	Malformed:            "malformed",
	BadSignature:         "bad_signature",
	UnknownKey:           "unknown_key",
	KeyRevoked:           "key_revoked",
	NotYetValid:          "not_yet_valid",
	Expired:              "expired",
	Revoked:              "revoked",
	OrgMismatch:          "org_mismatch",
	PermissionNotGranted: "permission_not_granted",
	ResourceNotGranted:   "resource_not_granted",
	Allow:                "allowed",
}

// String returns the reason's metric label, for example "key_revoked".
func (r Reason) String() string {
	if r < 0 || r >= numReasons {
		return fmt.Sprintf("reason(%d)", int(r))
	}
	return reasonNames[r]
}

// State is the authorizer's view of the authority: keys, revoked tokens and
// the applied revision. The follower implements it.
type State interface {
	token.KeySet
	// Inspect reports, at one consistent point, the key keyID (its public
	// key, whether it is known and whether it is revoked), whether token id
	// is revoked, and the applied revision.
	Inspect(keyID string, id token.ID) (pub ed25519.PublicKey, keyKnown, keyRevoked, tokenRevoked bool, revision uint64)
	// Revision returns the applied revision.
	Revision() uint64
}

// CutState is a State that also knows key cuts; the follower implements
// it. Against a State without it no key has a cut.
type CutState interface {
	// InspectCut is Inspect with the key's cut (zero when none): tokens it
	// signed with an issue time at or after the cut are revoked.
	InspectCut(keyID string, id token.ID) (pub ed25519.PublicKey, keyKnown, keyRevoked bool, keyCut time.Time, tokenRevoked bool, revision uint64)
}

// Options configures a Decider.
type Options struct {
	// Codec parses and verifies tokens. Required.
	Codec *token.Codec
	// State gives keys, revocations and the revision. Required.
	State State
	// Leeway is the tolerance on issue and expiry times.
	Leeway time.Duration
	// CacheSize bounds the verified-claims cache (entries). Required, ≥ 1.
	CacheSize int
	// Now returns the current time; time.Now when nil.
	Now func() time.Time
	// Usage, when set, hears of every allowed decision (package usage
	// reports them to the authority as the token's last use). Denials,
	// forged tokens among them, are never recorded.
	Usage Recorder
}

// Recorder records token uses. Record is called on the check path with
// the time of an allowed decision (the decider's clock, read once per
// check), at most once a minute per token while its claims stay cached:
// it must not block, and reports whether it took the use (false: call
// again at the next use).
type Recorder interface {
	Record(id token.ID, at time.Time) bool
}

// cached is a verified token: its claims and the public key its signature
// was verified with. A hit counts only while the key set still holds that
// same public key under the claims' key id.
type cached struct {
	claims *token.Claims
	pub    ed25519.PublicKey
	// recorded is the unix minute of the token's last use handed to the
	// Recorder (when there is one): a token checked many times a minute is
	// recorded once, with one atomic load on every other check.
	recorded *atomic.Int64
	// touched is when (unix nanoseconds, the decider's clock) the entry was
	// last moved to the front of the cache.
	touched *atomic.Int64
}

// touchEvery is how often a cached token is moved to the front of the
// cache. Moving it takes the cache's write lock; a hit in between takes
// only its read lock, so that concurrent checks do not queue on one lock.
// Recency is kept to this precision: a token checked at least once per
// touchEvery is never evicted ahead of one checked less often.
const touchEvery = time.Second

// verifiedClaims holds a token's claims, the minute its last use was
// recorded and its last move to the front of the cache in one allocation:
// both sit on the cache line of the claims' last fields, which every check
// reads, so looking them up costs no extra memory access.
type verifiedClaims struct {
	claims   token.Claims
	recorded atomic.Int64
	touched  atomic.Int64
}

// Decider decides checks. It is safe for concurrent use.
type Decider struct {
	codec  *token.Codec
	state  State
	cuts   CutState // state's, when it has cuts; else nil
	leeway time.Duration
	now    func() time.Time
	cache  *lru.Cache[string, cached]
	usage  Recorder // nil: uses are not recorded

	hits, misses counter
}

// New returns a Decider.
func New(opts Options) (*Decider, error) {
	if opts.Codec == nil || opts.State == nil {
		return nil, errors.New("decision: codec and state are required")
	}
	if opts.CacheSize < 1 {
		return nil, fmt.Errorf("decision: cache size %d: must be at least 1", opts.CacheSize)
	}
	c, err := lru.New[string, cached](opts.CacheSize)
	if err != nil {
		return nil, fmt.Errorf("decision: cache: %w", err)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	cuts, _ := opts.State.(CutState)
	return &Decider{codec: opts.Codec, state: opts.State, cuts: cuts, leeway: opts.Leeway, now: now, cache: c, usage: opts.Usage}, nil
}

// inspect reads the key, its cut and the token's revocation at one point.
func (d *Decider) inspect(keyID string, id token.ID) (pub ed25519.PublicKey, known, keyRevoked bool, cut time.Time, tokRevoked bool, rev uint64) {
	if d.cuts != nil {
		return d.cuts.InspectCut(keyID, id)
	}
	pub, known, keyRevoked, tokRevoked, rev = d.state.Inspect(keyID, id)
	return pub, known, keyRevoked, time.Time{}, tokRevoked, rev
}

// Verdict is the outcome of the token-level checks (everything up to and
// including the organization), to which permission checks are then put.
// Its zero value is a Malformed denial.
type Verdict struct {
	reason   Reason // meaningful only when !ok
	ok       bool   // every token-level check passed
	claims   *token.Claims
	revision uint64
	usage    Recorder      // set when ok and uses are recorded
	at       time.Time     // the decision's time, with usage
	recorded *atomic.Int64 // the cache entry's last recorded minute, with usage
}

// Claims returns the token's claims once its signature verified, else nil.
// They are shared with the cache and must not be modified.
func (v Verdict) Claims() *token.Claims { return v.claims }

// Revision returns the applied revision the verdict was made at.
func (v Verdict) Revision() uint64 { return v.revision }

// Decision is the answer to one check. Its zero value is a Malformed denial.
type Decision struct {
	// Reason is Allow when allowed, else why not.
	Reason Reason
	// Claims are set once the token's signature verified, else nil. They
	// are shared with the cache and must not be modified.
	Claims *token.Claims
	// Revision is the applied revision the decision was made at.
	Revision uint64
}

// Allowed reports whether the check is allowed.
func (d Decision) Allowed() bool { return d.Reason == Allow }

// Decide checks tok for permission on resource (empty: no resource), in
// organization orgID when it is not empty.
func (d *Decider) Decide(tok, permission, resource, orgID string) Decision {
	return d.Authenticate(tok, orgID).Check(permission, resource)
}

// Authenticate runs the token-level checks, in order: size,
// prefix and checksum, decoding, key lookup, signature, claims, key state,
// time (with the leeway), revocation, organization.
func (d *Decider) Authenticate(tok, orgID string) Verdict {
	if len(tok) > token.MaxLen {
		// Checked before the cache so a huge string is never hashed.
		return Verdict{reason: Malformed, revision: d.state.Revision()}
	}
	// The clock is read once per check: for the cache's recency, the
	// token's times and the recorded use.
	now := d.now()
	var c cached
	hit := false
	if e, ok := d.cache.Peek(tok); ok {
		c, hit = e, true
		d.touch(tok, c, now)
	}
	pub, known, keyRevoked, cut, tokRevoked, rev := ed25519.PublicKey(nil), false, false, time.Time{}, false, uint64(0)
	if hit {
		pub, known, keyRevoked, cut, tokRevoked, rev = d.inspect(c.claims.KeyID, c.claims.ID)
		if !known {
			d.hits.inc()
			return Verdict{reason: UnknownKey, revision: rev}
		}
		if !bytes.Equal(pub, c.pub) {
			// The key id now names another key (a new epoch): verify again.
			d.cache.Remove(tok)
			hit = false
		}
	}
	if hit {
		d.hits.inc()
	} else {
		d.misses.inc()
		rec := recorders.Get().(*recordingKeys)
		rec.state, rec.pub = d.state, nil
		claims, err := d.codec.Verify(tok, rec)
		used := rec.pub
		rec.state, rec.pub = nil, nil
		recorders.Put(rec)
		if err != nil || claims == nil {
			return Verdict{reason: verifyReason(err), revision: d.state.Revision()}
		}
		vc := &verifiedClaims{claims: *claims}
		vc.touched.Store(now.UnixNano())
		c = cached{claims: &vc.claims, pub: used, recorded: &vc.recorded, touched: &vc.touched}
		pub, known, keyRevoked, cut, tokRevoked, rev = d.inspect(claims.KeyID, claims.ID)
		if !known || !bytes.Equal(pub, c.pub) {
			// The key changed between verification and now: deny, and do
			// not cache what was verified against a key no longer held.
			return Verdict{reason: UnknownKey, revision: rev}
		}
		d.cache.Add(tok, c)
	}
	// The signature verified: from here on the claims may be reported.
	v := Verdict{claims: c.claims, revision: rev}
	// A cut is a whole second (token issue times are) and voids the tokens
	// issued in or after it: an issue time cannot tell which side of a cut
	// within its own second the token was made.
	if keyRevoked || (!cut.IsZero() && !c.claims.IssuedAt.Before(cut)) {
		v.reason = KeyRevoked
		return v
	}
	if err := c.claims.CheckTime(now, d.leeway); err != nil {
		v.reason = timeReason(err)
		return v
	}
	switch {
	case tokRevoked:
		v.reason = Revoked
	case orgID != "" && orgID != c.claims.OrgID:
		v.reason = OrgMismatch
	default:
		v.ok = true
		if d.usage != nil {
			v.usage, v.at, v.recorded = d.usage, now, c.recorded
		}
	}
	return v
}

// touch moves a cached token to the front of the cache, at most once per
// touchEvery (or when the clock went back).
func (d *Decider) touch(tok string, c cached, now time.Time) {
	t, last := now.UnixNano(), c.touched.Load()
	if t-last < int64(touchEvery) && t >= last {
		return
	}
	if c.touched.CompareAndSwap(last, t) {
		d.cache.Get(tok)
	}
}

// Check puts one permission check to a verdict.
func (v Verdict) Check(permission, resource string) Decision {
	d := Decision{Reason: v.reason, Claims: v.claims, Revision: v.revision}
	if !v.ok {
		if d.Reason == Allow {
			d.Reason = Malformed // cannot happen; fail closed all the same
		}
		return d
	}
	switch scope.Match(v.claims.Grants, permission, resource) {
	case scope.Allowed:
		d.Reason = Allow // the only place a decision becomes an allow
		if v.usage != nil {
			v.recordUse()
		}
	case scope.ResourceNotGranted:
		d.Reason = ResourceNotGranted
	default:
		d.Reason = PermissionNotGranted
	}
	return d
}

// recordUse hands the token's use to the Recorder, unless it was handed
// one already in this minute. A use the Recorder could not take (its
// buffer full) is offered again at the next allowed check.
func (v Verdict) recordUse() {
	m := v.at.Unix() / 60
	if v.recorded.Load() == m {
		return
	}
	if v.usage.Record(v.claims.ID, v.at) {
		v.recorded.Store(m)
	}
}

// verifyReason maps a Verify error onto a reason; anything unexpected is
// Malformed.
func verifyReason(err error) Reason {
	switch {
	case errors.Is(err, token.ErrBadSignature):
		return BadSignature
	case errors.Is(err, token.ErrUnknownKey):
		return UnknownKey
	case errors.Is(err, token.ErrKeyRevoked):
		return KeyRevoked
	case errors.Is(err, token.ErrNotYetValid):
		return NotYetValid
	case errors.Is(err, token.ErrExpired):
		return Expired
	default:
		return Malformed
	}
}

// timeReason maps a CheckTime error onto a reason.
func timeReason(err error) Reason {
	if errors.Is(err, token.ErrNotYetValid) {
		return NotYetValid
	}
	return Expired // ErrExpired, or anything unexpected: deny
}

// recordingKeys lends the state's keys to Verify, reporting every key as not
// revoked (key state is checked afterwards, with the other state, at one
// consistent point) and remembering the public key the signature was
// checked against.
type recordingKeys struct {
	state State
	pub   ed25519.PublicKey
}

// recorders recycles recordingKeys, so that rejecting a malformed token
// allocates nothing here.
var recorders = sync.Pool{New: func() any { return new(recordingKeys) }}

// Lookup implements token.KeySet.
func (r *recordingKeys) Lookup(keyID string) (ed25519.PublicKey, bool, bool) {
	pub, _, ok := r.state.Lookup(keyID)
	if ok {
		r.pub = pub
	}
	return pub, false, ok
}

// CacheStats returns the cache's hit and miss counts.
func (d *Decider) CacheStats() (hits, misses uint64) { return d.hits.load(), d.misses.load() }

// CacheLen returns the number of cached tokens.
func (d *Decider) CacheLen() int { return d.cache.Len() }
