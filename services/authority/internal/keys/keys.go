// Package keys manages the authority's Ed25519 signing keys: creation on
// first start, rotation with a delayed activation, revocation, and the key
// set the authority verifies presented tokens against.
package keys

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/sigil-auth/sigil/pkg/token"
	"github.com/sigil-auth/sigil/services/authority/internal/secrets"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// Errors returned by the manager.
var (
	ErrNoActiveKey = errors.New("keys: no active signing key")
)

// Store is the part of the store the manager needs.
type Store interface {
	AddKey(ctx context.Context, k store.Key, a store.AuditRecord) (uint64, error)
	SetKeyState(ctx context.Context, id string, s store.KeyState) (uint64, error)
	RevokeKey(ctx context.Context, id string, a store.AuditRecord) (uint64, error)
	CutKey(ctx context.Context, id string, issuedAfter time.Time, a store.AuditRecord) (uint64, error)
	ListKeys(ctx context.Context) ([]store.Key, error)
}

// Options configures a Manager.
type Options struct {
	// ActivationDelay is the time between announcing a rotated key and
	// signing with it. It must exceed the stream's checkpoint interval.
	ActivationDelay time.Duration
	// Logger receives key life-cycle lines (key ids only).
	Logger *slog.Logger
	// Now returns the current time; time.Now when nil.
	Now func() time.Time
	// ExternalSchedule, when set, starts no activation goroutine: the
	// caller runs RunSchedule (the authority runs it on the one replica
	// that leads the cluster-wide background work).
	ExternalSchedule bool
}

// Manager owns the signing keys. It is safe for concurrent use.
type Manager struct {
	st     Store
	sealer *secrets.Sealer
	delay  time.Duration
	logger *slog.Logger
	now    func() time.Time

	opMu sync.Mutex // serializes key changes (rotate, revoke, activate)

	mu     sync.RWMutex
	keys   map[string]*entry
	order  []string // ids, oldest first
	active string   // id of the active key; "" when none

	wake    chan struct{}
	stop    chan struct{}
	stopped chan struct{}
	once    sync.Once
}

type entry struct {
	key  store.Key // SealedPrivate kept; Public always set
	priv ed25519.PrivateKey
}

// New loads the keys from st, creates and activates a first key when there is
// none, activates pending keys whose time has come, and starts the goroutine
// that activates rotated keys. Call Close to stop it.
func New(ctx context.Context, st Store, sealer *secrets.Sealer, opts Options) (*Manager, error) {
	m := &Manager{
		st: st, sealer: sealer, delay: opts.ActivationDelay, logger: opts.Logger, now: opts.Now,
		keys: map[string]*entry{}, wake: make(chan struct{}, 1), stop: make(chan struct{}), stopped: make(chan struct{}),
	}
	if m.logger == nil {
		m.logger = slog.New(slog.DiscardHandler)
	}
	if m.now == nil {
		m.now = time.Now
	}
	if err := m.load(ctx); err != nil {
		return nil, err
	}
	if len(m.keys) == 0 {
		if _, _, err := m.add(ctx, store.KeyActive, m.now(), store.ActorSystem); err != nil {
			return nil, fmt.Errorf("keys: create first key: %w", err)
		}
	}
	if err := m.activateDue(ctx); err != nil {
		return nil, err
	}
	if opts.ExternalSchedule {
		close(m.stopped)
		return m, nil
	}
	go m.loop()
	return m, nil
}

