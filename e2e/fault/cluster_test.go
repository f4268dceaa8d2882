package fault

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sigil-auth/sigil/internal/faultproxy"
	"github.com/sigil-auth/sigil/internal/testproc"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

// cluster is one authority and one authorizer on loopback, the authorizer
// reaching the authority through a fault proxy. Both listen on fixed
// addresses so that either can be killed and restarted in place while the
// load's clients keep their connections (gRPC reconnects).
type cluster struct {
	t            *testing.T
	dataDir      string
	maxStaleness time.Duration
	hist         *history

	proxy *faultproxy.Proxy

	mu             sync.Mutex
	authority      *testproc.Proc
	authorizer     *testproc.Proc
	authorityAddr  string
	authorizerAddr string

	mgmt   sigilv1.TokenAuthorityServiceClient
	authz  sigilv1.AuthorizerServiceClient
	health healthpb.HealthClient
	opTok  string
}

func newCluster(t *testing.T, maxStaleness time.Duration) *cluster {
	t.Helper()
	c := &cluster{t: t, dataDir: t.TempDir(), maxStaleness: maxStaleness, hist: newHistory()}
	c.authorityAddr = testproc.FreeAddr(t)
	c.startAuthority()
	p, err := faultproxy.New(c.authorityAddr)
	if err != nil {
		t.Fatal(err)
	}
	c.proxy = p
	t.Cleanup(func() { p.Close() })
	c.authorizerAddr = testproc.FreeAddr(t)
	c.startAuthorizer()

	b, err := os.ReadFile(filepath.Join(c.dataDir, "operator.token"))
	if err != nil {
		t.Fatal(err)
	}
	c.opTok = strings.TrimSpace(string(b))
	mc := dialGRPC(t, c.authorityAddr)
	zc := dialGRPC(t, c.authorizerAddr)
	c.mgmt = sigilv1.NewTokenAuthorityServiceClient(mc)
	c.authz = sigilv1.NewAuthorizerServiceClient(zc)
	c.health = healthpb.NewHealthClient(zc)
	c.waitServing(20 * time.Second)
	return c
}

func dialGRPC(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// startAuthority starts (or restarts, on the same address and data) the
// authority and waits until it listens.
func (c *cluster) startAuthority(extra ...string) {
	c.t.Helper()
	args := append([]string{"--listen", c.authorityAddr, "--metrics-listen", "127.0.0.1:0", "--data-dir", c.dataDir,
		"--key-activation-delay", "1500ms", "--shutdown-timeout", "5s", "--lock-timeout", "5s"}, extra...)
	p := testproc.StartWith(c.t, testproc.Options{Name: "authority"}, testproc.MustBuild(c.t, "services/authority"), args...)
	if err := p.WaitRecord(30*time.Second, "listening", nil); err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	c.authority = p
	c.mu.Unlock()
}

// startAuthorizer starts (or restarts, on the same address) the authorizer
// and waits until it listens (not until it is synced).
func (c *cluster) startAuthorizer() {
	c.t.Helper()
	p := testproc.StartWith(c.t, testproc.Options{Name: "authorizer"}, testproc.MustBuild(c.t, "services/authorizer"),
		"--listen", c.authorizerAddr, "--metrics-listen", "127.0.0.1:0",
		"--authority", c.proxy.Addr(), "--authority-token-file", filepath.Join(c.dataDir, "watch.token"),
		"--max-staleness", c.maxStaleness.String(), "--shutdown-timeout", "5s")
	if err := p.WaitRecord(30*time.Second, "listening", nil); err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	c.authorizer = p
	c.mu.Unlock()
}

// restartAuthorityWith kills the authority (-9), calls prepare on its data
// directory while it is down, and starts it again. It records the outage
// as a window. This is the hook for the restore scenarios (a backup of the
// bbolt file put back by prepare); see restoreScenarios.
func (c *cluster) restartAuthorityWith(prepare func(dataDir string), extra ...string) {
	c.t.Helper()
	from := time.Now()
	c.authorityProc().Kill()
	if prepare != nil {
		prepare(c.dataDir)
	}
	c.startAuthority(extra...)
	c.hist.addWindow(window{From: from, To: time.Now(), What: "authority killed"})
}

func (c *cluster) authorityProc() *testproc.Proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.authority
}

func (c *cluster) authorizerProc() *testproc.Proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.authorizer
}

