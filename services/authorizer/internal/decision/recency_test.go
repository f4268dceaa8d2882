package decision

import (
	"testing"
	"time"
)

// TestCacheKeepsRecentlyCheckedTokens checks the cache's recency, kept to
// touchEvery: a token checked again after touchEvery moves to the front and
// outlives one inserted after it but not checked since; within touchEvery
// a hit does not move it.
func TestCacheKeepsRecentlyCheckedTokens(t *testing.T) {
	f := newFixture(t)
	dec, err := New(Options{Codec: f.codec, State: f.state, Leeway: leeway, CacheSize: 2, Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := f.mint(t, baseClaims(t), ""), f.mint(t, baseClaims(t), ""), f.mint(t, baseClaims(t), "")
	decide := func(tok string) (hit bool) {
		t.Helper()
		h0, _ := dec.CacheStats()
		if d := dec.Decide(tok, "domain:renew", "domains/example.com", "org-a"); !d.Allowed() {
			t.Fatalf("not allowed: %v", d.Reason)
		}
		h1, _ := dec.CacheStats()
		return h1 > h0
	}
	decide(a)
	decide(b)
	// Within touchEvery of a's insertion, a hit leaves a where it was: c
	// evicts a, the oldest.
	if !decide(a) {
		t.Fatal("a not cached")
	}
	decide(c)
	if decide(a) {
		t.Fatal("a survived c although not moved within touchEvery")
	}
	// Now a (just re-inserted) and c are cached, c the older. Later than
	// touchEvery, a hit on c moves it to the front: b evicts a.
	f.clock.Add(touchEvery + time.Millisecond)
	if !decide(c) {
		t.Fatal("c not cached")
	}
	decide(b)
	if !decide(c) {
		t.Fatal("c evicted although checked most recently but one")
	}
	if decide(a) {
		t.Fatal("a survived b although least recently checked")
	}
}