// load reads every key and opens the private halves of the usable ones.
func (m *Manager) load(ctx context.Context) error {
	ks, err := m.st.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("keys: list: %w", err)
	}
	// Built aside and swapped in whole: a key that cannot be opened leaves
	// the manager as it was.
	keys, order, active := map[string]*entry{}, []string(nil), ""
	for _, k := range ks {
		e := &entry{key: k}
		if k.State != store.KeyRevoked {
			raw, err := m.sealer.Open(k.ID, k.SealedPrivate)
			if err != nil {
				return fmt.Errorf("keys: key %s: %w", k.ID, err)
			}
			if len(raw) != ed25519.PrivateKeySize {
				return fmt.Errorf("keys: key %s: bad private key size", k.ID)
			}
			e.priv = ed25519.PrivateKey(raw)
		}
		keys[k.ID] = e
		order = append(order, k.ID)
		if k.State == store.KeyActive {
			// Several active keys can only come from a crash between
			// activating one and demoting the other (or from two replicas
			// creating a first key at once): the newest wins and
			// activateDue demotes the rest.
			active = k.ID
		}
	}
	m.mu.Lock()
	m.keys, m.order, m.active = keys, order, active
	m.mu.Unlock()
	return nil
}

// add creates a key in state s (active or pending) activating at activate.
func (m *Manager) add(ctx context.Context, s store.KeyState, activate time.Time, actor string) (store.Key, uint64, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return store.Key{}, 0, fmt.Errorf("keys: %w", err)
	}
	var idb [8]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return store.Key{}, 0, fmt.Errorf("keys: %w", err)
	}
	id := hex.EncodeToString(idb[:])
	sealed, err := m.sealer.Seal(id, priv)
	if err != nil {
		return store.Key{}, 0, err
	}
	now := m.now()
	k := store.Key{ID: id, State: s, Public: pub, SealedPrivate: sealed, CreateTime: now, ActivateTime: activate}
	rev, err := m.st.AddKey(ctx, k, store.AuditRecord{Time: now, Actor: actor, Action: store.AuditKeyRotated, KeyID: id})
	if err != nil {
		return store.Key{}, 0, err
	}
	m.mu.Lock()
	m.keys[id] = &entry{key: k, priv: priv}
	m.order = append(m.order, id)
	if s == store.KeyActive {
		m.active = id
	}
	m.mu.Unlock()
	m.logger.Info("signing key added", "key_id", id, "state", stateName(s), "activate_time", activate)
	return k, rev, nil
}

// Rotate adds a pending key, announced at once, that starts signing after
// the activation delay; the active key then becomes verify-only.
func (m *Manager) Rotate(ctx context.Context, actor string) (store.Key, uint64, error) {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	k, rev, err := m.add(ctx, store.KeyPending, m.now().Add(m.delay), actor)
	if err != nil {
		return store.Key{}, 0, err
	}
	m.poke()
	return publicOnly(k), rev, nil
}

// Revoke revokes a key at once. When it was the active key and no pending
// key will take over, a new pending key is added: minting fails with
// ErrNoActiveKey until it activates, so that no authorizer meets a token
// signed by a key it has not received. Revoking a revoked key changes nothing
// and returns the revision of its original revocation, as the store does.
func (m *Manager) Revoke(ctx context.Context, id, actor string) (uint64, error) {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	if err := m.known(id); err != nil {
		return 0, err
	}
	now := m.now()
	rev, err := m.st.RevokeKey(ctx, id, store.AuditRecord{Time: now, Actor: actor, Action: store.AuditKeyRevoked, KeyID: id})
	if err != nil {
		return 0, err
	}
	m.mu.Lock()
	e := m.keys[id]
	e.key.State = store.KeyRevoked
	e.key.RevokeTime = now
	e.priv = nil
	m.mu.Unlock()
	m.logger.Warn("signing key revoked", "key_id", id)
	m.replaceIfActive(ctx, id, now, actor)
	return rev, nil
}

// known returns store.ErrNotFound (wrapped) unless id is a key the manager
// holds.
func (m *Manager) known(id string) error {
	m.mu.RLock()
	_, ok := m.keys[id]
	m.mu.RUnlock()
	if !ok {
		return fmt.Errorf("signing key: %w", store.ErrNotFound)
	}
	return nil
}

