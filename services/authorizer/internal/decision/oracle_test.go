package decision

import (
	"crypto/ed25519"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/pkg/token"
)

// The oracle test compares Decide with a reference model of the rules (the
// token format, the grant matching and the check order listed in the package
// comment), written from the rules and not from the code: it never parses a
// token, but knows how each one was made.

// modelKey is the model's view of a signing key.
type modelKey struct {
	present bool // announced by the authority (any state)
	revoked bool
}

// modelToken is how a presented token was made.
type modelToken struct {
	tok      string
	claims   token.Claims
	forgery  string // "" for a genuine token, else the kind of damage
	signedBy string // key whose private half signed
}

type modelWorld struct {
	keys    map[string]modelKey
	revoked map[token.ID]bool
	now     time.Time
}

// modelDecide is the reference model: the checks in the order of the
// package comment, the first that fails giving the reason.
func modelDecide(w *modelWorld, m modelToken, perm, res, org string) (Reason, bool) {
	switch m.forgery {
	case "garbage", "flip", "truncate", "prefix", "oversize", "empty", "re-encode":
		return Malformed, false
	}
	k := w.keys[m.claims.KeyID]
	if !k.present {
		return UnknownKey, false
	}
	if m.signedBy != m.claims.KeyID {
		return BadSignature, false
	}
	if k.revoked {
		return KeyRevoked, true
	}
	iat := m.claims.IssuedAt.Truncate(time.Second)
	exp := m.claims.ExpiresAt.Truncate(time.Second)
	if w.now.Add(leeway).Before(iat) {
		return NotYetValid, true
	}
	if !w.now.Add(-leeway).Before(exp) {
		return Expired, true
	}
	if w.revoked[m.claims.ID] {
		return Revoked, true
	}
	if org != "" && org != m.claims.OrgID {
		return OrgMismatch, true
	}
	return modelMatch(m.claims.Grants, perm, res), true
}

// modelMatch: a grant covers a request when it carries the permission and
// either has no resources, or the request names a resource equal to one of
// the grant's or below it on a '/' boundary. No resource asked needs an
// unrestricted grant.
func modelMatch(grants []scope.Grant, perm, res string) Reason {
	carried := false
	for _, g := range grants {
		has := false
		for _, p := range g.Permissions {
			has = has || p == perm
		}
		if !has {
			continue
		}
		carried = true
		if len(g.Resources) == 0 {
			return Allow
		}
		for _, r := range g.Resources {
			if res != "" && (res == r || strings.HasPrefix(res, r+"/")) {
				return Allow
			}
		}
	}
	if carried {
		return ResourceNotGranted
	}
	return PermissionNotGranted
}

var (
	permPool = []string{"domain:view", "domain:renew", "billing:view", "cloud:manage", "organization:tokens"}
	resPool  = []string{
		"domains/example.com", "domains/example.com/records/www", "domains/example.co",
		"domains/example.com.evil", "domains/example.com/records/mail", "certificates/7f3a", "domains/other.org",
	}
	orgPool  = []string{"org-a", "org-b"}
	keyPool  = []string{"k1", "k2", "k3", "k4", "gone"} // "gone" is never announced
	forgings = []string{"garbage", "flip", "truncate", "prefix", "oversize", "empty", "re-encode", "foreign-signer"}
)

func pick[T any](r *rand.Rand, s []T) T { return s[r.IntN(len(s))] }

func randomGrants(r *rand.Rand) []scope.Grant {
	gs := make([]scope.Grant, 1+r.IntN(3))
	for i := range gs {
		for range 1 + r.IntN(2) {
			gs[i].Permissions = append(gs[i].Permissions, pick(r, permPool))
		}
		for range r.IntN(3) {
			gs[i].Resources = append(gs[i].Resources, pick(r, resPool))
		}
	}
	return gs
}

// randomOffset returns an offset around the leeway boundaries, including
// the boundaries themselves.
func randomOffset(r *rand.Rand) time.Duration {
	return pick(r, []time.Duration{
		-48 * time.Hour, -time.Hour, -leeway - time.Second, -leeway, -leeway + time.Second,
		-time.Second, 0, time.Second, leeway - time.Second, leeway, leeway + time.Second, time.Hour,
	})
}

