package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

var crashCycles = flag.Int("crash.cycles", 50, "kill -9 cycles of TestCrashRecovery")

// acked is what the authority acknowledged before a crash.
type acked struct {
	mu      sync.Mutex
	minted  map[string]bool   // token id → minted
	revoked map[string]uint64 // token id → revision of the revocation
	maxRev  uint64
	fresh   map[string]bool // ids acknowledged since the last verification
	keys    map[string]bool // signing keys whose rotation was acknowledged
}

func (a *acked) key(id string, rev uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.keys[id] = true
	a.maxRev = max(a.maxRev, rev)
}

func (a *acked) mint(id string, _ uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.minted[id] = true
	a.fresh[id] = true
}

func (a *acked) revoke(id string, rev uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.revoked[id] = rev
	a.fresh[id] = true
	a.maxRev = max(a.maxRev, rev)
}

// TestCrashRecovery kills the authority with SIGKILL at random moments while
// clients mint and revoke; after each restart every acknowledged mint and
// revocation is there, the revision has not gone backwards, and at the end
// bbolt's consistency check passes.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the binary many times")
	}
	dir := t.TempDir()
	a := &acked{minted: map[string]bool{}, revoked: map[string]uint64{}, fresh: map[string]bool{}, keys: map[string]bool{}}
	var lastRev uint64
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	for cycle := range *crashCycles {
		p := startProc(t, dir)
		// Everything acknowledged in the last cycle is there (and the
		// final verification checks everything again).
		verify(t, p, a, false)
		rev := currentRevision(t, p)
		if rev < lastRev || rev < a.maxRev {
			t.Fatalf("cycle %d: revision went backwards: %d < %d (max acked %d)", cycle, rev, lastRev, a.maxRev)
		}
		lastRev = rev
		// Load, then kill -9 at a random moment within it.
		ctx, cancel := context.WithCancel(p.op())
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				load(ctx, p, a, fmt.Sprintf("c%d-w%d", cycle, w))
			}()
		}
		// A key rotation at a random moment too.
		wg.Add(1)
		go func(delay time.Duration) {
			defer wg.Done()
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return
			}
			if r, err := p.client.RotateSigningKey(ctx, &sigilv1.RotateSigningKeyRequest{}); err == nil {
				a.key(r.GetKeyId(), r.GetRevision())
			}
		}(time.Duration(rng.IntN(250)) * time.Millisecond)
		time.Sleep(time.Duration(100+rng.IntN(200)) * time.Millisecond)
		p.kill()
		cancel()
		wg.Wait()
	}
	p := startProc(t, dir)
	verify(t, p, a, true)
	p.kill()
	t.Logf("%d cycles: %d mints, %d revocations and %d key rotations acknowledged", *crashCycles, len(a.minted), len(a.revoked), len(a.keys))

	if err := store.CheckFile(filepath.Join(dir, "sigil.db"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

// load mints and revokes until the process dies, recording acknowledgements.
func load(ctx context.Context, p *proc, a *acked, prefix string) {
	var live []string
	for i := 0; ctx.Err() == nil; i++ {
		if len(live) > 0 && i%3 == 2 {
			id := live[0]
			live = live[1:]
			r, err := p.client.RevokeToken(ctx, &sigilv1.RevokeTokenRequest{TokenId: id, Reason: "crash test"})
			if err == nil {
				a.revoke(id, r.GetRevision())
			}
			continue
		}
		r, err := p.client.CreateToken(ctx, mintReq("crash", fmt.Sprint(prefix, "-", i), "tester"))
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			continue
		}
		a.mint(r.GetInfo().GetTokenId(), 0)
		live = append(live, r.GetInfo().GetTokenId())
	}
}

func verify(t *testing.T, p *proc, a *acked, all bool) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	ctx := p.op()
	ks, err := p.client.ListSigningKeys(ctx, &sigilv1.ListSigningKeysRequest{})
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, k := range ks.GetKeys() {
		have[k.GetKeyId()] = true
	}
	for id := range a.keys {
		if !have[id] {
			t.Fatalf("acknowledged signing key %s lost", id)
		}
	}
	ids := a.fresh
	if all {
		ids = a.minted
	}
	a.fresh = map[string]bool{}
	for id := range ids {
		g, err := p.client.GetToken(ctx, &sigilv1.GetTokenRequest{TokenId: id})
		if err != nil {
			t.Fatalf("acknowledged mint %s lost: %v", id, err)
		}
		if rev, ok := a.revoked[id]; ok {
			if g.GetInfo().GetState() != sigilv1.TokenState_TOKEN_STATE_REVOKED {
				t.Fatalf("acknowledged revocation of %s lost", id)
			}
			r, err := p.client.RevokeToken(ctx, &sigilv1.RevokeTokenRequest{TokenId: id})
			if err != nil || r.GetRevision() != rev {
				t.Fatalf("revocation of %s: revision %d, acknowledged %d (%v)", id, r.GetRevision(), rev, err)
			}
		}
	}
}

// currentRevision reads the revision from the first checkpoint of a
// resumed revocation stream.
func currentRevision(t *testing.T, p *proc) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(p.watchCtx(), 10*time.Second)
	defer cancel()
	s, err := p.client.WatchRevocations(ctx, &sigilv1.WatchRevocationsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		m, err := s.Recv()
		if err != nil {
			t.Fatalf("watch: %v (%v)", err, code(err) == codes.Unauthenticated)
		}
		if e := m.GetSnapshotEnd(); e != nil {
			return e.GetRevision()
		}
	}
}
