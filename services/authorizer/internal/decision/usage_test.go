package decision

import (
	"sync"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/pkg/token"
)

// uses is a Recorder that keeps what it hears.
type uses struct {
	mu   sync.Mutex
	ids  []token.ID
	at   []time.Time
	full bool // refuse uses, as a full buffer does
}

func (u *uses) Record(id token.ID, at time.Time) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.full {
		return false
	}
	u.ids = append(u.ids, id)
	u.at = append(u.at, at)
	return true
}

func (u *uses) take() []token.ID {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := u.ids
	u.ids = nil
	return out
}

// TestUsageOnlyAllowed: an allowed decision records its token's use; no
// denial does, whether the token is forged, malformed, expired, revoked,
// of another organization or lacks the permission.
func TestUsageOnlyAllowed(t *testing.T) {
	f := newFixture(t)
	rec := &uses{}
	var err error
	f.dec, err = New(Options{Codec: f.codec, State: f.state, Leeway: leeway, CacheSize: 1000, Now: f.clock.Now, Usage: rec})
	if err != nil {
		t.Fatal(err)
	}
	good := baseClaims(t)
	tok := f.mint(t, good, "")
	if d := f.dec.Decide(tok, "domain:view", "domains/example.com", "org-a"); !d.Allowed() {
		t.Fatalf("setup: %v", d.Reason)
	}
	rec.mu.Lock()
	at := rec.at
	rec.mu.Unlock()
	if got := rec.take(); len(got) != 1 || got[0] != good.ID {
		t.Fatalf("allowed check recorded %v, want [%v]", got, good.ID)
	}
	if len(at) != 1 || !at[0].Equal(t0) {
		t.Fatalf("use recorded at %v, want the decider's clock %v", at, t0)
	}
	// Again in the same minute (claims cached): handed over once a minute.
	f.dec.Decide(tok, "billing:view", "", "")
	f.clock.Add(59 * time.Second)
	f.dec.Decide(tok, "billing:view", "", "")
	if got := rec.take(); len(got) != 0 {
		t.Fatalf("checks in the same minute recorded %v again", got)
	}
	// The next minute, on the cached path: once more.
	f.clock.Add(time.Second)
	f.dec.Decide(tok, "billing:view", "", "")
	f.dec.Decide(tok, "billing:view", "", "")
	if got := rec.take(); len(got) != 1 || got[0] != good.ID {
		t.Fatalf("cached allowed checks of the next minute recorded %v, want [%v]", got, good.ID)
	}
	// A use the recorder refuses (its buffer full) is offered again.
	f.clock.Add(time.Minute)
	rec.mu.Lock()
	rec.full = true
	rec.mu.Unlock()
	f.dec.Decide(tok, "billing:view", "", "")
	rec.mu.Lock()
	rec.full = false
	rec.mu.Unlock()
	f.dec.Decide(tok, "billing:view", "", "")
	if got := rec.take(); len(got) != 1 {
		t.Fatalf("after a refused use, the next check recorded %v, want it once", got)
	}

	forged := baseClaims(t)
	expired := baseClaims(t)
	expired.IssuedAt, expired.ExpiresAt = t0.Add(-2*time.Hour), t0.Add(-time.Hour)
	revoked := baseClaims(t)
	f.state.revoke(revoked.ID)
	denials := map[string]string{
		"forged (signed by an unknown private key)": f.mint(t, forged, "unknown"),
		"malformed":   tok[:len(tok)-3] + "abc",
		"expired":     f.mint(t, expired, ""),
		"revoked":     f.mint(t, revoked, ""),
		"revoked key": f.mint(t, func() token.Claims { c := baseClaims(t); c.KeyID = "revoked"; return c }(), ""),
	}
	for name, tk := range denials {
		if d := f.dec.Decide(tk, "domain:view", "", ""); d.Allowed() {
			t.Fatalf("%s: allowed", name)
		}
		if got := rec.take(); len(got) != 0 {
			t.Errorf("%s: denial recorded %v", name, got)
		}
	}
	for name, d := range map[string]Decision{
		"other organization":     f.dec.Decide(tok, "domain:view", "", "org-b"),
		"permission not granted": f.dec.Decide(tok, "domain:delete", "", ""),
		"resource not granted":   f.dec.Decide(tok, "domain:view", "domains/other.com", ""),
	} {
		if d.Allowed() {
			t.Fatalf("%s: allowed", name)
		}
		if got := rec.take(); len(got) != 0 {
			t.Errorf("%s: denial recorded %v", name, got)
		}
	}
	// CheckPermissions' shape: one verdict, several checks; the allowed
	// ones are one use of the minute.
	f.clock.Add(time.Minute)
	v := f.dec.Authenticate(tok, "")
	v.Check("domain:delete", "")
	if got := rec.take(); len(got) != 0 {
		t.Fatalf("a denied check of a verdict recorded %v", got)
	}
	v.Check("billing:view", "")
	v.Check("domain:renew", "domains/example.com")
	if got := rec.take(); len(got) != 1 {
		t.Errorf("two allowed checks of one verdict recorded %d uses, want 1", len(got))
	}
}
