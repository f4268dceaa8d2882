package keys

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sigil-auth/sigil/services/authority/internal/secrets"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// memStore is an in-memory keys.Store.
type memStore struct {
	mu        sync.Mutex
	rev       uint64
	keys      []store.Key
	log       []string
	revokedAt map[string]uint64
}

func (s *memStore) AddKey(_ context.Context, k store.Key, _ store.AuditRecord) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rev++
	s.keys = append(s.keys, k)
	s.log = append(s.log, "add "+k.ID)
	return s.rev, nil
}

func (s *memStore) SetKeyState(_ context.Context, id string, st store.KeyState) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.keys {
		if s.keys[i].ID == id {
			s.rev++
			s.keys[i].State = st
			s.log = append(s.log, "state "+id+" "+stateName(st))
			return s.rev, nil
		}
	}
	return 0, store.ErrNotFound
}

func (s *memStore) RevokeKey(_ context.Context, id string, _ store.AuditRecord) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.keys {
		if s.keys[i].ID == id {
			if s.keys[i].State == store.KeyRevoked {
				return s.revokedAt[id], nil // idempotent, like the bbolt store
			}
			s.rev++
			s.keys[i].State = store.KeyRevoked
			if s.revokedAt == nil {
				s.revokedAt = map[string]uint64{}
			}
			s.revokedAt[id] = s.rev
			return s.rev, nil
		}
	}
	return 0, store.ErrNotFound
}

func (s *memStore) ListKeys(context.Context) ([]store.Key, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]store.Key(nil), s.keys...), nil
}

func (s *memStore) state(id string) store.KeyState {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range s.keys {
		if k.ID == id {
			return k.State
		}
	}
	return 0
}

func newSealer(t *testing.T) *secrets.Sealer {
	s, err := secrets.NewSealer(bytes.Repeat([]byte{1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestFirstKeyActiveAndSealed(t *testing.T) {
	st := &memStore{}
	m, err := New(context.Background(), st, newSealer(t), Options{ActivationDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	id, priv, err := m.Signer()
	if err != nil {
		t.Fatal(err)
	}
	ks, _ := st.ListKeys(context.Background())
	if len(ks) != 1 || ks[0].ID != id || ks[0].State != store.KeyActive {
		t.Fatalf("stored keys %+v", ks)
	}
	if bytes.Contains(ks[0].SealedPrivate, priv.Seed()) {
		t.Fatal("private key stored in clear")
	}
	pub, revoked, ok := m.Lookup(id)
	if !ok || revoked || !bytes.Equal(pub, priv.Public().(ed25519.PublicKey)) {
		t.Fatal("lookup of the active key failed")
	}
	if _, _, ok := m.Lookup("nope"); ok {
		t.Fatal("unknown key found")
	}
	// A restart loads the same key.
	m2, err := New(context.Background(), st, newSealer(t), Options{ActivationDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	id2, priv2, _ := m2.Signer()
	if id2 != id || !priv2.Equal(priv) {
		t.Fatal("restart changed the active key")
	}
	// A wrong KEK cannot open it.
	wrong, _ := secrets.NewSealer(bytes.Repeat([]byte{2}, 32))
	if _, err := New(context.Background(), st, wrong, Options{ActivationDelay: time.Hour}); err == nil {
		t.Fatal("wrong kek accepted")
	}
}

func TestRotateActivatesAfterDelay(t *testing.T) {
	st := &memStore{}
	m, err := New(context.Background(), st, newSealer(t), Options{ActivationDelay: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	old, _, _ := m.Signer()
	k, _, err := m.Rotate(context.Background(), "operator")
	if err != nil {
		t.Fatal(err)
	}
	if k.State != store.KeyPending || k.SealedPrivate != nil {
		t.Fatalf("rotated key %+v", k)
	}
	if id, _, _ := m.Signer(); id != old {
		t.Fatal("new key signs before its activation")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if id, _, _ := m.Signer(); id == k.ID {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("key never activated")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st.state(k.ID) != store.KeyActive || st.state(old) != store.KeyVerifyOnly {
		t.Fatalf("states: new %v old %v", st.state(k.ID), st.state(old))
	}
}

func TestPendingDueAtStartupActivated(t *testing.T) {
	st := &memStore{}
	now := time.Now()
	m, err := New(context.Background(), st, newSealer(t), Options{ActivationDelay: time.Hour, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	k, _, err := m.Rotate(context.Background(), "operator")
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	later := now.Add(2 * time.Hour)
	m2, err := New(context.Background(), st, newSealer(t), Options{ActivationDelay: time.Hour, Now: func() time.Time { return later }})
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	if id, _, _ := m2.Signer(); id != k.ID {
		t.Fatal("due pending key not activated at start-up")
	}
	var active int
	for _, k := range m2.List() {
		if k.State == store.KeyActive {
			active++
		}
	}
	if active != 1 {
		t.Fatalf("%d active keys", active)
	}
}

func TestRevokeActiveAddsReplacement(t *testing.T) {
	st := &memStore{}
	m, err := New(context.Background(), st, newSealer(t), Options{ActivationDelay: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	old, _, _ := m.Signer()
	if _, err := m.Revoke(context.Background(), old, "operator"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.Signer(); err != ErrNoActiveKey {
		t.Fatalf("signer after revoking the active key: %v", err)
	}
	if _, revoked, ok := m.Lookup(old); !ok || !revoked {
		t.Fatal("revoked key not reported revoked")
	}
	if _, err := m.Revoke(context.Background(), "missing", "operator"); err == nil {
		t.Fatal("revoking an unknown key succeeded")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if id, _, err := m.Signer(); err == nil && id != old {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("replacement key never activated")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
