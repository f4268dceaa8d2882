package decision

import (
	"testing"

	"github.com/sigil-auth/sigil/pkg/token"
)

// BenchmarkDecideCached is the hot path: a token seen before, so only the
// cache, the key state, the time, the revoked set and the grants are
// consulted.
func BenchmarkDecideCached(b *testing.B) {
	f := newFixture(b)
	tok := f.mint(b, baseClaims(b), "")
	if d := f.dec.Decide(tok, "domain:renew", "domains/example.com/records/www", "org-a"); !d.Allowed() {
		b.Fatalf("setup: %v", d.Reason)
	}
	b.ReportAllocs()
	for b.Loop() {
		if d := f.dec.Decide(tok, "domain:renew", "domains/example.com/records/www", "org-a"); !d.Allowed() {
			b.Fatal(d.Reason)
		}
	}
}

// BenchmarkDecideCachedParallel is the hot path from every core at once.
func BenchmarkDecideCachedParallel(b *testing.B) {
	f := newFixture(b)
	tok := f.mint(b, baseClaims(b), "")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if d := f.dec.Decide(tok, "billing:view", "", "org-a"); !d.Allowed() {
				b.Error(d.Reason)
				return
			}
		}
	})
}

// BenchmarkDecideFirstSeen is a token not in the cache: full parse and
// Ed25519 verification. Two tokens alternate through a one-entry cache so
// that every call misses.
func BenchmarkDecideFirstSeen(b *testing.B) {
	f := newFixture(b)
	dec, err := New(Options{Codec: f.codec, State: f.state, Leeway: leeway, CacheSize: 1, Now: f.clock.Now})
	if err != nil {
		b.Fatal(err)
	}
	toks := [2]string{f.mint(b, baseClaims(b), ""), f.mint(b, baseClaims(b), "")}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if d := dec.Decide(toks[i&1], "domain:renew", "domains/example.com", "org-a"); !d.Allowed() {
			b.Fatal(d.Reason)
		}
		i++
	}
	if h, _ := dec.CacheStats(); h != 0 {
		b.Fatalf("%d cache hits, want none", h)
	}
}

// BenchmarkDecideMalformed is a garbage token: rejected before any
// cryptography.
func BenchmarkDecideMalformed(b *testing.B) {
	f := newFixture(b)
	tok := token.DefaultPrefix + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	b.ReportAllocs()
	for b.Loop() {
		if d := f.dec.Decide(tok, "domain:renew", "", ""); d.Reason != Malformed {
			b.Fatal(d.Reason)
		}
	}
}