func TestOracle(t *testing.T) {
	const worlds, casesPerWorld = 60, 100
	r := rand.New(rand.NewPCG(4, 2))
	codec, err := token.NewCodec("")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[Reason]int{}
	disagreements := 0
	total := 0
	for wi := range worlds {
		state := newMemState()
		clk := &clock{t: t0.Add(time.Duration(wi) * time.Hour)}
		w := &modelWorld{keys: map[string]modelKey{}, revoked: map[token.ID]bool{}, now: clk.Now()}
		priv := map[string]ed25519.PrivateKey{}
		for _, id := range keyPool {
			pub, pk := newKey(t)
			priv[id] = pk
			if id == "gone" || r.IntN(6) == 0 {
				continue // never announced
			}
			rev := r.IntN(8) == 0
			state.setKey(id, pub, rev)
			w.keys[id] = modelKey{present: true, revoked: rev}
		}
		_, attacker := newKey(t)
		dec, err := New(Options{Codec: codec, State: state, Leeway: leeway, CacheSize: 64, Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		var issued []modelToken
		for range casesPerWorld {
			var m modelToken
			if len(issued) > 0 && r.IntN(3) == 0 {
				m = pick(r, issued) // presented again: likely a cache hit
			} else {
				now := clk.Now()
				iat := now.Add(randomOffset(r))
				exp := now.Add(randomOffset(r))
				if !exp.After(iat) {
					exp = iat.Add(time.Duration(1+r.IntN(3)) * time.Second)
				}
				m.claims = token.Claims{
					ID: newID(t), OrgID: pick(r, orgPool), KeyID: pick(r, keyPool),
					IssuedAt: iat, ExpiresAt: exp, Grants: randomGrants(r),
				}
				m.signedBy = m.claims.KeyID
				signer := priv[m.claims.KeyID]
				if r.IntN(8) == 0 {
					m.forgery = pick(r, forgings)
				}
				if m.forgery == "foreign-signer" {
					m.signedBy, signer = "attacker", attacker
				}
				m.tok, err = codec.Mint(m.claims, signer)
				if err != nil {
					t.Fatal(err)
				}
				m.tok = damage(r, m.forgery, m.tok)
				if r.IntN(5) == 0 {
					state.revoke(m.claims.ID)
					w.revoked[m.claims.ID] = true
				}
				issued = append(issued, m)
			}
			perm := pick(r, permPool)
			res := ""
			if r.IntN(4) != 0 {
				res = pick(r, resPool)
			}
			org := ""
			if r.IntN(2) == 0 {
				org = pick(r, append(orgPool, "org-c"))
			}

			got := dec.Decide(m.tok, perm, res, org)
			want, verified := modelDecide(w, m, perm, res, org)
			total++
			seen[want]++
			if got.Reason != want || got.Allowed() != (want == Allow) || (got.Claims != nil) != verified {
				disagreements++
				if disagreements <= 10 {
					t.Errorf("world %d: forgery %q key %q: Decide = %v (claims %v), model = %v (claims %v)",
						wi, m.forgery, m.claims.KeyID, got.Reason, got.Claims != nil, want, verified)
				}
			}
			if got.Claims != nil && (got.Claims.ID != m.claims.ID || got.Claims.OrgID != m.claims.OrgID) {
				t.Errorf("claims of another token reported")
			}

			// Change the world between calls: revoke tokens and keys
			// already cached, and move the clock.
			switch r.IntN(40) {
			case 0, 1, 2, 3:
				state.revoke(m.claims.ID)
				w.revoked[m.claims.ID] = true
			case 4:
				id := pick(r, keyPool)
				if k := w.keys[id]; k.present && !k.revoked {
					pub, _, _ := state.Lookup(id)
					state.setKey(id, pub, true)
					w.keys[id] = modelKey{present: true, revoked: true}
				}
			case 5, 6, 7, 8, 9, 10, 11:
				clk.Add(randomOffset(r) / 4)
				w.now = clk.Now()
			}
		}
	}
	if disagreements > 0 {
		t.Fatalf("%d disagreements in %d cases", disagreements, total)
	}
	for _, reason := range Reasons() {
		if seen[reason] == 0 {
			t.Errorf("the generator never produced %v", reason)
		}
	}
	t.Logf("%d cases, zero disagreements; by reason: %v", total, seen)
}

// damage corrupts a minted token in the way named by kind.
func damage(r *rand.Rand, kind, tok string) string {
	switch kind {
	case "garbage":
		b := make([]byte, r.IntN(200))
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		return string(b)
	case "flip":
		i := r.IntN(len(tok))
		b := []byte(tok)
		for {
			c := "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[r.IntN(64)]
			if c != b[i] {
				b[i] = c
				return string(b)
			}
		}
	case "truncate":
		return tok[:r.IntN(len(tok))]
	case "prefix":
		return "sigil_pak_" + strings.TrimPrefix(tok, token.DefaultPrefix)
	case "oversize":
		return tok + strings.Repeat("A", token.MaxLen-len(tok)+1+r.IntN(100))
	case "empty":
		return ""
	case "re-encode":
		// Standard base64 alphabet for the URL one: the checksum no longer
		// matches, or the encoding is not canonical.
		s := strings.NewReplacer("-", "+", "_", "/").Replace(strings.TrimPrefix(tok, token.DefaultPrefix))
		if s == strings.TrimPrefix(tok, token.DefaultPrefix) {
			s += "="
		}
		return token.DefaultPrefix + s
	}
	return tok
}