func (c *cluster) waitServing(within time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := c.health.Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("authorizer not SERVING within %s (%v, %v)", within, resp.GetStatus(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *cluster) opCtx(timeout time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.opTok), cancel
}

var mintSeq struct {
	sync.Mutex
	n int
}

// mint creates a token and records it; an error leaves no record (a mint
// whose reply was lost may exist, unknown to the test: harmless).
func (c *cluster) mint() error {
	mintSeq.Lock()
	mintSeq.n++
	name := fmt.Sprintf("fault-%d", mintSeq.n)
	mintSeq.Unlock()
	ctx, cancel := c.opCtx(2 * time.Second)
	defer cancel()
	resp, err := c.mgmt.CreateToken(ctx, &sigilv1.CreateTokenRequest{
		OrgId: "org-a", Name: name, CreatedBy: "alice",
		Grants: []*sigilv1.Grant{{Permissions: []string{"domain:view"}, Resources: []string{"domains/example.com"}}},
		Expiry: &sigilv1.CreateTokenRequest_Ttl{Ttl: durationpb.New(10 * 24 * time.Hour)},
	})
	if err != nil {
		return err
	}
	c.hist.addToken(resp.GetInfo().GetTokenId(), resp.GetToken())
	return nil
}

// revoke revokes token i and records the acknowledgement, or records the
// revocation as unsure when no reply came.
func (c *cluster) revoke(i int, timeout time.Duration) error {
	return c.revokeVia(c.mgmt, i, timeout)
}

// revokeVia is revoke through client.
func (c *cluster) revokeVia(client sigilv1.TokenAuthorityServiceClient, i int, timeout time.Duration) error {
	c.hist.mu.Lock()
	id := c.hist.tokens[i].ID
	c.hist.mu.Unlock()
	ctx, cancel := c.opCtx(timeout)
	defer cancel()
	resp, err := client.RevokeToken(ctx, &sigilv1.RevokeTokenRequest{TokenId: id, Reason: "fault"}, grpc.WaitForReady(true))
	if err != nil {
		c.hist.addUnsure(i)
		return err
	}
	c.hist.addRevoke(revokeRec{Token: i, Ack: time.Now(), Rev: resp.GetRevision()})
	return nil
}

// check asks the authorizer about token i and records the call.
func (c *cluster) check(i int, minRev uint64, timeout time.Duration) checkRec {
	c.hist.mu.Lock()
	tok := c.hist.tokens[i].Tok
	c.hist.mu.Unlock()
	rec := checkRec{Token: i, MinRev: minRev, Start: time.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	resp, err := c.authz.CheckPermission(ctx, &sigilv1.CheckPermissionRequest{
		Token: tok, Permission: "domain:view", Resource: "domains/example.com", OrgId: "org-a", MinRevision: minRev,
	})
	rec.End = time.Now()
	rec.Code = status.Code(err)
	if err == nil {
		rec.Allowed, rec.Reason, rec.Revision = resp.GetAllowed(), resp.GetReason(), resp.GetRevision()
	}
	return rec
}

// load is the mixed mint/revoke/check traffic of a scenario: one minter,
// one revoker and two checkers (one without min_revision, one with a mix),
// each paced and stopping when stop is called.
type load struct {
	c    *cluster
	done chan struct{}
	wg   sync.WaitGroup
}

// loadPace is the pause between a goroutine's calls.
type loadPace struct {
	mint, revoke, check time.Duration
}

var defaultPace = loadPace{mint: 40 * time.Millisecond, revoke: 70 * time.Millisecond, check: 3 * time.Millisecond}

func (c *cluster) startLoad(seed uint64, pace loadPace) *load {
	l := &load{c: c, done: make(chan struct{})}
	l.wg.Go(func() {
		for l.sleep(pace.mint) {
			_ = c.mint()
		}
	})
	l.wg.Go(func() {
		rng := rand.New(rand.NewPCG(seed, 1))
		for l.sleep(pace.revoke) {
			if i, ok := c.pickLive(rng); ok {
				_ = c.revoke(i, 2*time.Second)
			}
		}
	})
	for k := range 2 {
		l.wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(2+k)))
			for l.sleep(pace.check) {
				i, minRev, ok := c.pickCheck(rng)
				if !ok {
					continue
				}
				if k == 0 {
					// One checker never waits: a min_revision check can
					// block for its whole timeout while the link is down,
					// and the staleness bound is about checks without it.
					minRev = 0
				}
				c.hist.addCheck(c.check(i, minRev, time.Second))
			}
		})
	}
	return l
}

