package decision

import (
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/pkg/token"
)

// memState is an in-memory State for tests.
type memState struct {
	mu       sync.Mutex
	keys     map[string]memKey
	revoked  map[token.ID]bool
	revision uint64
}

type memKey struct {
	pub     ed25519.PublicKey
	revoked bool
}

func newMemState() *memState {
	return &memState{keys: map[string]memKey{}, revoked: map[token.ID]bool{}, revision: 7}
}

func (m *memState) Lookup(id string) (ed25519.PublicKey, bool, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k, ok := m.keys[id]
	return k.pub, k.revoked, ok
}

func (m *memState) Inspect(keyID string, id token.ID) (ed25519.PublicKey, bool, bool, bool, uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k, ok := m.keys[keyID]
	return k.pub, ok, k.revoked, m.revoked[id], m.revision
}

func (m *memState) Revision() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.revision
}

func (m *memState) setKey(id string, pub ed25519.PublicKey, revoked bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.keys[id] = memKey{pub: pub, revoked: revoked}
	m.revision++
}

func (m *memState) dropKey(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.keys, id)
	m.revision++
}

func (m *memState) revoke(id token.ID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.revoked[id] = true
	m.revision++
}

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time)     { c.mu.Lock(); c.t = t; c.mu.Unlock() }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func newKey(t testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func newID(t testing.TB) token.ID {
	t.Helper()
	id, err := token.NewID()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

var (
	t0     = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	leeway = 30 * time.Second
)

// fixture is a decider over a memState with keys "active", "verify" and
// "revoked", and a clock at t0.
type fixture struct {
	codec *token.Codec
	state *memState
	clock *clock
	dec   *Decider
	priv  map[string]ed25519.PrivateKey
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	codec, err := token.NewCodec("")
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{codec: codec, state: newMemState(), clock: &clock{t: t0}, priv: map[string]ed25519.PrivateKey{}}
	for _, k := range []struct {
		id      string
		revoked bool
	}{{"active", false}, {"verify", false}, {"revoked", true}} {
		pub, priv := newKey(t)
		f.state.setKey(k.id, pub, k.revoked)
		f.priv[k.id] = priv
	}
	_, f.priv["unknown"] = newKey(t)
	f.dec, err = New(Options{Codec: codec, State: f.state, Leeway: leeway, CacheSize: 1000, Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// mint signs c with the private key of c.KeyID (or signer when set).
func (f *fixture) mint(t testing.TB, c token.Claims, signer string) string {
	t.Helper()
	if signer == "" {
		signer = c.KeyID
	}
	tok, err := f.codec.Mint(c, f.priv[signer])
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func baseClaims(t testing.TB) token.Claims {
	return token.Claims{
		ID:        newID(t),
		OrgID:     "org-a",
		KeyID:     "active",
		IssuedAt:  t0.Add(-time.Hour),
		ExpiresAt: t0.Add(24 * time.Hour),
		Grants: []scope.Grant{
			{Permissions: []string{"domain:renew", "domain:view"}, Resources: []string{"domains/example.com"}},
			{Permissions: []string{"billing:view"}},
		},
	}
}

func TestDecide(t *testing.T) {
	f := newFixture(t)
	revokedID := newID(t)
	f.state.revoke(revokedID)

	type req struct{ perm, res, org string }
	domainRenew := req{"domain:renew", "domains/example.com", ""}
	tests := []struct {
		name       string
		claims     func(*token.Claims)
		signer     string              // key that signs; default claims.KeyID
		mangle     func(string) string // applied to the minted token
		req        req
		want       Reason
		wantClaims bool
	}{
		{name: "allowed on granted resource", req: domainRenew, want: Allow, wantClaims: true},
		{name: "allowed on child of granted resource", req: req{"domain:renew", "domains/example.com/records/www", ""}, want: Allow, wantClaims: true},
		{name: "segment boundary: sibling with common prefix", req: req{"domain:renew", "domains/example.com.evil", ""}, want: ResourceNotGranted, wantClaims: true},
		{name: "segment boundary: shorter name", req: req{"domain:renew", "domains/example.co", ""}, want: ResourceNotGranted, wantClaims: true},
		{name: "other resource", req: req{"domain:renew", "domains/other.org", ""}, want: ResourceNotGranted, wantClaims: true},
		{name: "no resource needs an unrestricted grant", req: req{"domain:renew", "", ""}, want: ResourceNotGranted, wantClaims: true},
		{name: "unrestricted grant without resource", req: req{"billing:view", "", ""}, want: Allow, wantClaims: true},
		{name: "unrestricted grant covers every resource", req: req{"billing:view", "invoices/2026-01", ""}, want: Allow, wantClaims: true},
		{name: "permission not granted", req: req{"domain:tech", "domains/example.com", ""}, want: PermissionNotGranted, wantClaims: true},
		{name: "permission not granted without resource", req: req{"cloud:manage", "", ""}, want: PermissionNotGranted, wantClaims: true},
		{name: "org matches", req: req{"domain:renew", "domains/example.com", "org-a"}, want: Allow, wantClaims: true},
		{name: "org mismatch", req: req{"domain:renew", "domains/example.com", "org-b"}, want: OrgMismatch, wantClaims: true},
		{name: "org mismatch comes before permission", req: req{"cloud:manage", "", "org-b"}, want: OrgMismatch, wantClaims: true},
		{name: "verify-only key still verifies", claims: func(c *token.Claims) { c.KeyID = "verify" }, req: domainRenew, want: Allow, wantClaims: true},
		{name: "malformed: empty", mangle: func(string) string { return "" }, req: domainRenew, want: Malformed},
		{name: "malformed: garbage", mangle: func(string) string { return "not a token" }, req: domainRenew, want: Malformed},
		{name: "malformed: foreign prefix", mangle: func(s string) string { return "ghp_" + strings.TrimPrefix(s, token.DefaultPrefix) }, req: domainRenew, want: Malformed},
		{name: "malformed: truncated", mangle: func(s string) string { return s[:len(s)-1] }, req: domainRenew, want: Malformed},
		{name: "malformed: one character changed", mangle: func(s string) string { return flip(s, len(s)/2) }, req: domainRenew, want: Malformed},
		{name: "malformed: over the size cap", mangle: func(s string) string { return s + strings.Repeat("A", token.MaxLen) }, req: domainRenew, want: Malformed},
		{name: "bad signature: signed by a foreign key under a known id", signer: "unknown", req: domainRenew, want: BadSignature},
		{name: "bad signature comes before key state", claims: func(c *token.Claims) { c.KeyID = "revoked" }, signer: "unknown", req: domainRenew, want: BadSignature},
		{name: "unknown key", claims: func(c *token.Claims) { c.KeyID = "unknown" }, req: domainRenew, want: UnknownKey},
		{name: "key revoked", claims: func(c *token.Claims) { c.KeyID = "revoked" }, req: domainRenew, want: KeyRevoked, wantClaims: true},
		{name: "key revoked comes before time", claims: func(c *token.Claims) {
			c.KeyID = "revoked"
			c.ExpiresAt = t0.Add(-time.Hour)
			c.IssuedAt = t0.Add(-2 * time.Hour)
		}, req: domainRenew, want: KeyRevoked, wantClaims: true},
		{name: "not yet valid", claims: func(c *token.Claims) { c.IssuedAt = t0.Add(2 * time.Minute) }, req: domainRenew, want: NotYetValid, wantClaims: true},
		{name: "issued in the future within the leeway", claims: func(c *token.Claims) { c.IssuedAt = t0.Add(leeway - time.Second) }, req: domainRenew, want: Allow, wantClaims: true},
		{name: "expired", claims: func(c *token.Claims) { c.ExpiresAt = t0.Add(-2 * time.Minute); c.IssuedAt = t0.Add(-time.Hour) }, req: domainRenew, want: Expired, wantClaims: true},
		{name: "expired within the leeway", claims: func(c *token.Claims) { c.ExpiresAt = t0.Add(-leeway + time.Second) }, req: domainRenew, want: Allow, wantClaims: true},
		{name: "expired exactly at the leeway", claims: func(c *token.Claims) { c.ExpiresAt = t0.Add(-leeway) }, req: domainRenew, want: Expired, wantClaims: true},
		{name: "revoked", claims: func(c *token.Claims) { c.ID = revokedID }, req: domainRenew, want: Revoked, wantClaims: true},
		{name: "expiry comes before revocation", claims: func(c *token.Claims) {
			c.ID = revokedID
			c.ExpiresAt = t0.Add(-time.Hour)
			c.IssuedAt = t0.Add(-2 * time.Hour)
		}, req: domainRenew, want: Expired, wantClaims: true},
		{name: "revocation comes before org", claims: func(c *token.Claims) { c.ID = revokedID }, req: req{"domain:renew", "domains/example.com", "org-b"}, want: Revoked, wantClaims: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := baseClaims(t)
			if tc.claims != nil {
				tc.claims(&c)
			}
			tok := f.mint(t, c, tc.signer)
			if tc.mangle != nil {
				tok = tc.mangle(tok)
			}
			// Twice: the first may verify, the second may come from the cache.
			for round := range 2 {
				d := f.dec.Decide(tok, tc.req.perm, tc.req.res, tc.req.org)
				if d.Reason != tc.want {
					t.Fatalf("round %d: reason = %v, want %v", round, d.Reason, tc.want)
				}
				if d.Allowed() != (tc.want == Allow) {
					t.Fatalf("round %d: allowed = %v for reason %v", round, d.Allowed(), d.Reason)
				}
				if got := d.Claims != nil; got != tc.wantClaims {
					t.Fatalf("round %d: claims reported = %v, want %v", round, got, tc.wantClaims)
				}
				if d.Claims != nil && (d.Claims.ID != c.ID || d.Claims.OrgID != c.OrgID) {
					t.Fatalf("round %d: claims %v/%q, want %v/%q", round, d.Claims.ID, d.Claims.OrgID, c.ID, c.OrgID)
				}
				if d.Revision != f.state.Revision() {
					t.Fatalf("round %d: revision = %d, want %d", round, d.Revision, f.state.Revision())
				}
			}
		})
	}
}

func flip(s string, i int) string {
	b := []byte(s)
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

// TestCachedTokenStillChecked shows that a cache hit still consults the key
// state, the time and the revoked set on every call.
func TestCachedTokenStillChecked(t *testing.T) {
	tests := []struct {
		name   string
		change func(f *fixture, c token.Claims)
		want   Reason
	}{
		{"token revoked after caching", func(f *fixture, c token.Claims) { f.state.revoke(c.ID) }, Revoked},
		{"key revoked after caching", func(f *fixture, c token.Claims) {
			pub, _, _ := f.state.Lookup(c.KeyID)
			f.state.setKey(c.KeyID, pub, true)
		}, KeyRevoked},
		{"key dropped after caching", func(f *fixture, c token.Claims) { f.state.dropKey(c.KeyID) }, UnknownKey},
		{"key id now names another key", func(f *fixture, c token.Claims) {
			pub, _ := newKey(t)
			f.state.setKey(c.KeyID, pub, false)
		}, BadSignature},
		{"time passes beyond expiry", func(f *fixture, c token.Claims) { f.clock.Set(c.ExpiresAt.Add(leeway)) }, Expired},
		{"clock goes back before issue", func(f *fixture, c token.Claims) { f.clock.Set(c.IssuedAt.Add(-leeway - time.Second)) }, NotYetValid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			c := baseClaims(t)
			tok := f.mint(t, c, "")
			if d := f.dec.Decide(tok, "billing:view", "", ""); d.Reason != Allow {
				t.Fatalf("before: %v, want allowed", d.Reason)
			}
			hits, _ := f.dec.CacheStats()
			tc.change(f, c)
			if d := f.dec.Decide(tok, "billing:view", "", ""); d.Reason != tc.want {
				t.Fatalf("after: %v, want %v", d.Reason, tc.want)
			}
			if tc.want != BadSignature {
				if h, _ := f.dec.CacheStats(); h != hits+1 {
					t.Fatalf("cache hits %d, want %d: the second call should have been a hit", h, hits+1)
				}
			}
		})
	}
}

func TestZeroValuesDeny(t *testing.T) {
	var d Decision
	if d.Allowed() || d.Reason != Malformed {
		t.Fatalf("zero Decision: allowed=%v reason=%v", d.Allowed(), d.Reason)
	}
	var v Verdict
	if got := v.Check("billing:view", ""); got.Allowed() {
		t.Fatal("zero Verdict allowed a check")
	}
}

func TestReasonString(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range Reasons() {
		s := r.String()
		if s == "" || strings.HasPrefix(s, "reason(") || seen[s] {
			t.Fatalf("reason %d: bad or duplicate name %q", int(r), s)
		}
		seen[s] = true
	}
	if len(seen) != 11 {
		t.Fatalf("%d reasons, want 11 (10 denials and allowed)", len(seen))
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	codec, _ := token.NewCodec("")
	for _, o := range []Options{{}, {Codec: codec}, {Codec: codec, State: newMemState()}} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) succeeded", o)
		}
	}
}