// Cut revokes the tokens key id signed with an issue time in or after
// issuedAfter's second (store.CutKey): after restoring a backup made at
// issuedAfter, the tokens minted since then are void, older ones keep
// verifying. The key stops signing; when it was the active key a
// replacement is added as Revoke does. A revoked key stays revoked.
func (m *Manager) Cut(ctx context.Context, id string, issuedAfter time.Time, actor string) (uint64, error) {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	if err := m.known(id); err != nil {
		return 0, err
	}
	now := m.now()
	rev, err := m.st.CutKey(ctx, id, issuedAfter, store.AuditRecord{Time: now, Actor: actor, Action: store.AuditKeyRevoked, KeyID: id})
	if err != nil {
		return 0, err
	}
	// Read back what the store decided (the earlier of two cuts; a revoked
	// key unchanged) rather than repeat its rules here.
	ks, err := m.st.ListKeys(ctx)
	if err != nil {
		return 0, fmt.Errorf("keys: list: %w", err)
	}
	m.mu.Lock()
	for _, k := range ks {
		if e, ok := m.keys[id]; ok && k.ID == id {
			e.key.State, e.key.RevokedIssuedAfter = k.State, k.RevokedIssuedAfter
			break
		}
	}
	m.mu.Unlock()
	m.logger.Warn("signing key cut: tokens it signed after the cut are revoked", "key_id", id, "issued_after", issuedAfter.Truncate(time.Second).UTC())
	m.replaceIfActive(ctx, id, now, actor)
	return rev, nil
}

// CutOf returns the cut of key id (zero when none): tokens it signed with
// an issue time at or after it are revoked.
func (m *Manager) CutOf(id string) time.Time {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if e, ok := m.keys[id]; ok {
		return e.key.RevokedIssuedAfter
	}
	return time.Time{}
}

// replaceIfActive, after id stopped signing, adds a pending replacement
// when id was the active key and no pending key will take over: minting
// fails with ErrNoActiveKey until it activates, so that no authorizer meets
// a token signed by a key it has not received. m.opMu is held.
func (m *Manager) replaceIfActive(ctx context.Context, id string, now time.Time, actor string) {
	m.mu.Lock()
	wasActive := m.active == id
	if wasActive {
		m.active = ""
	}
	pending := false
	for _, e := range m.keys {
		if e.key.State == store.KeyPending {
			pending = true
		}
	}
	m.mu.Unlock()
	if wasActive && !pending {
		if _, _, err := m.add(ctx, store.KeyPending, now.Add(m.delay), actor); err != nil {
			m.logger.Error("could not add a replacement signing key", "error", err)
		}
		m.poke()
	}
}

// Signer returns the active key's id and private key, for minting.
func (m *Manager) Signer() (string, ed25519.PrivateKey, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.active == "" {
		return "", nil, ErrNoActiveKey
	}
	return m.active, m.keys[m.active].priv, nil
}

// List returns the public part of every key, oldest first.
func (m *Manager) List() []store.Key {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]store.Key, 0, len(m.order))
	for _, id := range m.order {
		out = append(out, publicOnly(m.keys[id].key))
	}
	return out
}

// Lookup implements token.KeySet over the authority's own keys.
func (m *Manager) Lookup(keyID string) (ed25519.PublicKey, bool, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	e, ok := m.keys[keyID]
	if !ok {
		return nil, false, false
	}
	return ed25519.PublicKey(e.key.Public), e.key.State == store.KeyRevoked, true
}

var _ token.KeySet = (*Manager)(nil)

// Close stops the activation goroutine.
func (m *Manager) Close() {
	m.once.Do(func() { close(m.stop) })
	<-m.stopped
}

func (m *Manager) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// loop activates pending keys when their time comes, until Close.
func (m *Manager) loop() {
	defer close(m.stopped)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-m.stop
		cancel()
	}()
	m.schedule(ctx, false)
	cancel()
}

// RunSchedule activates pending keys when their time comes, until ctx ends
// (for a manager made with ExternalSchedule). Each round reads the keys
// from the store first, so that what another replica changed (a rotation,
// an activation, a revocation) is what the round works from: two replicas
// that ever run it at once compute the same activations from the same
// keys, and the store changes nothing for a key already in its state.
func (m *Manager) RunSchedule(ctx context.Context) {
	m.schedule(ctx, true)
}

