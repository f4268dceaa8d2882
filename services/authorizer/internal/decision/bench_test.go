package decision

import (
	"crypto/ed25519"
	"crypto/rand"
	"slices"
	"testing"
	"time"

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

// BenchmarkFirstSeenVsVerify puts a first-seen decision (parse, one
// Ed25519 verification, strict claims, every check) side by side with a
// bare ed25519.Verify of a message of the same size, alternating the two in
// each iteration so that both see the same machine, and reports the median
// of each and their ratio: the decision should cost little more than its
// one verification.
func BenchmarkFirstSeenVsVerify(b *testing.B) {
	f := newFixture(b)
	dec, err := New(Options{Codec: f.codec, State: f.state, Leeway: leeway, CacheSize: 1, Now: f.clock.Now})
	if err != nil {
		b.Fatal(err)
	}
	toks := [2]string{f.mint(b, baseClaims(b), ""), f.mint(b, baseClaims(b), "")}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	msg := make([]byte, len(toks[0])*3/4) // about the decoded body's size
	sig := ed25519.Sign(priv, msg)
	var decide, verify []time.Duration
	i := 0
	for b.Loop() {
		t0 := time.Now()
		if d := dec.Decide(toks[i&1], "domain:renew", "domains/example.com", "org-a"); !d.Allowed() {
			b.Fatal(d.Reason)
		}
		t1 := time.Now()
		if !ed25519.Verify(pub, msg, sig) {
			b.Fatal("verify failed")
		}
		decide, verify = append(decide, t1.Sub(t0)), append(verify, time.Since(t1))
		i++
	}
	md, mv := medianDuration(decide), medianDuration(verify)
	b.ReportMetric(float64(md.Nanoseconds())/1e3, "decide-µs")
	b.ReportMetric(float64(mv.Nanoseconds())/1e3, "verify-µs")
	b.ReportMetric(float64(md)/float64(mv), "decide/verify")
}

func medianDuration(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
