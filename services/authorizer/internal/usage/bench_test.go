package usage

import (
	"testing"
	"time"

	"github.com/sigil-auth/sigil/pkg/token"
)

// BenchmarkRecord measures Record alone: a token already recorded this
// minute (the fast path, one atomic load), from many goroutines at once;
// and new tokens each time (the slow path: a shard's lock and map).
func BenchmarkRecord(b *testing.B) {
	at := time.Now()
	b.Run("recorded", func(b *testing.B) {
		r := New(Options{})
		id, _ := token.NewID()
		r.Record(id, at)
		b.SetParallelism(8)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				r.Record(id, at)
			}
		})
	})
	b.Run("new", func(b *testing.B) {
		ids := make([]token.ID, 1<<16)
		for i := range ids {
			ids[i], _ = token.NewID()
		}
		r := New(Options{Capacity: 1 << 17})
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			if i&(len(ids)-1) == 0 {
				b.StopTimer()
				r.Drain()
				for j := range r.seen {
					for k := range r.seen[j] {
						r.seen[j][k].Store(0)
					}
				}
				b.StartTimer()
			}
			r.Record(ids[i&(len(ids)-1)], at)
		}
	})
}
