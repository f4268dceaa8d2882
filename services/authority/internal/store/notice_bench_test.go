package store

import (
	"context"
	"testing"
	"time"
)

// BenchmarkNoticeScan100k measures one run of the expiry notice job
// (NoticeExpiring) on a file with 100,000 live tokens of which none is
// due: the cost of reading the unrevoked-token index whole, paid at every
// run (every minute at most; see webhook.NoticeInterval).
func BenchmarkNoticeScan100k(b *testing.B) {
	const n = 100_000
	s := openTest(b)
	if err := fillTokens(s, "o", n, 0); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	leads := []time.Duration{168 * time.Hour, 24 * time.Hour}
	b.ReportAllocs()
	for b.Loop() {
		made, err := s.NoticeExpiring(ctx, t0, leads)
		if err != nil || made != 0 {
			b.Fatalf("NoticeExpiring = %d, %v", made, err)
		}
	}
}
