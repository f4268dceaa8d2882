package store

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// BenchmarkCreateTokenParallel measures fsynced CreateToken throughput with
// about 50 concurrent writers: with the store's group committer, with
// db.Batch (2 ms, and bbolt's default 10 ms, batch delay) and with one
// db.Update per call.
func BenchmarkCreateTokenParallel(b *testing.B) {
	for _, bc := range []struct {
		name  string
		mode  commitMode
		delay time.Duration
	}{
		{"group", commitGroup, 0},
		{"batch-2ms", commitBatch, batchDelay},
		{"batch-10ms", commitBatch, 10 * time.Millisecond},
		{"update", commitUpdate, 0},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := openTest(b)
			setMode(s, bc.mode)
			if bc.delay > 0 {
				s.db.MaxBatchDelay = bc.delay
			}
			ctx := context.Background()
			var n atomic.Int64
			b.SetParallelism((50 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
			b.ReportAllocs()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					x := tok("o", fmt.Sprint("t", n.Add(1)), "u", time.Hour)
					if _, err := s.CreateToken(ctx, x, auditFor(AuditTokenCreated, t0)); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "tokens/s")
		})
	}
}

// BenchmarkCreateTokenSerial measures the latency of a lone writer: db.Batch
// makes it wait for its batch delay; the group committer does not.
func BenchmarkCreateTokenSerial(b *testing.B) {
	for _, bc := range []struct {
		name string
		mode commitMode
	}{{"group", commitGroup}, {"batch-2ms", commitBatch}, {"update", commitUpdate}} {
		b.Run(bc.name, func(b *testing.B) {
			s := openTest(b)
			setMode(s, bc.mode)
			ctx := context.Background()
			i := 0
			for b.Loop() {
				i++
				if _, err := s.CreateToken(ctx, tok("o", fmt.Sprint("t", i), "u", time.Hour), auditFor(AuditTokenCreated, t0)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSnapshot100k measures Snapshot with 100,000 revoked, unexpired
// tokens (and as many live ones, which it must not read). It reports the
// approximate in-memory size of the result and the size of the data in the
// file.
func BenchmarkSnapshot100k(b *testing.B) {
	const n = 100_000
	s := openTest(b)
	if err := fillTokens(s, "o", 2*n, n); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	var snap Snapshot
	for b.Loop() {
		var err error
		if snap, err = s.Snapshot(ctx, t0); err != nil {
			b.Fatal(err)
		}
	}
	if len(snap.Revoked) != n {
		b.Fatalf("%d revoked tokens in the snapshot, want %d", len(snap.Revoked), n)
	}
	// A Revoked is a string header (16 bytes) and a time.Time (24), plus
	// the id's bytes.
	size := 0
	for _, r := range snap.Revoked {
		size += 16 + 24 + len(r.TokenID)
	}
	b.ReportMetric(float64(size)/(1<<20), "snapshot-MiB")
	// The pages in use; the file itself is larger, as bbolt grows it ahead.
	_ = s.db.View(func(tx *bolt.Tx) error {
		b.ReportMetric(float64(tx.Size())/(1<<20), "data-MiB")
		return nil
	})
}