// sleep waits d and reports whether the load goes on.
func (l *load) sleep(d time.Duration) bool {
	select {
	case <-l.done:
		return false
	case <-time.After(d):
		return true
	}
}

func (l *load) stop() {
	close(l.done)
	l.wg.Wait()
}

// pickLive picks a token neither revoked nor unsure, keeping a few alive.
func (c *cluster) pickLive(rng *rand.Rand) (int, bool) {
	revoked := c.hist.revokedSet()
	c.hist.mu.Lock()
	defer c.hist.mu.Unlock()
	var live []int
	for i := range c.hist.tokens {
		if _, ok := revoked[i]; !ok && !c.hist.unsure[i] && !c.hist.voided[i] && !c.hist.reserved[i] {
			live = append(live, i)
		}
	}
	if len(live) <= 3 {
		return 0, false
	}
	return live[rng.IntN(len(live))], true
}

// pickCheck picks a token, half the time a revoked one, and a min_revision:
// none, the highest acknowledged revocation's, or the token's own
// revocation's.
func (c *cluster) pickCheck(rng *rand.Rand) (int, uint64, bool) {
	c.hist.mu.Lock()
	n := len(c.hist.tokens)
	maxAcked := c.hist.maxAcked
	var revs []revokeRec
	if rng.IntN(2) == 0 && len(c.hist.revokes) > 0 {
		// Recent revocations are the interesting ones.
		from := max(0, len(c.hist.revokes)-20)
		revs = c.hist.revokes[from:]
	}
	var r revokeRec
	if len(revs) > 0 {
		r = revs[rng.IntN(len(revs))]
	}
	c.hist.mu.Unlock()
	if n == 0 {
		return 0, 0, false
	}
	i := rng.IntN(n)
	if len(revs) > 0 {
		i = r.Token
	}
	switch rng.IntN(4) {
	case 0:
		return i, maxAcked, true
	case 1:
		if len(revs) > 0 {
			return i, r.Rev, true
		}
	}
	return i, 0, true
}

