package keys

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/services/authority/internal/secrets"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// TestReplicasShareKeys: two managers on one store (standing for two
// authority replicas; here one bbolt file shared in-process) with the
// schedule run by the caller. A key rotated through one is reloaded by
// the other; both running the schedule at once (two leaders for a moment)
// activate it once: one state event, one active key, and each manager,
// reloaded, signs with it.
func TestReplicasShareKeys(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(filepath.Join(t.TempDir(), "s.db"), store.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	sealer, err := secrets.NewSealer(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{ActivationDelay: 300 * time.Millisecond, ExternalSchedule: true}
	m1, err := New(ctx, st, sealer, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer m1.Close()
	m2, err := New(ctx, st, sealer, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	first, _, err := m1.Signer()
	if err != nil {
		t.Fatal(err)
	}
	if id, _, err := m2.Signer(); err != nil || id != first {
		t.Fatalf("second manager signs with %q (%v), the store's active key is %s", id, err, first)
	}

	k, _, err := m1.Rotate(ctx, "operator")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, ok := m2.Lookup(k.ID); ok {
		t.Fatal("m2 knows the rotated key before reloading")
	}
	if err := m2.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := m2.Lookup(k.ID); !ok {
		t.Fatal("m2 does not know the key rotated through m1 after reloading")
	}

	sctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, m := range []*Manager{m1, m2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.RunSchedule(sctx)
		}()
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if id, _, _ := m1.Signer(); id == k.ID {
			break
		}
		if time.Now().After(deadline) {
			stop()
			wg.Wait()
			t.Fatal("the rotated key was not activated")
		}
	}
	stop()
	wg.Wait()

	if err := m2.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if id, _, err := m2.Signer(); err != nil || id != k.ID {
		t.Fatalf("m2 signs with %q (%v) after reloading, want %s", id, err, k.ID)
	}
	evs, err := st.EventsAfter(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	activations := 0
	for _, ev := range evs {
		if ev.Kind == store.EventKeyAdded && ev.Key != nil && ev.Key.ID == k.ID && ev.Key.State == store.KeyActive {
			activations++
		}
	}
	if activations != 1 {
		t.Fatalf("the key was activated %d times", activations)
	}
	ks, err := st.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	active := 0
	for _, x := range ks {
		if x.State == store.KeyActive {
			active++
		}
	}
	if active != 1 {
		t.Fatalf("%d active keys after two schedules ran", active)
	}
}
