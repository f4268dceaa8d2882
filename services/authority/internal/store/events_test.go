package store

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// eventLog drives a store and records the revisions of the events a
// follower must see.
type eventLog struct {
	t        *testing.T
	s        *Bolt
	streamed []uint64
}

func (l *eventLog) create(name string, ttl time.Duration) Token {
	l.t.Helper()
	x := tok("o", name, "u", ttl)
	mustCreate(l.t, l.s, x)
	return x
}

func (l *eventLog) revoke(x Token) uint64 {
	l.t.Helper()
	_, rev, _, err := l.s.RevokeToken(context.Background(), x.ID, auditFor(AuditTokenRevoked, t0))
	if err != nil {
		l.t.Fatal(err)
	}
	l.streamed = append(l.streamed, rev)
	return rev
}

func (l *eventLog) addKey(id string) uint64 {
	l.t.Helper()
	rev, err := l.s.AddKey(context.Background(), Key{ID: id, State: KeyPending, Public: []byte(id), SealedPrivate: []byte("sealed")}, auditFor(AuditKeyRotated, t0))
	if err != nil {
		l.t.Fatal(err)
	}
	l.streamed = append(l.streamed, rev)
	return rev
}

func (l *eventLog) setKey(id string, st KeyState) uint64 {
	l.t.Helper()
	rev, err := l.s.SetKeyState(context.Background(), id, st)
	if err != nil {
		l.t.Fatal(err)
	}
	l.streamed = append(l.streamed, rev)
	return rev
}

func revisions(evs []Event) []uint64 {
	out := make([]uint64, len(evs))
	for i, ev := range evs {
		out[i] = ev.Revision
	}
	return out
}

func TestEventsAfter(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	l := &eventLog{t: t, s: s, streamed: []uint64{1}} // openTest's key
	a := l.create("a", time.Hour)
	b := l.create("b", 2*time.Hour)
	l.revoke(a)
	l.addKey("k2")
	l.create("c", time.Hour)
	l.setKey("k2", KeyActive)
	l.revoke(b)
	if _, _, err := s.RevokeTokens(ctx, "o", "", auditFor(AuditTokensRevoked, t0)); err != nil { // revokes c
		t.Fatal(err)
	}
	l.streamed = append(l.streamed, s.Revision())
	if _, err := s.RevokeKey(ctx, "k2", auditFor(AuditKeyRevoked, t0)); err != nil {
		t.Fatal(err)
	}
	l.streamed = append(l.streamed, s.Revision())

	t.Run("all", func(t *testing.T) {
		evs, err := s.EventsAfter(ctx, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if got := revisions(evs); !slices.Equal(got, l.streamed) {
			t.Errorf("revisions %v, want %v (no creations, nothing missing)", got, l.streamed)
		}
		want := []EventKind{EventKeyAdded, EventTokenRevoked, EventKeyAdded, EventKeyAdded, EventTokenRevoked, EventTokenRevoked, EventKeyRevoked}
		for i, ev := range evs {
			if ev.Kind != want[i] {
				t.Errorf("event %d: kind %d, want %d", ev.Revision, ev.Kind, want[i])
			}
		}
		if evs[1].TokenID != a.ID || !evs[1].ExpiresAt.Equal(a.ExpireTime) {
			t.Errorf("revocation event %+v, want token %s expiring %v", evs[1], a.ID, a.ExpireTime)
		}
	})
	t.Run("paged by 2", func(t *testing.T) {
		var got []uint64
		after := uint64(0)
		for {
			evs, err := s.EventsAfter(ctx, after, 2)
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) == 0 {
				break
			}
			got = append(got, revisions(evs)...)
			after = evs[len(evs)-1].Revision
		}
		if !slices.Equal(got, l.streamed) {
			t.Errorf("revisions %v, want %v", got, l.streamed)
		}
	})
	t.Run("from the middle", func(t *testing.T) {
		evs, err := s.EventsAfter(ctx, l.streamed[3], 0)
		if err != nil || !slices.Equal(revisions(evs), l.streamed[4:]) {
			t.Errorf("= %v, %v; want %v", revisions(evs), err, l.streamed[4:])
		}
	})
	t.Run("at the head", func(t *testing.T) {
		evs, err := s.EventsAfter(ctx, s.Revision(), 0)
		if err != nil || len(evs) != 0 {
			t.Errorf("= %v, %v", evs, err)
		}
	})
	t.Run("ahead of the store", func(t *testing.T) {
		if _, err := s.EventsAfter(ctx, s.Revision()+1, 0); !errors.Is(err, ErrCompacted) {
			t.Errorf("err = %v, want ErrCompacted", err)
		}
	})
}

