package usage

import (
	"testing"
	"time"

	"github.com/sigil-auth/sigil/pkg/token"
)

// BenchmarkRecord measures Record alone (the first use of a token in a
// minute; later ones never reach it): many goroutines recording tokens
// that spread over the shards.
func BenchmarkRecord(b *testing.B) {
	at := time.Now()
	ids := make([]token.ID, 1<<12)
	for i := range ids {
		ids[i], _ = token.NewID()
	}
	r := New(Options{})
	b.SetParallelism(8)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for i := 0; pb.Next(); i++ {
			r.Record(ids[i&(len(ids)-1)], at)
		}
	})
}
