package decision

import (
	"crypto/ed25519"
	"sync"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/pkg/token"
)

// cutState is a memState whose keys may have cuts.
type cutState struct {
	*memState
	mu   sync.Mutex
	cuts map[string]time.Time
}

func (c *cutState) InspectCut(keyID string, id token.ID) (ed25519.PublicKey, bool, bool, time.Time, bool, uint64) {
	pub, known, keyRevoked, tokRevoked, rev := c.Inspect(keyID, id)
	c.mu.Lock()
	defer c.mu.Unlock()
	return pub, known, keyRevoked, c.cuts[keyID], tokRevoked, rev
}

// A key's cut denies the tokens it signed in or after the cut's second with
// KeyRevoked, on a cache miss and on a hit, and leaves older ones allowed.
func TestKeyCutDeniesPostCutTokens(t *testing.T) {
	f := newFixture(t)
	cs := &cutState{memState: f.state, cuts: map[string]time.Time{}}
	dec, err := New(Options{Codec: f.codec, State: cs, Leeway: leeway, CacheSize: 1000, Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	cut := t0.Add(-30 * time.Minute)
	mk := func(issued time.Time) string {
		c := baseClaims(t)
		c.IssuedAt = issued
		return f.mint(t, c, "")
	}
	before, atCut, after := mk(cut.Add(-time.Second)), mk(cut), mk(cut.Add(time.Minute))
	// Cached before the cut arrives: the cut must still apply on a hit.
	for _, tok := range []string{before, atCut, after} {
		if d := dec.Decide(tok, "domain:view", "domains/example.com", "org-a"); d.Reason != Allow {
			t.Fatalf("before any cut: %v, want allowed", d.Reason)
		}
	}
	cs.mu.Lock()
	cs.cuts["active"] = cut
	cs.mu.Unlock()
	fresh := mk(cut.Add(2 * time.Minute)) // a miss
	for _, c := range []struct {
		name string
		tok  string
		want Reason
	}{
		{"issued a second before the cut", before, Allow},
		{"issued in the cut's second", atCut, KeyRevoked},
		{"issued after the cut (cached)", after, KeyRevoked},
		{"issued after the cut (not cached)", fresh, KeyRevoked},
	} {
		if d := dec.Decide(c.tok, "domain:view", "domains/example.com", "org-a"); d.Reason != c.want {
			t.Errorf("%s: %v, want %v", c.name, d.Reason, c.want)
		}
	}
	// Another key's tokens are untouched by the cut.
	other := baseClaims(t)
	other.KeyID, other.IssuedAt = "verify", cut.Add(time.Minute)
	if d := dec.Decide(f.mint(t, other, ""), "domain:view", "domains/example.com", "org-a"); d.Reason != Allow {
		t.Errorf("token of another key: %v, want allowed", d.Reason)
	}
}