func TestCompact(t *testing.T) {
	ctx := context.Background()
	s := openTest(t) // key k1 at revision 1
	l := &eventLog{t: t, s: s}
	a := l.create("a", time.Hour)    // 2
	b := l.create("b", 10*time.Hour) // 3
	l.revoke(a)                      // 4
	k2 := l.addKey("k2")             // 5
	revB := l.revoke(b)              // 6: unexpired at t0+2h: the prefix ends here
	act := l.setKey("k2", KeyActive) // 7: kept (after the prefix)
	c := l.create("c", time.Hour)    // 8
	l.revoke(c)                      // 9: expired at t0+2h, dropped though after the prefix
	if s.Revision() != 9 || revB != 6 || k2 != 5 || act != 7 {
		t.Fatalf("setup at revision %d", s.Revision())
	}

	now := t0.Add(2 * time.Hour)
	floor, err := s.Compact(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	if floor != k2 {
		t.Fatalf("floor %d, want %d (the newest key event dropped)", floor, k2)
	}
	if got := storedRevisions(t, s); !slices.Equal(got, []uint64{6, 7}) {
		t.Errorf("events left %v, want [6 7]", got)
	}
	for _, after := range []uint64{0, 1, 4} {
		if _, err := s.EventsAfter(ctx, after, 0); !errors.Is(err, ErrCompacted) {
			t.Errorf("EventsAfter(%d) after compaction: %v, want ErrCompacted", after, err)
		}
	}
	evs, err := s.EventsAfter(ctx, floor, 0)
	if err != nil || !slices.Equal(revisions(evs), []uint64{6, 7}) {
		t.Errorf("EventsAfter(floor) = %v, %v", revisions(evs), err)
	}
	// A follower behind only on token events keeps streaming.
	if evs, err := s.EventsAfter(ctx, 8, 0); err != nil || len(evs) != 0 {
		t.Errorf("EventsAfter(8) = %v, %v", revisions(evs), err)
	}

	snap, err := s.Snapshot(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Revoked) != 1 || snap.Revoked[0].TokenID != b.ID || !snap.Revoked[0].ExpiresAt.Equal(b.ExpireTime) {
		t.Errorf("snapshot revoked %+v, want only %s", snap.Revoked, b.ID)
	}
	if n := revokedEntries(t, s); n != 1 {
		t.Errorf("%d entries left in the revoked bucket, want 1 (expired ones pruned)", n)
	}

	// Compacting again changes nothing; then once b has expired, everything
	// goes and the floor reaches the last key event.
	if again, err := s.Compact(ctx, now); err != nil || again != floor {
		t.Errorf("second Compact = %d, %v; want %d", again, err, floor)
	}
	later := t0.Add(11 * time.Hour)
	floor, err = s.Compact(ctx, later)
	if err != nil || floor != act {
		t.Fatalf("Compact(later) = %d, %v; want %d", floor, err, act)
	}
	if got := storedRevisions(t, s); len(got) != 0 {
		t.Errorf("events left %v", got)
	}
	if snap, err := s.Snapshot(ctx, later); err != nil || len(snap.Revoked) != 0 || snap.Revision != 9 || len(snap.Keys) != 2 {
		t.Errorf("snapshot %+v, %v", snap, err)
	}
	// The log goes on from the same counter.
	d := l.create("d", 20*time.Hour)
	rev := l.revoke(d)
	if rev != 11 {
		t.Errorf("revision after compaction %d, want 11", rev)
	}
	evs, err = s.EventsAfter(ctx, floor, 0)
	if err != nil || !slices.Equal(revisions(evs), []uint64{11}) {
		t.Errorf("EventsAfter(floor) = %v, %v", revisions(evs), err)
	}
	// A compaction never lowers the floor.
	if f, err := s.Compact(ctx, t0); err != nil || f != floor {
		t.Errorf("Compact(earlier) = %d, %v; want %d", f, err, floor)
	}
}

func storedRevisions(t *testing.T, s *Bolt) []uint64 {
	t.Helper()
	var out []uint64
	if err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketEvents).ForEach(func(k, _ []byte) error {
			out = append(out, decodeRev(k))
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func decodeRev(k []byte) uint64 {
	v, _ := decodeUint64("key", k)
	return v
}

func revokedEntries(t *testing.T, s *Bolt) int {
	t.Helper()
	var n int
	if err := s.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketRevoked).Stats().KeyN
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestSnapshot(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	l := &eventLog{t: t, s: s}
	live := l.create("live", time.Hour)
	short := l.create("short", time.Hour)
	long := l.create("long", 48*time.Hour)
	l.revoke(short)
	l.revoke(long)
	if _, err := s.AddKey(ctx, Key{ID: "k0", State: KeyPending, Public: []byte{9}, SealedPrivate: []byte("secret")}, auditFor(AuditKeyRotated, t0)); err != nil {
		t.Fatal(err)
	}

	snap, err := s.Snapshot(ctx, t0.Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if snap.Epoch != s.Epoch() || snap.Revision != s.Revision() {
		t.Errorf("epoch %s revision %d, want %s %d", snap.Epoch, snap.Revision, s.Epoch(), s.Revision())
	}
	if len(snap.Revoked) != 1 || snap.Revoked[0].TokenID != long.ID {
		t.Errorf("revoked %+v, want only %s (not %s, expired, nor %s, live)", snap.Revoked, long.ID, short.ID, live.ID)
	}
	if len(snap.Keys) != 2 || snap.Keys[0].ID != testKeyID || snap.Keys[1].ID != "k0" {
		t.Fatalf("keys %+v", snap.Keys)
	}
	for _, k := range snap.Keys {
		if k.SealedPrivate != nil || len(k.Public) == 0 {
			t.Errorf("key %s: sealed %q public %x; want the public part only", k.ID, k.SealedPrivate, k.Public)
		}
	}
	// Before the short token's expiry both are there.
	if snap, _ := s.Snapshot(ctx, t0); len(snap.Revoked) != 2 {
		t.Errorf("revoked at t0: %+v", snap.Revoked)
	}
}
