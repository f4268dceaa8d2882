package keys

import (
	"context"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// CutKey of the in-memory store follows the bbolt store's rules: the key
// becomes verify-only with the earlier of its cuts; a revoked key stays so.
func (s *memStore) CutKey(_ context.Context, id string, after time.Time, _ store.AuditRecord) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cut := after.Truncate(time.Second).UTC()
	for i := range s.keys {
		k := &s.keys[i]
		if k.ID != id {
			continue
		}
		if k.State == store.KeyRevoked {
			return s.revokedAt[id], nil
		}
		s.rev++
		k.State = store.KeyVerifyOnly
		if k.RevokedIssuedAfter.IsZero() || cut.Before(k.RevokedIssuedAfter) {
			k.RevokedIssuedAfter = cut
		}
		s.log = append(s.log, "cut "+id)
		return s.rev, nil
	}
	return 0, store.ErrNotFound
}

func TestCutActiveKey(t *testing.T) {
	ctx := context.Background()
	st := &memStore{}
	m, err := New(ctx, st, newSealer(t), Options{ActivationDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	id, _, err := m.Signer()
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2030, 1, 2, 3, 4, 5, 600e6, time.UTC)
	if _, err := m.Cut(ctx, id, at, "operator"); err != nil {
		t.Fatal(err)
	}
	if got := m.CutOf(id); !got.Equal(at.Truncate(time.Second)) {
		t.Fatalf("CutOf = %v, want %v", got, at.Truncate(time.Second))
	}
	if st.state(id) != store.KeyVerifyOnly {
		t.Fatalf("cut key in state %d, want verify-only", st.state(id))
	}
	// The cut key signs no more; a pending replacement was added.
	if _, _, err := m.Signer(); err != ErrNoActiveKey {
		t.Fatalf("Signer after the cut: %v, want ErrNoActiveKey", err)
	}
	pending := 0
	for _, k := range m.List() {
		if k.State == store.KeyPending {
			pending++
		}
	}
	if pending != 1 {
		t.Fatalf("%d pending keys after cutting the active one, want 1", pending)
	}
	// Still verifies (not revoked) for tokens before the cut.
	if _, revoked, ok := m.Lookup(id); !ok || revoked {
		t.Fatalf("Lookup after cut: ok %v revoked %v", ok, revoked)
	}
	if _, err := m.Cut(ctx, "nope", at, "operator"); err == nil {
		t.Fatal("cut of an unknown key accepted")
	}
}
