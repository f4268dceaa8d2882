package follower

import (
	"context"
	"flag"
	"fmt"
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sigil-auth/sigil/internal/faultproxy"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/pkg/token"
	"github.com/sigil-auth/sigil/services/authorizer/internal/follower/replicatest"
)

// failovers, when positive, makes TestFailoverTimes kill the stream's
// replica that many times and report the failover time's p50 and p99.
var failovers = flag.Int("failovers", 0, "TestFailoverTimes: number of replica kills to measure (0: the test does not run)")

// cluster is replicatest's cluster with the follower's view of it.
type cluster struct{ *replicatest.Cluster }

func startCluster(t testing.TB, n int) cluster { return cluster{replicatest.Start(t, n)} }

// replicas are the follower's replicas: one client per authority.
func (c cluster) replicas() []Replica {
	var rs []Replica
	for i, addr := range c.Addrs {
		rs = append(rs, Replica{Addr: addr, Client: c.Client(i)})
	}
	return rs
}

func (c cluster) mint(i int, name string) token.ID {
	_, id := c.Mint(i, name)
	return id
}

// follow runs a follower of every replica with the real clock; failover
// events go to the returned channel (buffered; a full one drops them).
func (c cluster) follow(t testing.TB, maxStaleness time.Duration) (*Follower, <-chan Failover) {
	t.Helper()
	events := make(chan Failover, 256)
	f := New(Options{
		Replicas:   c.replicas(),
		Credential: c.WatchToken,
		OnFailover: func(ev Failover) {
			select {
			case events <- ev:
			default:
			}
		},
		MaxStaleness: maxStaleness,
		Retention:    time.Minute,
		BackoffMax:   replicatest.ConnectParams.Backoff.MaxDelay,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = f.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return f, events
}

// waitReady waits until f is ready.
func waitReady(t testing.TB, f *Follower, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !f.Ready() {
		if time.Now().After(deadline) {
			t.Fatalf("follower not ready within %s (synced %v, revision %d)", within, f.Synced(), f.Revision())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// readySampler reads f.Ready() continuously until stopped, and counts the
// samples and the false ones.
type readySampler struct {
	stop            chan struct{}
	done            chan struct{}
	samples, falses atomic.Int64
}

func sampleReady(f *Follower) *readySampler {
	s := &readySampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			select {
			case <-s.stop:
				return
			default:
			}
			s.samples.Add(1)
			if !f.Ready() {
				s.falses.Add(1)
			}
			time.Sleep(200 * time.Microsecond)
		}
	}()
	return s
}

func (s *readySampler) end() (samples, falses int64) {
	close(s.stop)
	<-s.done
	return s.samples.Load(), s.falses.Load()
}

// waitFailover waits for the next failover event.
func waitFailover(t testing.TB, events <-chan Failover, within time.Duration) Failover {
	t.Helper()
	select {
	case ev := <-events:
		return ev
	case <-time.After(within):
		t.Fatalf("no failover within %s", within)
		return Failover{}
	}
}

// TestFailoverOnReplicaKill: two real authority replicas on one etcd; the
// follower streams from A; A is killed (-9). The follower resumes on B
// from the revision it applied, without a snapshot, and is ready at every
// sample taken meanwhile; a revocation acknowledged by B afterwards is
// applied (a min_revision wait for it returns) and the token is revoked.
func TestFailoverOnReplicaKill(t *testing.T) {
	c := startCluster(t, 2)
	keep := c.mint(0, "keep")
	later := c.mint(0, "later")
	f, events := c.follow(t, 5*time.Second)
	waitReady(t, f, 20*time.Second)
	if got := f.cur.Load(); got != 0 {
		t.Fatalf("stream on replica %d, want 0 (A)", got)
	}
	snapshots := f.Stats().Snapshots

	s := sampleReady(f)
	applied := f.Revision()
	c.Procs[0].Kill()
	ev := waitFailover(t, events, 10*time.Second)
	// A moment on B, probes included, before the sampling ends.
	time.Sleep(1500 * time.Millisecond)
	samples, falses := s.end()
	if falses != 0 || samples < 100 {
		t.Fatalf("Ready() false at %d of %d samples during the failover", falses, samples)
	}
	if ev.From != c.Addrs[0] || ev.To != c.Addrs[1] {
		t.Fatalf("failover %+v, want from %s to %s", ev, c.Addrs[0], c.Addrs[1])
	}
	if ev.Revision == 0 || ev.Revision > applied || ev.Outage < 0 || ev.Resumed.Before(ev.Broken) {
		t.Fatalf("failover %+v: want a resume from the applied revision (%d)", ev, applied)
	}
	if got := f.Stats(); got.Snapshots != snapshots || got.Failovers != 1 {
		t.Fatalf("stats %+v: want no new snapshot (was %d) and one failover", got, snapshots)
	}

	rev := c.Revoke(1, later)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.WaitFor(ctx, rev); err != nil {
		t.Fatalf("min_revision %d from B: %v", rev, err)
	}
	if !isRevoked(f, later) || isRevoked(f, keep) {
		t.Fatalf("after the revocation through B: later revoked %v, keep revoked %v", isRevoked(f, later), isRevoked(f, keep))
	}
	if !f.Ready() {
		t.Fatal("not ready on B")
	}
}

// TestMinRevisionAcrossReplicas: the stream is on A; a revocation is
// acknowledged by B. A min_revision wait for B's revision returns only
// once the revocation is applied (through A's stream, fed by the shared
// store), and no failover was needed for it.
func TestMinRevisionAcrossReplicas(t *testing.T) {
	c := startCluster(t, 2)
	var ids []token.ID
	for i := range 5 {
		ids = append(ids, c.mint(i%2, fmt.Sprint("t", i)))
	}
	f, _ := c.follow(t, 5*time.Second)
	waitReady(t, f, 20*time.Second)
	for _, id := range ids {
		rev := c.Revoke(1, id)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := f.WaitFor(ctx, rev)
		cancel()
		if err != nil {
			t.Fatalf("min_revision %d acknowledged by B: %v", rev, err)
		}
		if !isRevoked(f, id) {
			t.Fatalf("min_revision %d returned before the revocation through B was applied (applied %d)", rev, f.Revision())
		}
	}
	if st := f.Stats(); st.Failovers != 0 || f.cur.Load() != 0 {
		t.Fatalf("stream left A (failovers %d, replica %d): the test needs it on A", st.Failovers, f.cur.Load())
	}
}

// TestAllReplicasDown: with every replica down the follower becomes stale
// after MaxStaleness (not ready: checks fail closed) and is ready again
// when one replica returns, without a snapshot, and follows it.
func TestAllReplicasDown(t *testing.T) {
	c := startCluster(t, 2)
	id := c.mint(0, "t")
	f, _ := c.follow(t, 2*time.Second)
	waitReady(t, f, 20*time.Second)
	snapshots := f.Stats().Snapshots
	c.Procs[0].Kill()
	c.Procs[1].Kill()
	deadline := time.Now().Add(15 * time.Second)
	for f.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("still ready 15s after every replica went down (max staleness 2s)")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if d, ok := f.Staleness(); !ok || d <= 2*time.Second {
		t.Fatalf("not ready with staleness %s (%v): want beyond the 2s bound", d, ok)
	}
	// Stays closed while every replica is down.
	time.Sleep(time.Second)
	if f.Ready() {
		t.Fatal("ready again with every replica down")
	}

	c.StartReplica(1)
	waitReady(t, f, 20*time.Second)
	if got := f.Stats().Snapshots; got != snapshots {
		t.Fatalf("%d snapshots after the return, want %d (a resume)", got, snapshots)
	}
	rev := c.Revoke(1, id)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.WaitFor(ctx, rev); err != nil || !isRevoked(f, id) {
		t.Fatalf("revocation through the returned replica: %v, revoked %v", err, isRevoked(f, id))
	}
}

// TestFailoverTimes measures failover time: the stream's replica is
// killed (-9), and the time from the kill to the follower's first message
// on the other replica is taken; the killed replica is started again
// before the next round. Opt-in: go test -run TestFailoverTimes
// -failovers=50 ./services/authorizer/internal/follower/ (BENCHMARKS.md).
func TestFailoverTimes(t *testing.T) {
	if *failovers <= 0 {
		t.Skip("measurement: run with -failovers N")
	}
	c := startCluster(t, 2)
	c.mint(0, "t")
	f, events := c.follow(t, 5*time.Second)
	waitReady(t, f, 20*time.Second)
	for i := range c.Addrs {
		c.WaitConnected(i)
	}
	s := sampleReady(f)
	var kill, outage []time.Duration
	for i := range *failovers {
		r := int(f.cur.Load())
		killed := time.Now()
		c.Procs[r].Kill()
		ev := waitFailover(t, events, 10*time.Second)
		if ev.From != c.Addrs[r] {
			t.Fatalf("round %d: failover %+v, want from %s", i, ev, c.Addrs[r])
		}
		kill = append(kill, ev.Resumed.Sub(killed))
		outage = append(outage, ev.Outage)
		c.StartReplica(r)
		// A warm standby, as the authorizer keeps one (app: every
		// replica's connection is kept connected).
		c.WaitConnected(r)
	}
	samples, falses := s.end()
	if falses != 0 {
		t.Fatalf("Ready() false at %d of %d samples over %d failovers", falses, samples, *failovers)
	}
	t.Logf("%d failovers: kill → resumed p50 %s p99 %s max %s; stream broken → resumed p50 %s p99 %s; Ready() true at all %d samples",
		len(kill), pct(kill, 50), pct(kill, 99), pct(kill, 100), pct(outage, 50), pct(outage, 99), samples)
}

// pct is the p-th percentile (nearest rank) of ds.
func pct(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (p*len(s)+99)/100 - 1
	return s[max(0, min(i, len(s)-1))].Round(10 * time.Microsecond)
}

// TestFailoverOnSilentReplica: the stream's replica A stops answering
// without closing anything (a proxy in front of it drops every byte: a
// partition, a hung process). The follower's probe finds A silent and B
// answering and moves the stream to B at once, well before the stream's
// idle timeout, so that with MaxStaleness below that timeout it is ready
// at every sample; a revocation through B is then applied.
func TestFailoverOnSilentReplica(t *testing.T) {
	c := startCluster(t, 2)
	_, id := c.Mint(0, "t")
	var churn []token.ID
	for i := range 40 {
		churn = append(churn, c.mint(1, fmt.Sprint("churn", i)))
	}
	proxy, err := faultproxy.New(c.Addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	conn, err := grpc.NewClient(proxy.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithConnectParams(replicatest.ConnectParams))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c.WaitConnected(1)
	events := make(chan Failover, 16)
	f := New(Options{
		Replicas:     []Replica{{Addr: "A", Client: sigilv1.NewTokenAuthorityServiceClient(conn)}, {Addr: "B", Client: c.Client(1)}},
		Credential:   c.WatchToken,
		OnFailover:   func(ev Failover) { events <- ev },
		MaxStaleness: 3 * time.Second, // below the 5s idle timeout
		Retention:    time.Minute,
		BackoffMax:   replicatest.ConnectParams.Backoff.MaxDelay,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = f.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	waitReady(t, f, 20*time.Second)

	// Revocations through B all along: only a stream that moves on can
	// apply them, so B's probe answers confirm nothing while the stream
	// is stuck on A.
	stopChurn := make(chan struct{})
	churned := make(chan error, 1)
	go func() {
		defer close(churned)
		for _, id := range churn {
			select {
			case <-stopChurn:
				return
			case <-time.After(100 * time.Millisecond):
			}
			ctx, cancel := context.WithTimeout(c.Operator(), 5*time.Second)
			_, err := c.Client(1).RevokeToken(ctx, &sigilv1.RevokeTokenRequest{TokenId: id.String(), Reason: "churn"})
			cancel()
			if err != nil {
				churned <- err
				return
			}
		}
	}()
	time.Sleep(500 * time.Millisecond)
	s := sampleReady(f)
	proxy.Blackhole()
	ev := waitFailover(t, events, 10*time.Second)
	time.Sleep(1500 * time.Millisecond)
	samples, falses := s.end()
	close(stopChurn)
	if err := <-churned; err != nil {
		t.Fatalf("revocation through B: %v", err)
	}
	if ev.From != "A" || ev.To != "B" {
		t.Fatalf("failover %+v, want A to B", ev)
	}
	if falses != 0 || samples < 100 {
		t.Fatalf("Ready() false at %d of %d samples while A was silent", falses, samples)
	}
	rev := c.Revoke(1, id)
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	if err := f.WaitFor(wctx, rev); err != nil || !isRevoked(f, id) {
		t.Fatalf("revocation through B: %v, revoked %v", err, isRevoked(f, id))
	}
}

// TestWrongServerReplicaSkipped: the first replica listed is a gRPC server
// that is not an authority (UNIMPLEMENTED); the follower says so once,
// follows the second, and is ready.
func TestWrongServerReplicaSkipped(t *testing.T) {
	c := startCluster(t, 1)
	_, id := c.Mint(0, "t")
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	other := grpc.NewServer()
	healthpb.RegisterHealthServer(other, health.NewServer())
	go func() { _ = other.Serve(lis) }()
	t.Cleanup(other.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	f := New(Options{
		Replicas:     []Replica{{Addr: "not-an-authority", Client: sigilv1.NewTokenAuthorityServiceClient(conn)}, {Addr: "authority", Client: c.Client(0)}},
		Credential:   c.WatchToken,
		MaxStaleness: 5 * time.Second,
		Retention:    time.Minute,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = f.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	waitReady(t, f, 20*time.Second)
	if st := f.Stats(); st.WrongServer == 0 || f.cur.Load() != 1 {
		t.Fatalf("stats %+v, replica %d: want a wrong-server attempt and the stream on the authority", st, f.cur.Load())
	}
	rev := c.Revoke(0, id)
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	if err := f.WaitFor(wctx, rev); err != nil || !isRevoked(f, id) {
		t.Fatalf("revocation: %v, revoked %v", err, isRevoked(f, id))
	}
}
