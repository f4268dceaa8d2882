package ha

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

// minted is an acknowledged mint.
type minted struct {
	id, token string
	via       string // replica that acknowledged it
}

// ledger records what the system acknowledged, and what went wrong.
type ledger struct {
	mu       sync.Mutex
	minted   map[string]minted
	revoked  map[string]uint64 // token id → revision of the acknowledged revocation
	maxRev   uint64
	failures map[string]int // "op/code" → count, of calls not acknowledged
	bad      []string       // violations: wrong answers, backwards revisions, unexpected codes
}

func newLedger() *ledger {
	return &ledger{minted: map[string]minted{}, revoked: map[string]uint64{}, failures: map[string]int{}}
}

func (l *ledger) addMint(m minted) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.minted[m.id] = m
}

func (l *ledger) addRevoke(id string, rev uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.revoked[id] = rev
	l.maxRev = max(l.maxRev, rev)
}

func (l *ledger) fail(op string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failures[op+"/"+status.Code(err).String()]++
}

func (l *ledger) violation(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.bad) < 50 {
		l.bad = append(l.bad, fmt.Sprintf(format, args...))
	}
}

// takeFailures returns the failures counted since the last call, and
// resets them.
func (l *ledger) takeFailures() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.failures
	l.failures = map[string]int{}
	return f
}

func (l *ledger) snapshot() (map[string]minted, map[string]uint64, uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := make(map[string]minted, len(l.minted))
	for k, v := range l.minted {
		m[k] = v
	}
	r := make(map[string]uint64, len(l.revoked))
	for k, v := range l.revoked {
		r[k] = v
	}
	return m, r, l.maxRev
}

// load is a bounded mixed mint/revoke/check load: workers mint through
// the replicas in turn, revoke one of their own live tokens every third
// step through another replica, and check one of their revoked tokens
// (with min_revision: must be denied) and one live token (must be allowed)
// on the authorizers in turn. Every acknowledgement goes to the ledger.
type load struct {
	s       *system
	l       *ledger
	targets func() ([]*replica, []*authorizer)
	// okUnavailable says whether an UNAVAILABLE answer of an authorizer is
	// acceptable now (it is not while the authorizers are fresh).
	okUnavailable atomic.Bool

	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
	ops      atomic.Int64
}

// seq makes token names unique across every load of the test binary.
var seq atomic.Int64

// maxOps bounds a load run whatever happens.
const maxOps = 20000

func startLoad(s *system, l *ledger, workers int, targets func() ([]*replica, []*authorizer)) *load {
	ld := &load{s: s, l: l, targets: targets, stop: make(chan struct{})}
	for w := range workers {
		ld.wg.Add(1)
		go ld.worker(w)
	}
	return ld
}

// halt stops the load and waits for the workers; it may be called again.
func (ld *load) halt() {
	ld.stopOnce.Do(func() { close(ld.stop) })
	ld.wg.Wait()
}

func (ld *load) worker(w int) {
	defer ld.wg.Done()
	rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
	var live []minted
	var revoked []minted
	revAt := map[string]uint64{}
	var lastRev uint64
	for i := 0; ; i++ {
		select {
		case <-ld.stop:
			return
		default:
		}
		if ld.ops.Add(1) > maxOps {
			return
		}
		reps, authzs := ld.targets()
		rep := reps[i%len(reps)]
		name := fmt.Sprintf("w%d-%d-%d", w, i, seq.Add(1))
		resp, err := call(ld.s.opCtx, 15*time.Second, func(ctx context.Context) (*sigilv1.CreateTokenResponse, error) {
			return rep.mgmt.CreateToken(ctx, mintRequest(name))
		})
		if err != nil {
			ld.l.fail("mint", err)
			ld.expectUnavailable("mint via "+rep.name, err)
		} else {
			m := minted{id: resp.GetInfo().GetTokenId(), token: resp.GetToken(), via: rep.name}
			ld.l.addMint(m)
			live = append(live, m)
		}
		if i%3 == 2 && len(live) > 1 {
			k := rng.IntN(len(live))
			victim := live[k]
			other := reps[(i+1)%len(reps)]
			rr, err := call(ld.s.opCtx, 15*time.Second, func(ctx context.Context) (*sigilv1.RevokeTokenResponse, error) {
				return other.mgmt.RevokeToken(ctx, &sigilv1.RevokeTokenRequest{TokenId: victim.id})
			})
			if err != nil {
				ld.l.fail("revoke", err)
				ld.expectUnavailable("revoke via "+other.name, err)
			} else {
				if rr.GetRevision() <= lastRev {
					ld.l.violation("revocation acknowledged at revision %d after one at %d by the same worker", rr.GetRevision(), lastRev)
				}
				lastRev = rr.GetRevision()
				ld.l.addRevoke(victim.id, rr.GetRevision())
				revAt[victim.id] = rr.GetRevision()
				live = append(live[:k], live[k+1:]...)
				revoked = append(revoked, victim)
			}
		}
		if len(authzs) == 0 {
			continue
		}
		az := authzs[i%len(authzs)]
		if len(revoked) > 0 {
			v := revoked[rng.IntN(len(revoked))]
			ld.check(az, v, revAt[v.id], false)
		}
		if len(live) > 0 {
			ld.check(az, live[rng.IntN(len(live))], lastRev, true)
		}
	}
}

