package server

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// fakeParts is a snapshot read of n parts of two tokens each, reusing one
// buffer for every part as the stores do. read counts the parts read;
// returned is set when the read ends, with its error in err.
type fakeParts struct {
	n        int
	failAt   int // a part index whose read fails (-1: none)
	read     atomic.Int32
	returned atomic.Bool
	err      error
}

var errFakeRead = errors.New("fake read failed")

func (f *fakeParts) each(ctx context.Context, fn func(store.SnapshotPart) error) (store.SnapshotHead, error) {
	defer f.returned.Store(true)
	head := store.SnapshotHead{Epoch: "e1", Revision: 7, Digest: []byte("digest"), Keys: []store.Key{{ID: "k1"}}}
	buf := make([]store.Revoked, 2)
	for i := range f.n {
		if i == f.failAt {
			f.err = errFakeRead
			return store.SnapshotHead{}, f.err
		}
		buf[0] = store.Revoked{TokenID: fmt.Sprintf("t%d-a", i), ExpiresAt: time.Unix(int64(i), 0)}
		buf[1] = store.Revoked{TokenID: fmt.Sprintf("t%d-b", i), ExpiresAt: time.Unix(int64(i), 0)}
		f.read.Add(1)
		if err := fn(store.SnapshotPart{Head: head, Revoked: buf}); err != nil {
			f.err = err
			return store.SnapshotHead{}, err
		}
	}
	return head, nil
}

// waitUntil polls cond for up to 5 s.
func waitUntil(cond func() bool) bool {
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// checkPart fails unless m is the chunk message of part i of fakeParts.
func checkPart(t *testing.T, m *sigilv1.WatchRevocationsResponse, i int) {
	t.Helper()
	c := m.GetSnapshotChunk()
	if c == nil || len(c.GetRevokedTokens()) != 2 {
		t.Fatalf("message %d: %v, want a chunk of 2 tokens", i, m)
	}
	for j, suffix := range []string{"a", "b"} {
		if got, want := c.GetRevokedTokens()[j].GetTokenId(), fmt.Sprintf("t%d-%s", i, suffix); got != want {
			t.Fatalf("message %d token %d: %q, want %q (out of order, or built from a reused buffer)", i, j, got, want)
		}
	}
	if got := c.GetRevokedTokens()[0].GetExpiresAt().AsTime(); !got.Equal(time.Unix(int64(i), 0)) {
		t.Fatalf("message %d: expiry %v", i, got)
	}
	if wantKeys := i == 0; (len(c.GetKeys()) == 1) != wantKeys || c.GetEpoch() != "e1" || c.GetRevision() != 7 {
		t.Fatalf("message %d: %d keys, epoch %q revision %d; want keys only in the first, e1 at 7", i, len(c.GetKeys()), c.GetEpoch(), c.GetRevision())
	}
}

// TestReadAheadOrderAndBound: the chunks are sent in the order read, each
// built from its own part; the next chunk is read while one is sent, and
// never more than that one.
func TestReadAheadOrderAndBound(t *testing.T) {
	const n = 12
	f := &fakeParts{n: n, failAt: -1}
	sent := 0
	head, err := readAhead(context.Background(), f.each, func(m *sigilv1.WatchRevocationsResponse) error {
		// While message sent is sent, part sent+1 is read (when there is
		// one) and then the read waits: give it time to go further.
		ahead := int32(min(sent+2, n))
		if !waitUntil(func() bool { return f.read.Load() >= ahead }) {
			t.Errorf("sending message %d: %d parts read, want %d (no read-ahead)", sent, f.read.Load(), ahead)
		}
		time.Sleep(5 * time.Millisecond)
		if got := f.read.Load(); got > ahead {
			t.Errorf("sending message %d: %d parts read, want at most %d (more than one chunk ahead)", sent, got, ahead)
		}
		checkPart(t, m, sent)
		sent++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if sent != n || head.Revision != 7 || head.Epoch != "e1" || string(head.Digest) != "digest" {
		t.Fatalf("%d messages sent, head %+v; want %d and the head", sent, head, n)
	}
}

// TestReadAheadSendFails: a failed send ends the read (cancelled) before
// readAhead returns, with the send's error.
func TestReadAheadSendFails(t *testing.T) {
	f := &fakeParts{n: 1000, failAt: -1}
	errSend := errors.New("send failed")
	sent := 0
	_, err := readAhead(context.Background(), f.each, func(m *sigilv1.WatchRevocationsResponse) error {
		if sent == 3 {
			return errSend
		}
		sent++
		return nil
	})
	if !errors.Is(err, errSend) {
		t.Fatalf("readAhead: %v, want the send's error", err)
	}
	if !f.returned.Load() {
		t.Fatal("readAhead returned while its read still ran")
	}
	if !errors.Is(f.err, context.Canceled) {
		t.Fatalf("the read ended with %v, want it cancelled", f.err)
	}
	if got := f.read.Load(); got > 5 {
		t.Fatalf("%d parts read for 4 sends, want at most 5", got)
	}
}

// TestReadAheadReadFails: a failed read ends the stream with its error,
// after the chunks read before it were sent.
func TestReadAheadReadFails(t *testing.T) {
	f := &fakeParts{n: 10, failAt: 3}
	sent := 0
	_, err := readAhead(context.Background(), f.each, func(m *sigilv1.WatchRevocationsResponse) error {
		checkPart(t, m, sent)
		sent++
		return nil
	})
	if !errors.Is(err, errFakeRead) || sent != 3 {
		t.Fatalf("readAhead: %v after %d messages, want the read's error after 3", err, sent)
	}
}

// TestReadAheadCancelled: a stream whose context ends while its send waits
// ends, and its read with it.
func TestReadAheadCancelled(t *testing.T) {
	f := &fakeParts{n: 1000, failAt: -1}
	ctx, cancel := context.WithCancel(context.Background())
	_, err := readAhead(ctx, f.each, func(m *sigilv1.WatchRevocationsResponse) error {
		cancel()
		<-ctx.Done() // the stream's send gives up on its context
		return ctx.Err()
	})
	if !errors.Is(err, context.Canceled) || !f.returned.Load() || !errors.Is(f.err, context.Canceled) {
		t.Fatalf("readAhead: %v, read returned %v with %v; want both cancelled", err, f.returned.Load(), f.err)
	}
}
