package ha

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/sigil-auth/sigil/internal/testproc"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

var (
	benchFlag  = flag.Bool("ha.bench", false, "run the measurements of BENCHMARKS.md (minutes): TestBenchStores, TestBenchFailover")
	benchRuns  = flag.Int("ha.runs", 5, "rounds of each store's measurement, alternating bbolt and etcd")
	benchMints = flag.Int("ha.mints", 500, "mints per round and number of clients")
	benchProps = flag.Int("ha.revocations", 200, "revocations timed per round for propagation")
	failovers  = flag.Int("ha.failovers", 50, "replica kills timed by TestBenchFailover")
)

// needBench skips a measurement unless -ha.bench asks for it: they take
// minutes and their figures go to BENCHMARKS.md, not to an assertion.
func needBench(t *testing.T) {
	t.Helper()
	if !*benchFlag {
		t.Skip("a measurement for BENCHMARKS.md: run with -args -ha.bench")
	}
}

// pair is one authority and one authorizer following it.
type pair struct {
	name  string
	mgmt  sigilv1.TokenAuthorityServiceClient
	authz sigilv1.AuthorizerServiceClient
	ctx   context.Context // operator credentials
}

// startPair starts an authority with the store arguments and an authorizer
// following it.
func startPair(t *testing.T, name string, storeArgs ...string) *pair {
	t.Helper()
	data := t.TempDir()
	addr := testproc.FreeAddr(t)
	args := append([]string{"--listen", addr, "--metrics-listen", "", "--data-dir", data, "--key-activation-delay", "1500ms"}, storeArgs...)
	p := testproc.StartWith(t, testproc.Options{Name: name + "-authority"}, testproc.MustBuild(t, "services/authority"), args...)
	if err := p.WaitRecord(60*time.Second, "listening", nil); err != nil {
		t.Fatal(err)
	}
	if err := testproc.WaitServing(addr, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	zaddr := testproc.FreeAddr(t)
	z := testproc.StartWith(t, testproc.Options{Name: name + "-authorizer"}, testproc.MustBuild(t, "services/authorizer"),
		"--listen", zaddr, "--metrics-listen", "", "--authority", addr, "--authority-token-file", filepath.Join(data, "watch.token"))
	if err := z.WaitRecord(30*time.Second, "listening", nil); err != nil {
		t.Fatal(err)
	}
	if err := testproc.WaitServing(zaddr, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	op, err := os.ReadFile(filepath.Join(data, "operator.token"))
	if err != nil {
		t.Fatal(err)
	}
	return &pair{
		name:  name,
		mgmt:  sigilv1.NewTokenAuthorityServiceClient(dial(t, addr)),
		authz: sigilv1.NewAuthorizerServiceClient(dial(t, zaddr)),
		ctx:   metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+strings.TrimSpace(string(op))),
	}
}

// mintRate mints n tokens with that many concurrent clients and returns
// mints/s.
func (p *pair) mintRate(t *testing.T, n, clients int) float64 {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	start := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				_, err := call(p.ctx, 30*time.Second, func(ctx context.Context) (*sigilv1.CreateTokenResponse, error) {
					return p.mgmt.CreateToken(ctx, mintRequest(fmt.Sprintf("bench-%d", seq.Add(1))))
				})
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatalf("%s: mint: %v", p.name, firstErr)
	}
	return float64(n) / time.Since(start).Seconds()
}

// propagation times n revocations from RevokeToken's reply to the
// authorizer's first REVOKED answer (polled without min_revision).
func (p *pair) propagation(t *testing.T, n int) []time.Duration {
	t.Helper()
	var out []time.Duration
	for range n {
		m, err := call(p.ctx, 30*time.Second, func(ctx context.Context) (*sigilv1.CreateTokenResponse, error) {
			return p.mgmt.CreateToken(ctx, mintRequest(fmt.Sprintf("prop-%d", seq.Add(1))))
		})
		if err != nil {
			t.Fatal(err)
		}
		check := func() *sigilv1.CheckPermissionResponse {
			resp, err := call(context.Background(), 10*time.Second, func(ctx context.Context) (*sigilv1.CheckPermissionResponse, error) {
				return p.authz.CheckPermission(ctx, &sigilv1.CheckPermissionRequest{Token: m.GetToken(), Permission: "domain:view"})
			})
			if err != nil {
				t.Fatal(err)
			}
			return resp
		}
		for !check().GetAllowed() { // the authorizer knows the key; the token is cached
			time.Sleep(time.Millisecond)
		}
		if _, err := call(p.ctx, 30*time.Second, func(ctx context.Context) (*sigilv1.RevokeTokenResponse, error) {
			return p.mgmt.RevokeToken(ctx, &sigilv1.RevokeTokenRequest{TokenId: m.GetInfo().GetTokenId()})
		}); err != nil {
			t.Fatal(err)
		}
		acked := time.Now()
		for i := 0; check().GetAllowed(); i++ {
			if i > 100000 {
				t.Fatalf("%s: revocation not applied after %d checks", p.name, i)
			}
		}
		out = append(out, time.Since(acked))
	}
	return out
}