// check asks az about m's token after revision minRev and records a
// violation if the answer is not want (or is UNAVAILABLE while that is
// not acceptable).
func (ld *load) check(az *authorizer, m minted, minRev uint64, want bool) {
	resp, err := call(context.Background(), 10*time.Second, func(ctx context.Context) (*sigilv1.CheckPermissionResponse, error) {
		return az.authz.CheckPermission(ctx, &sigilv1.CheckPermissionRequest{Token: m.token, Permission: "domain:view", MinRevision: minRev})
	})
	if err != nil {
		ld.l.fail("check", err)
		if status.Code(err) != codes.Unavailable || !ld.okUnavailable.Load() {
			ld.l.violation("check on %s of %s: %v", az.name, m.id, err)
		}
		return
	}
	if resp.GetAllowed() != want {
		ld.l.violation("check on %s of %s after revision %d: allowed %v (%v), want %v", az.name, m.id, minRev, resp.GetAllowed(), resp.GetReason(), want)
	}
}

// expectUnavailable records a violation unless err is UNAVAILABLE: a
// mutation that could not be acknowledged must say so in a way a client
// retries.
func (ld *load) expectUnavailable(what string, err error) {
	if status.Code(err) != codes.Unavailable {
		ld.l.violation("%s: %v, want UNAVAILABLE", what, err)
	}
}

// verify checks, through every running replica, that every acknowledged
// mint is there and every acknowledged revocation holds, and that the
// authorizers deny every acknowledged revocation.
func (s *system) verify(t *testing.T, l *ledger, reps []*replica, authzs []*authorizer) {
	t.Helper()
	mints, revs, maxRev := l.snapshot()
	if len(mints) == 0 {
		t.Fatal("the load acknowledged no mint")
	}
	for _, r := range reps {
		seen := 0
		for id := range mints {
			got, err := call(s.opCtx, 15*time.Second, func(ctx context.Context) (*sigilv1.GetTokenResponse, error) {
				return r.mgmt.GetToken(ctx, &sigilv1.GetTokenRequest{TokenId: id})
			})
			if err != nil {
				t.Errorf("%s: acknowledged token %s: %v", r.name, id, err)
				continue
			}
			seen++
			_, wasRevoked := revs[id]
			if isRevoked := got.GetInfo().GetState() == sigilv1.TokenState_TOKEN_STATE_REVOKED; isRevoked != wasRevoked {
				t.Errorf("%s: token %s state %v, acknowledged revoked: %v", r.name, id, got.GetInfo().GetState(), wasRevoked)
			}
		}
		t.Logf("%s holds all %d acknowledged tokens (%d revoked)", r.name, seen, len(revs))
	}
	ids := make([]string, 0, len(revs))
	for id := range revs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	if len(ids) > 100 {
		ids = ids[:100] // a sample: each check is a round trip
	}
	for _, a := range authzs {
		for _, id := range ids {
			resp, err := call(context.Background(), 15*time.Second, func(ctx context.Context) (*sigilv1.CheckPermissionResponse, error) {
				return a.authz.CheckPermission(ctx, &sigilv1.CheckPermissionRequest{Token: mints[id].token, Permission: "domain:view", MinRevision: maxRev})
			})
			if err != nil {
				t.Errorf("%s: check of revoked %s: %v", a.name, id, err)
				continue
			}
			if resp.GetAllowed() || resp.GetReason() != sigilv1.DenyReason_DENY_REASON_REVOKED {
				t.Errorf("%s: revoked %s: allowed %v, reason %v", a.name, id, resp.GetAllowed(), resp.GetReason())
			}
			if resp.GetRevision() < maxRev {
				t.Errorf("%s: answered at revision %d, below the acknowledged %d", a.name, resp.GetRevision(), maxRev)
			}
		}
	}
}

// report fails t with the ledger's violations, and logs the failures.
func report(t *testing.T, l *ledger, phase string) {
	t.Helper()
	l.mu.Lock()
	bad := l.bad
	l.bad = nil
	l.mu.Unlock()
	f := l.takeFailures()
	if len(f) > 0 {
		var parts []string
		for k, v := range f {
			parts = append(parts, fmt.Sprintf("%s=%d", k, v))
		}
		sort.Strings(parts)
		t.Logf("%s: calls not acknowledged: %s", phase, strings.Join(parts, " "))
	}
	for _, b := range bad {
		t.Errorf("%s: %s", phase, b)
	}
}
