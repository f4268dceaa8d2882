package store

import (
	"os"
	"testing"
)

// BenchmarkOpen100k measures Open of a file holding 100,000 tokens (half
// of them revoked), with the start-up check (check) and without it
// (skip-check, --skip-open-check). It reports the file's size.
func BenchmarkOpen100k(b *testing.B) {
	const n = 100_000
	s := openTest(b)
	if err := fillTokens(s, "o", n, n/2); err != nil {
		b.Fatal(err)
	}
	path := s.Path()
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	if fi, err := os.Stat(path); err == nil {
		b.Logf("file: %.1f MiB", float64(fi.Size())/(1<<20))
	}
	for _, c := range []struct {
		name string
		skip bool
	}{{"check", false}, {"skip-check", true}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				s, err := Open(path, Options{SkipCheck: c.skip})
				if err != nil {
					b.Fatal(err)
				}
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