func pct(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// TestBenchStores measures, side by side in one run (rounds alternating),
// durable mints/s and revocation propagation on bbolt and on etcd (three
// real members on loopback). See BENCHMARKS.md.
func TestBenchStores(t *testing.T) {
	needBench(t)
	cluster := newSystem(t, 0).etcd
	pairs := []*pair{
		startPair(t, "bbolt"),
		startPair(t, "etcd", "--store", "etcd", "--etcd-endpoints", cluster.EndpointList()),
	}
	rates := map[string][]float64{} // by store and clients
	props := map[string][]time.Duration{}
	for r := range *benchRuns {
		for _, p := range pairs {
			for _, clients := range []int{1, 32} {
				rate := p.mintRate(t, *benchMints, clients)
				k := fmt.Sprintf("%s/%d", p.name, clients)
				rates[k] = append(rates[k], rate)
				t.Logf("round %d %s: %.0f mints/s with %d clients", r+1, p.name, rate, clients)
			}
			d := p.propagation(t, *benchProps)
			props[p.name] = append(props[p.name], d...)
			t.Logf("round %d %s: propagation p50 %s p99 %s", r+1, p.name, pct(d, 0.5), pct(d, 0.99))
		}
	}
	fmt.Printf("| store | mints/s, 1 client | mints/s, 32 clients | propagation p50 | p99 | revocations |\n| --- | ---: | ---: | ---: | ---: | ---: |\n")
	for _, p := range pairs {
		fmt.Printf("| %s | %.0f | %.0f | %s | %s | %d |\n", p.name, median(rates[p.name+"/1"]), median(rates[p.name+"/32"]),
			pct(props[p.name], 0.5).Round(10*time.Microsecond), pct(props[p.name], 0.99).Round(10*time.Microsecond), len(props[p.name]))
	}
	fmt.Printf("etcd/bbolt mints/s: %.2f (1 client), %.2f (32 clients)\n",
		median(rates["etcd/1"])/median(rates["bbolt/1"]), median(rates["etcd/32"])/median(rates["bbolt/32"]))
}

// TestBenchFailover measures failover time (needs authorizer failover,
// --authority with several addresses): an authorizer follows both
// replicas; each round caches a token on it, kills with SIGKILL the
// replica it streams from (the one whose sigil_watch_subscribers is 1),
// revokes the token through the other and times kill → the authorizer's
// first REVOKED answer (polled without min_revision), then restarts the
// killed replica. See BENCHMARKS.md.
func TestBenchFailover(t *testing.T) {
	needBench(t)
	s := newSystem(t, 2)
	az, err := s.addAuthorizer("authorizer", s.replicas[0].addr+","+s.replicas[1].addr, time.Minute)
	if err != nil {
		t.Fatalf("authorizer with --authority a,b (authorizer failover): %v", err)
	}
	var samples []time.Duration
	for i := range *failovers {
		victim, other := streamingReplica(t, s)
		m, err := call(s.opCtx, 30*time.Second, func(ctx context.Context) (*sigilv1.CreateTokenResponse, error) {
			return other.mgmt.CreateToken(ctx, mintRequest(fmt.Sprintf("failover-%d", seq.Add(1))))
		})
		if err != nil {
			t.Fatal(err)
		}
		check := func() (*sigilv1.CheckPermissionResponse, error) {
			return call(context.Background(), 10*time.Second, func(ctx context.Context) (*sigilv1.CheckPermissionResponse, error) {
				return az.authz.CheckPermission(ctx, &sigilv1.CheckPermissionRequest{Token: m.GetToken(), Permission: "domain:view"})
			})
		}
		for {
			resp, err := check()
			if err == nil && resp.GetAllowed() {
				break
			}
			time.Sleep(time.Millisecond)
		}
		killed := time.Now()
		victim.kill()
		if _, err := call(s.opCtx, 30*time.Second, func(ctx context.Context) (*sigilv1.RevokeTokenResponse, error) {
			return other.mgmt.RevokeToken(ctx, &sigilv1.RevokeTokenRequest{TokenId: m.GetInfo().GetTokenId()})
		}); err != nil {
			t.Fatal(err)
		}
		for {
			resp, err := check()
			if err != nil {
				t.Fatalf("failover %d: the authorizer answered %v", i, err)
			}
			if !resp.GetAllowed() {
				break
			}
			if time.Since(killed) > time.Minute {
				t.Fatalf("failover %d: revocation through %s not applied a minute after %s was killed", i, other.name, victim.name)
			}
		}
		samples = append(samples, time.Since(killed))
		if err := s.startReplica(victim); err != nil {
			t.Fatal(err)
		}
	}
	fmt.Printf("| failovers | p50 | p99 | max |\n| ---: | ---: | ---: | ---: |\n| %d | %s | %s | %s |\n", len(samples),
		pct(samples, 0.5).Round(time.Millisecond), pct(samples, 0.99).Round(time.Millisecond), pct(samples, 1).Round(time.Millisecond))
}

// streamingReplica waits (up to 30 s) until exactly one replica has the
// authorizer's revocation stream, and returns it and the other.
func streamingReplica(t *testing.T, s *system) (*replica, *replica) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var on []int
		for i, r := range s.replicas {
			if subscribers(t, r) > 0 {
				on = append(on, i)
			}
		}
		if len(on) == 1 {
			return s.replicas[on[0]], s.replicas[1-on[0]]
		}
		if time.Now().After(deadline) {
			t.Fatalf("replicas with a revocation stream: %v, want exactly one", on)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// subscribers reads the replica's sigil_watch_subscribers gauge.
func subscribers(t *testing.T, r *replica) int {
	t.Helper()
	r.mu.Lock()
	addr := r.metrics
	r.mu.Unlock()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "sigil_watch_subscribers "); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s: sigil_watch_subscribers %q", r.name, v)
			}
			return int(n)
		}
	}
	t.Fatalf("%s: no sigil_watch_subscribers in /metrics", r.name)
	return 0
}
