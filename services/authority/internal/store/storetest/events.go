package storetest

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// eventLog drives a store and records the revisions of the events a
// follower must see.
type eventLog struct {
	t        *testing.T
	s        store.Store
	streamed []uint64
}

func (l *eventLog) create(name string, ttl time.Duration) store.Token {
	l.t.Helper()
	x := tok("o", name, "u", ttl)
	mustCreate(l.t, l.s, x)
	return x
}

func (l *eventLog) revoke(x store.Token) uint64 {
	l.t.Helper()
	_, rev, _, err := l.s.RevokeToken(context.Background(), x.ID, auditFor(store.AuditTokenRevoked, t0))
	if err != nil {
		l.t.Fatal(err)
	}
	l.streamed = append(l.streamed, rev)
	return rev
}

func (l *eventLog) addKey(id string) uint64 {
	l.t.Helper()
	rev, err := l.s.AddKey(context.Background(), store.Key{ID: id, State: store.KeyPending, Public: []byte(id), SealedPrivate: []byte("sealed")}, auditFor(store.AuditKeyRotated, t0))
	if err != nil {
		l.t.Fatal(err)
	}
	l.streamed = append(l.streamed, rev)
	return rev
}

func (l *eventLog) setKey(id string, st store.KeyState) uint64 {
	l.t.Helper()
	rev, err := l.s.SetKeyState(context.Background(), id, st)
	if err != nil {
		l.t.Fatal(err)
	}
	l.streamed = append(l.streamed, rev)
	return rev
}

func revisions(evs []store.Event) []uint64 {
	out := make([]uint64, len(evs))
	for i, ev := range evs {
		out[i] = ev.Revision
	}
	return out
}

func testEventsAfter(t *testing.T, open Opener) {
	ctx := context.Background()
	s := openTest(t, open)
	l := &eventLog{t: t, s: s, streamed: []uint64{1}} // openTest's key
	a := l.create("a", time.Hour)
	b := l.create("b", 2*time.Hour)
	l.revoke(a)
	l.addKey("k2")
	l.create("c", time.Hour)
	l.setKey("k2", store.KeyActive)
	l.revoke(b)
	if _, _, err := s.RevokeTokens(ctx, "o", "", auditFor(store.AuditTokensRevoked, t0)); err != nil { // revokes c
		t.Fatal(err)
	}
	l.streamed = append(l.streamed, s.Revision())
	if _, err := s.RevokeKey(ctx, "k2", auditFor(store.AuditKeyRevoked, t0)); err != nil {
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
		want := []store.EventKind{store.EventKeyAdded, store.EventTokenRevoked, store.EventKeyAdded, store.EventKeyAdded, store.EventTokenRevoked, store.EventTokenRevoked, store.EventKeyRevoked}
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
		if _, err := s.EventsAfter(ctx, s.Revision()+1, 0); !errors.Is(err, store.ErrCompacted) {
			t.Errorf("err = %v, want ErrCompacted", err)
		}
	})
}

func testSnapshot(t *testing.T, open Opener) {
	ctx := context.Background()
	s := openTest(t, open)
	l := &eventLog{t: t, s: s}
	live := l.create("live", time.Hour)
	short := l.create("short", time.Hour)
	long := l.create("long", 48*time.Hour)
	l.revoke(short)
	l.revoke(long)
	if _, err := s.AddKey(ctx, store.Key{ID: "k0", State: store.KeyPending, Public: []byte{9}, SealedPrivate: []byte("secret")}, auditFor(store.AuditKeyRotated, t0)); err != nil {
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
