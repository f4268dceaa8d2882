package follower

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/pkg/token"
)

// snapshotWire returns the wire form of a snapshot of n revoked tokens in
// chunks of 500, ascending by id as the authority sends them, then its end
// marker: sequential ids (as the scale test's fill makes them) or random
// ones (as tokens have).
func snapshotWire(tb testing.TB, n int, random bool) [][]byte {
	tb.Helper()
	const per = 500
	ids := make([]token.ID, n)
	for i := range ids {
		if random {
			var err error
			if ids[i], err = token.NewID(); err != nil {
				tb.Fatal(err)
			}
		} else {
			ids[i] = mustID(tb, fmt.Sprintf("%032x", i+1))
		}
	}
	slices.SortFunc(ids, func(a, b token.ID) int { return bytes.Compare(a[:], b[:]) })
	exp := time.Now().Add(30 * 24 * time.Hour)
	var out [][]byte
	for i := 0; i < n || len(out) == 0; i += per {
		c := &sigilv1.SnapshotChunk{Epoch: "e1", Revision: 10}
		for _, id := range ids[i:min(n, i+per)] {
			c.RevokedTokens = append(c.RevokedTokens, revokedTok(0, id, exp))
		}
		out = append(out, marshal(tb, &sigilv1.WatchRevocationsResponse{Event: &sigilv1.WatchRevocationsResponse_SnapshotChunk{SnapshotChunk: c}}))
	}
	return append(out, marshal(tb, snapEnd("e1", 10)))
}

// idKinds are the ids of the benchmarks' snapshots.
var idKinds = []struct {
	name   string
	random bool
}{{"ids=sequential", false}, {"ids=random", true}}

func mustID(tb testing.TB, s string) token.ID {
	id, err := token.ParseID(s)
	if err != nil {
		tb.Fatal(err)
	}
	return id
}

func marshal(tb testing.TB, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// applyWire decodes each message of wire (as grpc-go's codec does) and
// applies it to f.
func applyWire(tb testing.TB, f *Follower, wire [][]byte) {
	var snap *pending
	for _, w := range wire {
		msg := new(sigilv1.WatchRevocationsResponse)
		if err := proto.Unmarshal(w, msg); err != nil {
			tb.Fatal(err)
		}
		var err error
		if snap, err = f.handle(snap, msg); err != nil {
			tb.Fatal(err)
		}
	}
	if got := f.RevokedCount(); got != 1_000_000 {
		tb.Fatalf("%d revoked tokens applied, want 1000000", got)
	}
}

// BenchmarkSnapshotApply1M is the follower's share of loading a snapshot of
// a million revoked tokens: decoding each chunk and applying it, into a
// fresh follower as at start-up.
//
//	go test ./services/authorizer/internal/follower -run '^$' -bench 'SnapshotApply1M' -count=6 -benchtime=3x
func BenchmarkSnapshotApply1M(b *testing.B) {
	for _, k := range idKinds {
		b.Run(k.name, func(b *testing.B) {
			wire := snapshotWire(b, 1_000_000, k.random)
			b.ResetTimer()
			for range b.N {
				applyWire(b, New(Options{}), wire)
			}
		})
	}
}

// BenchmarkResnapshotApply1M is the same snapshot applied by a follower
// that already holds one of a million tokens (a new snapshot after an
// authority restart, compaction or restore).
func BenchmarkResnapshotApply1M(b *testing.B) {
	for _, k := range idKinds {
		b.Run(k.name, func(b *testing.B) {
			wire := snapshotWire(b, 1_000_000, k.random)
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				f := New(Options{})
				applyWire(b, f, wire)
				b.StartTimer()
				applyWire(b, f, wire)
			}
		})
	}
}