// settle resolves the unsure revocations by revoking again (RevokeToken is
// idempotent and returns the revocation's revision), within a bound.
func (c *cluster) settle(within time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for {
		c.hist.mu.Lock()
		var unsure []int
		for i := range c.hist.unsure {
			if c.hist.voided[i] {
				// The restored store has no record of it: the key cut
				// voids it instead.
				delete(c.hist.unsure, i)
				continue
			}
			unsure = append(unsure, i)
		}
		c.hist.mu.Unlock()
		if len(unsure) == 0 {
			return
		}
		for _, i := range unsure {
			_ = c.revoke(i, 2*time.Second)
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%d revocations still unacknowledged %s after the faults", len(unsure), within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// converge is invariant (c): after the faults, within the bound, the
// authorizer denies every revoked token REVOKED (without min_revision),
// every token a restore's key cut voided KEY_REVOKED, and allows every
// live one. It returns what still disagreed at the bound.
func (c *cluster) converge(within time.Duration) []string {
	c.t.Helper()
	c.settle(within)
	revoked := c.hist.revokedSet()
	c.hist.mu.Lock()
	n := len(c.hist.tokens)
	voided := maps.Clone(c.hist.voided)
	c.hist.mu.Unlock()
	pending := make([]int, n)
	for i := range pending {
		pending[i] = i
	}
	deadline := time.Now().Add(within)
	for {
		var still []int
		var why []string
		for _, i := range pending {
			got := c.check(i, 0, 2*time.Second)
			_, isRevoked := revoked[i]
			var ok bool
			switch {
			case got.Code != codes.OK:
			case voided[i]:
				ok = !got.Allowed && got.Reason == sigilv1.DenyReason_DENY_REASON_KEY_REVOKED
			case isRevoked:
				ok = !got.Allowed && got.Reason == sigilv1.DenyReason_DENY_REASON_REVOKED
			default:
				ok = got.Allowed
			}
			if !ok {
				still = append(still, i)
				if len(why) < maxViolations {
					why = append(why, fmt.Sprintf("(c) token %d (revoked %v): %v allowed %v %v at revision %d", i, isRevoked, got.Code, got.Allowed, got.Reason, got.Revision))
				}
			}
		}
		if len(still) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return append(why, fmt.Sprintf("(c) %d of %d tokens still wrong %s after the faults stopped", len(still), n, within))
		}
		pending = still
		time.Sleep(100 * time.Millisecond)
	}
}

// sigstop stops p for d and records, when the authority is stopped, the
// window.
func (c *cluster) sigstop(p *testproc.Proc, d time.Duration, isAuthority bool) {
	c.t.Helper()
	from := time.Now()
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		c.t.Fatal(err)
	}
	time.Sleep(d)
	to := time.Now()
	if err := p.Signal(syscall.SIGCONT); err != nil {
		c.t.Fatal(err)
	}
	if isAuthority {
		c.hist.addWindow(window{From: from, To: to, What: fmt.Sprintf("authority stopped %s", d)})
	}
}

// cutKeys is step 4 of the restore procedure (docs/operations.md): every
// signing key is cut at the backup time T, so that tokens it signed in or
// after T's second are denied KEY_REVOKED. It returns the keys cut and
// the last cut's revision.
func (c *cluster) cutKeys(T time.Time) (map[string]bool, uint64) {
	c.t.Helper()
	ctx, cancel := c.opCtx(5 * time.Second)
	defer cancel()
	// The authority has just restarted: wait for the connection rather
	// than fail fast while it is in backoff.
	resp, err := c.mgmt.ListSigningKeys(ctx, &sigilv1.ListSigningKeysRequest{}, grpc.WaitForReady(true))
	if err != nil {
		c.t.Fatalf("list signing keys: %v", err)
	}
	cut := map[string]bool{}
	var rev uint64
	for _, k := range resp.GetKeys() {
		r, err := c.mgmt.RevokeSigningKey(ctx, &sigilv1.RevokeSigningKeyRequest{KeyId: k.GetKeyId(), IssuedAfter: timestamppb.New(T)}, grpc.WaitForReady(true))
		if err != nil {
			c.t.Fatalf("cut key: %v", err)
		}
		rev = max(rev, r.GetRevision())
		cut[k.GetKeyId()] = true
	}
	return cut, rev
}

// waitRevision checks (token 0, recorded) with min_revision rev until the
// authorizer answers, and returns when that answer came: the authorizer
// answers from rev's history from then on (its state was confirmed in it,
// and only a snapshot of it can replace that state). within only guards
// against an authorizer that never gets there.
func (c *cluster) waitRevision(rev uint64, within time.Duration) time.Time {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for {
		r := c.check(0, rev, time.Second)
		c.hist.addCheck(r)
		if r.Code == codes.OK {
			return r.End
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("no answer with min_revision %d within %s after the restore", rev, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// voidedTokens asks the restored authority which recorded tokens the cut
// voids: those it has no record of (minted after the backup) and those a
// cut key signed in or after the cut's second.
func (c *cluster) voidedTokens(cutKeys map[string]bool, T time.Time) []int {
	c.t.Helper()
	c.hist.mu.Lock()
	toks := append([]tokenRec(nil), c.hist.tokens...)
	c.hist.mu.Unlock()
	second := T.Truncate(time.Second)
	var out []int
	for i, tk := range toks {
		ctx, cancel := c.opCtx(5 * time.Second)
		resp, err := c.mgmt.GetToken(ctx, &sigilv1.GetTokenRequest{TokenId: tk.ID}, grpc.WaitForReady(true))
		cancel()
		switch {
		case status.Code(err) == codes.NotFound:
			out = append(out, i)
		case err != nil:
			c.t.Fatalf("get token %d: %v", i, err)
		case cutKeys[resp.GetInfo().GetKeyId()] && !resp.GetInfo().GetCreateTime().AsTime().Before(second):
			out = append(out, i)
		}
	}
	return out
}

// authorityReady waits until the management connection reaches the
// (restarted) authority, so that the calls after it do not fail fast while
// the connection is in backoff.
func (c *cluster) authorityReady() {
	c.t.Helper()
	ctx, cancel := c.opCtx(5 * time.Second)
	defer cancel()
	if _, err := c.mgmt.ListSigningKeys(ctx, &sigilv1.ListSigningKeysRequest{}, grpc.WaitForReady(true)); err != nil {
		c.t.Fatalf("authority not reachable after the restart: %v", err)
	}
}

// reserve mints n tokens the load never revokes (a scenario revokes them
// itself) and returns them.
func (c *cluster) reserve(n int) []int {
	c.t.Helper()
	var out []int
	for range n {
		if err := c.mint(); err != nil {
			c.t.Fatal(err)
		}
		c.hist.mu.Lock()
		i := len(c.hist.tokens) - 1
		c.hist.reserved[i] = true
		c.hist.mu.Unlock()
		out = append(out, i)
	}
	return out
}
