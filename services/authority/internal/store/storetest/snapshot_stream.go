package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// streamed is what one SnapshotEach delivered.
type streamed struct {
	head    store.SnapshotHead
	parts   int
	revoked []store.Revoked
}

// snapshotEach streams a snapshot with chunk, calling during (if set) after
// each part, and checks the parts: at most chunk tokens each, ids
// ascending, the same head in every part and returned.
func snapshotEach(t *testing.T, s store.Store, now time.Time, chunk int, during func(part int)) streamed {
	t.Helper()
	var got streamed
	head, err := s.SnapshotEach(context.Background(), now, chunk, func(p store.SnapshotPart) error {
		if len(p.Revoked) > chunk {
			t.Errorf("part %d: %d tokens, chunk %d", got.parts, len(p.Revoked), chunk)
		}
		if got.parts > 0 && !reflect.DeepEqual(p.Head, got.head) {
			t.Errorf("part %d: head %+v, first part's %+v", got.parts, p.Head, got.head)
		}
		got.head = p.Head
		got.revoked = append(got.revoked, p.Revoked...) // p.Revoked is reused
		got.parts++
		if during != nil {
			during(got.parts)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("SnapshotEach: %v", err)
	}
	if got.parts == 0 {
		t.Fatal("SnapshotEach delivered no part")
	}
	if !reflect.DeepEqual(head, got.head) {
		t.Fatalf("SnapshotEach returned head %+v, parts had %+v", head, got.head)
	}
	if !slices.IsSortedFunc(got.revoked, func(a, b store.Revoked) int { return compareIDs(a.TokenID, b.TokenID) }) {
		t.Errorf("revoked tokens not in id order: %+v", got.revoked)
	}
	return got
}

func compareIDs(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// sameSnapshot fails unless what SnapshotEach streamed is snap.
func sameSnapshot(t *testing.T, got streamed, snap store.Snapshot) {
	t.Helper()
	h := got.head
	if h.Epoch != snap.Epoch || h.Revision != snap.Revision || !reflect.DeepEqual(h.Digest, snap.Digest) {
		t.Errorf("head epoch %s revision %d digest %x; Snapshot: %s %d %x", h.Epoch, h.Revision, h.Digest, snap.Epoch, snap.Revision, snap.Digest)
	}
	if !reflect.DeepEqual(h.Keys, snap.Keys) {
		t.Errorf("keys %+v; Snapshot: %+v", h.Keys, snap.Keys)
	}
	if len(got.revoked) != len(snap.Revoked) || (len(got.revoked) > 0 && !reflect.DeepEqual(got.revoked, snap.Revoked)) {
		t.Errorf("streamed %d revoked tokens, Snapshot %d:\n%+v\n%+v", len(got.revoked), len(snap.Revoked), got.revoked, snap.Revoked)
	}
}

// testSnapshotEach: the streamed snapshot is Snapshot's, in parts of at
// most the chunk, whatever the chunk, and also when empty.
func testSnapshotEach(t *testing.T, open Opener) {
	ctx := context.Background()
	s := openTest(t, open)
	now := t0.Add(2 * time.Hour)

	// Empty: one part, no token, every key.
	empty := snapshotEach(t, s, now, 3, nil)
	if empty.parts != 1 || len(empty.head.Keys) != 1 {
		t.Fatalf("empty store: %d parts, %d keys; want 1 part with the key", empty.parts, len(empty.head.Keys))
	}
	snap, err := s.Snapshot(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	sameSnapshot(t, empty, snap)

	l := &eventLog{t: t, s: s}
	l.addKey("k0")
	for i := range 11 {
		l.revoke(l.create("long", 48*time.Hour))
		if i%3 == 0 {
			l.revoke(l.create("short", time.Hour)) // expired at now
		}
		l.create(fmt.Sprint("live", i), 48*time.Hour)
	}
	if snap, err = s.Snapshot(ctx, now); err != nil {
		t.Fatal(err)
	}
	if len(snap.Revoked) != 11 {
		t.Fatalf("Snapshot holds %d revoked tokens, want 11", len(snap.Revoked))
	}
	for _, chunk := range []int{1, 3, 11, 500} {
		got := snapshotEach(t, s, now, chunk, nil)
		sameSnapshot(t, got, snap)
		if want := (11 + chunk - 1) / chunk; got.parts != want {
			t.Errorf("chunk %d: %d parts, want %d", chunk, got.parts, want)
		}
	}
	for _, k := range snap.Keys {
		if k.SealedPrivate != nil {
			t.Errorf("key %s: sealed private half in the snapshot", k.ID)
		}
	}
	// Before the short tokens' expiry they are in too.
	if snap, err = s.Snapshot(ctx, t0); err != nil {
		t.Fatal(err)
	}
	sameSnapshot(t, snapshotEach(t, s, t0, 4, nil), snap)
}

// testSnapshotEachConsistent: revocations committed while a snapshot is
// streamed (single ones and a bulk one, of tokens whose ids the stream has
// not reached yet) are not in it: it is the state at its head, and every
// one of them is an event after the head, for the live stream that follows.
func testSnapshotEachConsistent(t *testing.T, open Opener) {
	ctx := context.Background()
	s := openTest(t, open)
	l := &eventLog{t: t, s: s}
	for range 12 {
		l.revoke(l.create("early", 48*time.Hour))
	}
	var later []store.Token // ids above every early one
	for i := range 8 {
		later = append(later, l.create(fmt.Sprint("later", i), 48*time.Hour))
	}
	for i := range 5 {
		x := tok("bulk", fmt.Sprint("b", i), "u", 48*time.Hour)
		mustCreate(t, s, x)
	}
	before, err := s.Snapshot(ctx, t0)
	if err != nil {
		t.Fatal(err)
	}
	var during []string
	got := snapshotEach(t, s, t0, 2, func(part int) {
		switch {
		case part == 1:
			n, _, err := s.RevokeTokens(ctx, "bulk", "", auditFor(store.AuditTokensRevoked, t0))
			if err != nil || n != 5 {
				t.Errorf("RevokeTokens during the stream: %d, %v", n, err)
			}
		case part-2 < len(later):
			l.revoke(later[part-2])
			during = append(during, later[part-2].ID)
		}
	})
	sameSnapshot(t, got, before)
	if s.Revision() <= got.head.Revision {
		t.Fatalf("no commit during the stream (revision %d, head %d)", s.Revision(), got.head.Revision)
	}
	evs, err := s.EventsAfter(ctx, got.head.Revision, 0)
	if err != nil {
		t.Fatal(err)
	}
	live := map[string]bool{}
	for _, ev := range evs {
		if ev.Kind == store.EventTokenRevoked {
			live[ev.TokenID] = true
		}
	}
	if len(live) != 5+len(during) {
		t.Errorf("%d revocations after the head, want %d (bulk 5, single %d)", len(live), 5+len(during), len(during))
	}
	for _, id := range during {
		if !live[id] {
			t.Errorf("revocation of %s during the stream: not an event after the head", id)
		}
	}
	// And the next snapshot has them all.
	after, err := s.Snapshot(ctx, t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Revoked) != len(before.Revoked)+len(live) {
		t.Errorf("next snapshot: %d revoked, want %d", len(after.Revoked), len(before.Revoked)+len(live))
	}
	sameSnapshot(t, snapshotEach(t, s, t0, 3, nil), after)
}

// testSnapshotEachStops: an error of fn ends the stream and is returned; so
// is a cancelled context. A closed store delivers nothing: ErrClosed.
func testSnapshotEachStops(t *testing.T, open Opener) {
	s := openTest(t, open)
	l := &eventLog{t: t, s: s}
	for range 6 {
		l.revoke(l.create("r", 48*time.Hour))
	}
	stop := errors.New("follower gone")
	parts := 0
	_, err := s.SnapshotEach(context.Background(), t0, 2, func(store.SnapshotPart) error {
		parts++
		return stop
	})
	if !errors.Is(err, stop) || parts != 1 {
		t.Errorf("fn failing: err %v after %d parts, want %v after 1", err, parts, stop)
	}
	ctx, cancel := context.WithCancel(context.Background())
	parts = 0
	_, err = s.SnapshotEach(ctx, t0, 2, func(store.SnapshotPart) error {
		parts++
		cancel()
		return nil
	})
	if !errors.Is(err, context.Canceled) || parts != 1 {
		t.Errorf("cancelled: err %v after %d parts, want context.Canceled after 1", err, parts)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	parts = 0
	_, err = s.SnapshotEach(context.Background(), t0, 2, func(store.SnapshotPart) error {
		parts++
		return nil
	})
	if !errors.Is(err, store.ErrClosed) || parts != 0 {
		t.Errorf("closed: err %v after %d parts, want ErrClosed and none", err, parts)
	}
}
