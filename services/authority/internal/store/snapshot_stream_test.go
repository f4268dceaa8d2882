package store

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/internal/etcdtest"
)

// TestEtcdSnapshotEachAndEtcdCompaction: when etcd's own history
// compaction removes the revision a streamed snapshot is pinned at before
// its first part is delivered, the read starts again at a fresh head and
// streams what Snapshot returns; once a part is delivered it cannot (the
// follower holds parts of the old revision), so it fails with
// ErrUnavailable and delivers nothing more. On its own server: compacting
// the shared one would disturb the other tests.
func TestEtcdSnapshotEachAndEtcdCompaction(t *testing.T) {
	ctx := context.Background()
	endpoint := etcdtest.StartT(t)
	s, err := OpenEtcd(ctx, EtcdOptions{Endpoints: []string{endpoint}, Prefix: "/c/"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	addTestKey(t, s, testKeyID)
	for i := range 6 {
		x := tok("o", fmt.Sprint("t", i), "u", time.Hour)
		mustCreate(t, s, x)
		if _, _, _, err := s.RevokeToken(ctx, x.ID, auditFor(AuditTokenRevoked, t0)); err != nil {
			t.Fatal(err)
		}
	}
	want, err := s.Snapshot(ctx, t0)
	if err != nil || len(want.Revoked) != 6 {
		t.Fatalf("Snapshot: %d revoked, %v", len(want.Revoked), err)
	}

	fired := 0
	compactOnce := func() {
		s.pinnedHook = func(pinned int64) {
			s.pinnedHook = nil
			fired++
			put, err := s.cli.Put(ctx, "/elsewhere", "x")
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := s.cli.Compact(ctx, put.Header.Revision); err != nil {
				t.Error(err)
			}
		}
	}

	// Before the first part: retried, complete.
	compactOnce()
	var got []Revoked
	head, err := s.SnapshotEach(ctx, t0, 2, func(p SnapshotPart) error {
		got = append(got, p.Revoked...)
		return nil
	})
	if err != nil || fired != 1 {
		t.Fatalf("SnapshotEach with its revision compacted before the first part: %v (hook ran %d times)", err, fired)
	}
	if head.Revision != want.Revision || !reflect.DeepEqual(head.Digest, want.Digest) || !reflect.DeepEqual(got, want.Revoked) {
		t.Fatalf("after a retry: revision %d, %d revoked; want %d, %d", head.Revision, len(got), want.Revision, len(want.Revoked))
	}

	// After the first part: an error, nothing more delivered.
	parts := 0
	_, err = s.SnapshotEach(ctx, t0, 2, func(p SnapshotPart) error {
		if parts++; parts == 1 {
			compactOnce()
		}
		return nil
	})
	if !errors.Is(err, ErrUnavailable) || parts != 1 || fired != 2 {
		t.Fatalf("SnapshotEach with its revision compacted after a part: %v after %d parts (hook ran %d times); want ErrUnavailable after 1",
			err, parts, fired)
	}
}

// BenchmarkSnapshotEach100k reads a snapshot of 100,000 revoked tokens (and
// as many live ones) whole with Snapshot (one read transaction) and in
// chunks of 500 with SnapshotEach (one short read transaction each), side
// by side: the cost of not holding one transaction for the whole stream.
func BenchmarkSnapshotEach100k(b *testing.B) {
	const n = 100_000
	s := openTest(b)
	if err := fillTokens(s, "o", 2*n, n); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.Run("whole", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			snap, err := s.Snapshot(ctx, t0)
			if err != nil || len(snap.Revoked) != n {
				b.Fatalf("Snapshot: %d revoked, %v", len(snap.Revoked), err)
			}
		}
	})
	b.Run("chunks", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			got := 0
			if _, err := s.SnapshotEach(ctx, t0, 500, func(p SnapshotPart) error {
				got += len(p.Revoked)
				return nil
			}); err != nil || got != n {
				b.Fatalf("SnapshotEach: %d revoked, %v", got, err)
			}
		}
	})
}