// schedule is the activation loop; reload makes each round read the keys
// from the store first.
func (m *Manager) schedule(ctx context.Context, reload bool) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for first := reload; ; first = false {
		if !first {
			next, ok := m.nextActivation()
			wait := time.Hour
			if ok {
				wait = max(next.Sub(m.now()), 0)
			}
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return
			case <-m.wake:
				if !reload {
					continue
				}
				// A key changed (here or on another replica): a round
				// on what the store holds now.
			case <-timer.C:
			}
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		var err error
		if reload {
			err = m.reload(rctx)
		}
		if err == nil {
			err = m.activateDue(rctx)
		}
		cancel()
		if err != nil && ctx.Err() == nil {
			m.logger.Error("signing key activation failed; retrying", "error", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}
}

// Reload reads the keys from the store again, for a manager whose store
// other replicas change too: their rotations, activations and revocations
// become this replica's (signing key, verification, key list). The
// schedule, when this manager runs it, is woken to see new pending keys.
func (m *Manager) Reload(ctx context.Context) error {
	err := m.reload(ctx)
	if err == nil {
		m.poke()
	}
	return err
}

// reload is load between key changes of this process.
func (m *Manager) reload(ctx context.Context) error {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	return m.load(ctx)
}

func (m *Manager) nextActivation() (time.Time, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var next time.Time
	found := false
	for _, e := range m.keys {
		if e.key.State == store.KeyPending && (!found || e.key.ActivateTime.Before(next)) {
			next, found = e.key.ActivateTime, true
		}
	}
	return next, found
}

// activateDue activates the newest pending key whose time has come and
// demotes every other active key to verify-only (also repairing the state a
// crash between the two steps leaves).
func (m *Manager) activateDue(ctx context.Context) error {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	now := m.now()
	m.mu.RLock()
	var due []string
	for _, id := range m.order {
		e := m.keys[id]
		if e.key.State == store.KeyPending && !e.key.ActivateTime.After(now) {
			due = append(due, id)
		}
	}
	m.mu.RUnlock()
	if len(due) > 0 {
		// Older due keys never sign: the newest takes over directly.
		newest := due[len(due)-1]
		for _, id := range due[:len(due)-1] {
			if err := m.setState(ctx, id, store.KeyVerifyOnly); err != nil {
				return err
			}
		}
		if err := m.setState(ctx, newest, store.KeyActive); err != nil {
			return err
		}
		m.mu.Lock()
		m.active = newest
		m.mu.Unlock()
		m.logger.Info("signing key activated", "key_id", newest)
	}
	m.mu.RLock()
	var demote []string
	for _, id := range m.order {
		if m.keys[id].key.State == store.KeyActive && id != m.active {
			demote = append(demote, id)
		}
	}
	m.mu.RUnlock()
	for _, id := range demote {
		if err := m.setState(ctx, id, store.KeyVerifyOnly); err != nil {
			return err
		}
		m.logger.Info("signing key now verify-only", "key_id", id)
	}
	return nil
}

func (m *Manager) setState(ctx context.Context, id string, s store.KeyState) error {
	if _, err := m.st.SetKeyState(ctx, id, s); err != nil {
		return fmt.Errorf("keys: set %s %s: %w", id, stateName(s), err)
	}
	m.mu.Lock()
	m.keys[id].key.State = s
	m.mu.Unlock()
	return nil
}

func publicOnly(k store.Key) store.Key {
	k.SealedPrivate = nil
	k.Public = append([]byte(nil), k.Public...)
	return k
}

func stateName(s store.KeyState) string {
	switch s {
	case store.KeyPending:
		return "pending"
	case store.KeyActive:
		return "active"
	case store.KeyVerifyOnly:
		return "verify-only"
	case store.KeyRevoked:
		return "revoked"
	}
	return "unknown"
}
