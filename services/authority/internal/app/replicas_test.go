package app

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sigil-auth/sigil/internal/etcdtest"
	"github.com/sigil-auth/sigil/internal/testproc"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/services/authority/internal/config"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// cluster is authority replicas run in this process (RunWithOptions, real
// gRPC and metrics servers on loopback) on one prefix of a real embedded
// etcd, sharing the credentials and the KEK, as replicas of one deployment
// do. Each replica has its own data directory.
type cluster struct {
	t         *testing.T
	etcd      *etcdtest.Server
	prefix    string
	creds     string // directory of the shared credential files
	op, watch string
}

// testKEK is the deployment's key-encryption key, given to every replica.
const testKEK = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="

func newCluster(t *testing.T) *cluster {
	t.Helper()
	srv, err := etcdtest.Start(etcdtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return &cluster{t: t, etcd: srv, prefix: "/replicas/", creds: t.TempDir()}
}

// replica is one running authority.
type replica struct {
	name    string
	addr    string
	metrics string
	conn    *grpc.ClientConn
	cli     sigilv1.TokenAuthorityServiceClient
	logs    *testproc.Buffer
	cancel  context.CancelFunc
	done    chan error
	stopped bool
}

// start starts a replica and waits until it serves.
func (c *cluster) start(name string) *replica {
	t := c.t
	t.Helper()
	cfg, err := config.Parse([]string{
		"--data-dir", filepath.Join(t.TempDir(), name), "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
		"--store", "etcd", "--etcd-endpoints", c.etcd.Endpoint, "--etcd-prefix", c.prefix,
		"--operator-token-file", filepath.Join(c.creds, "operator.token"),
		"--watch-token-file", filepath.Join(c.creds, "watch.token"),
		"--key-activation-delay", "1500ms", "--shutdown-timeout", "5s", "--etcd-leader-ttl", "1s",
	}, func(string) (string, bool) { return "", false }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{name: name, logs: &testproc.Buffer{}, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	type addrs struct{ g, m net.Addr }
	ready := make(chan addrs, 1)
	env := func(k string) (string, bool) {
		if k == config.EnvPrefix+"_KEK" {
			return testKEK, true
		}
		return "", false
	}
	go func() {
		r.done <- RunWithOptions(ctx, cfg, Options{Stderr: r.logs, LookupEnv: env,
			Ready: func(g, m net.Addr) { ready <- addrs{g, m} }})
	}()
	select {
	case a := <-ready:
		r.addr, r.metrics = a.g.String(), a.m.String()
	case err := <-r.done:
		cancel()
		t.Fatalf("replica %s: %v\n%s", name, err, r.logs.String())
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatalf("replica %s not ready", name)
	}
	if r.conn, err = grpc.NewClient(r.addr, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		t.Fatal(err)
	}
	r.cli = sigilv1.NewTokenAuthorityServiceClient(r.conn)
	t.Cleanup(func() { r.stop(t) })
	if c.op == "" {
		c.op = c.readCred(t, "operator.token")
		c.watch = c.readCred(t, "watch.token")
	}
	return r
}

func (c *cluster) readCred(t *testing.T, name string) string {
	b, err := os.ReadFile(filepath.Join(c.creds, name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// stop stops the replica gracefully (as SIGTERM does) and checks it stopped
// without error.
func (r *replica) stop(t *testing.T) {
	if r.stopped {
		return
	}
	r.stopped = true
	r.conn.Close()
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("replica %s stop: %v", r.name, err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("replica %s did not stop", r.name)
	}
}

// as returns a context carrying credential cred, bounded to 10 s.
func as(t *testing.T, cred string) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+cred)
}

// mint creates a token through r.
func (c *cluster) mint(r *replica, name string) *sigilv1.CreateTokenResponse {
	c.t.Helper()
	resp, err := r.cli.CreateToken(as(c.t, c.op), &sigilv1.CreateTokenRequest{
		OrgId: "org", Name: name, CreatedBy: "alice",
		Grants: []*sigilv1.Grant{{Permissions: []string{"domain:view"}}},
		Expiry: &sigilv1.CreateTokenRequest_Ttl{Ttl: durationpb.New(10 * 24 * time.Hour)},
	})
	if err != nil {
		c.t.Fatalf("CreateToken(%s) on %s: %v", name, r.name, err)
	}
	return resp
}

// revoke revokes a token through r and returns the revocation's revision.
func (c *cluster) revoke(r *replica, id string) uint64 {
	c.t.Helper()
	resp, err := r.cli.RevokeToken(as(c.t, c.op), &sigilv1.RevokeTokenRequest{TokenId: id, Reason: "test"})
	if err != nil {
		c.t.Fatalf("RevokeToken on %s: %v", r.name, err)
	}
	return resp.GetRevision()
}

// follower is a WatchRevocations stream read by the test.
type follower struct {
	t      *testing.T
	cancel context.CancelFunc
	stream grpc.ServerStreamingClient[sigilv1.WatchRevocationsResponse]
	// vouched is the revision the stream says the follower stands at
	// (snapshot end, checkpoint, event): each event must chain to it.
	vouched uint64
	// started is set after the stream's first message, the catalog.
	started bool
}

func (c *cluster) follow(r *replica, req *sigilv1.WatchRevocationsRequest) *follower {
	c.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.watch)
	s, err := r.cli.WatchRevocations(ctx, req)
	if err != nil {
		cancel()
		c.t.Fatalf("WatchRevocations on %s: %v", r.name, err)
	}
	f := &follower{t: c.t, cancel: cancel, stream: s}
	c.t.Cleanup(cancel)
	return f
}

// next returns the next message after the stream's leading catalog (checked
// to be there), failing the test after 10 s.
func (f *follower) next() *sigilv1.WatchRevocationsResponse {
	f.t.Helper()
	m := f.recv()
	if !f.started {
		f.started = true
		if m.GetCatalog() == nil {
			f.t.Fatalf("first stream message %v, want the permission catalog", m)
		}
		m = f.recv()
	}
	return m
}

// recv returns the next message, failing the test after 10 s.
func (f *follower) recv() *sigilv1.WatchRevocationsResponse {
	f.t.Helper()
	type res struct {
		m   *sigilv1.WatchRevocationsResponse
		err error
	}
	ch := make(chan res, 1)
	go func() {
		m, err := f.stream.Recv()
		ch <- res{m, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			f.t.Fatalf("stream: %v", r.err)
		}
		return r.m
	case <-time.After(10 * time.Second):
		f.cancel()
		<-ch
		f.t.Fatal("no stream message within 10s")
		return nil
	}
}

// point is where a follower stands: what it resumes from.
type point struct {
	epoch  string
	rev    uint64
	digest []byte
}

// snapshot reads a snapshot to its end and returns its point.
func (f *follower) snapshot() point {
	f.t.Helper()
	for {
		m := f.next()
		if e := m.GetSnapshotEnd(); e != nil {
			f.vouched = e.GetRevision()
			return point{e.GetEpoch(), e.GetRevision(), e.GetDigest()}
		}
		if m.GetSnapshotChunk() == nil {
			f.t.Fatalf("snapshot interrupted by %v", m)
		}
	}
}

// untilCheckpoint reads until a checkpoint at or above rev, returning the
// token revocations read on the way, each checked to chain to what the
// stream vouched for before it (no gap, no duplicate, in order).
func (f *follower) untilCheckpoint(rev uint64) ([]*sigilv1.WatchRevocationsResponse, *sigilv1.Checkpoint) {
	f.t.Helper()
	var evs []*sigilv1.WatchRevocationsResponse
	for {
		m := f.next()
		if cp := m.GetCheckpoint(); cp != nil {
			if cp.GetRevision() < f.vouched {
				f.t.Fatalf("checkpoint %d after %d", cp.GetRevision(), f.vouched)
			}
			f.vouched = cp.GetRevision()
			if cp.GetRevision() >= rev {
				return evs, cp
			}
		}
		if r := m.GetTokenRevoked(); r != nil {
			if m.GetPreviousRevision() != f.vouched || r.GetRevision() <= f.vouched {
				f.t.Fatalf("revocation at %d chained to %d, the stream stood at %d", r.GetRevision(), m.GetPreviousRevision(), f.vouched)
			}
			f.vouched = r.GetRevision()
			evs = append(evs, m)
		}
	}
}

// TestReplicasServeEveryRPC: two replicas on one etcd prefix serve every
// RPC over one store: a token minted on either is seen, listed and revoked
// on the other; a follower of replica A receives the revocations made
// through B, in one global revision order without gap or duplicate
// (concurrent revocations through both replicas); and a follower that
// applied revision R from A resumes on B from R without a snapshot, B
// confirming A's (epoch, revision, digest).
func TestReplicasServeEveryRPC(t *testing.T) {
	c := newCluster(t)
	a := c.start("a")
	b := c.start("b")

	fa := c.follow(a, &sigilv1.WatchRevocationsRequest{})
	start := fa.snapshot()

	t1 := c.mint(a, "t1")
	t2 := c.mint(b, "t2")
	t3 := c.mint(a, "t3")
	rev1 := c.revoke(b, t1.GetInfo().GetTokenId())

	evs, cp := fa.untilCheckpoint(rev1)
	if len(evs) != 1 || evs[0].GetTokenRevoked().GetTokenId() != t1.GetInfo().GetTokenId() || evs[0].GetTokenRevoked().GetRevision() != rev1 {
		t.Fatalf("follower of a got %v for the revocation through b at %d", evs, rev1)
	}

	// Reads on either replica see the same store.
	for _, r := range []*replica{a, b} {
		for _, x := range []struct {
			tok   *sigilv1.CreateTokenResponse
			state sigilv1.TokenState
		}{{t1, sigilv1.TokenState_TOKEN_STATE_REVOKED}, {t2, sigilv1.TokenState_TOKEN_STATE_ACTIVE}, {t3, sigilv1.TokenState_TOKEN_STATE_ACTIVE}} {
			got, err := r.cli.GetToken(as(t, c.op), &sigilv1.GetTokenRequest{TokenId: x.tok.GetInfo().GetTokenId()})
			if err != nil || got.GetInfo().GetState() != x.state {
				t.Fatalf("GetToken(%s) on %s = %v, %v; want %v", x.tok.GetInfo().GetName(), r.name, got.GetInfo().GetState(), err, x.state)
			}
		}
	}
	la, err := a.cli.ListTokens(as(t, c.op), &sigilv1.ListTokensRequest{OrgId: "org"})
	if err != nil {
		t.Fatal(err)
	}
	lb, err := b.cli.ListTokens(as(t, c.op), &sigilv1.ListTokensRequest{OrgId: "org"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := listed(lb), listed(la); len(got) != 3 || !slices.Equal(got, want) {
		t.Fatalf("ListTokens on b = %v, on a = %v", got, want)
	}

	// One global order: concurrent revocations through both replicas take
	// distinct revisions, and a's follower receives each once, in order,
	// each chained to the one before.
	var ids []string
	for i := range 12 {
		r := a
		if i%2 == 1 {
			r = b
		}
		ids = append(ids, c.mint(r, fmt.Sprint("c", i)).GetInfo().GetTokenId())
	}
	revs := make([]uint64, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := a
			if i%2 == 1 {
				r = b
			}
			resp, err := r.cli.RevokeToken(as(t, c.op), &sigilv1.RevokeTokenRequest{TokenId: id, Reason: "test"})
			if err != nil {
				t.Errorf("RevokeToken on %s: %v", r.name, err)
				return
			}
			revs[i] = resp.GetRevision()
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	sorted := slices.Sorted(slices.Values(revs))
	if len(slices.Compact(slices.Clone(sorted))) != len(revs) {
		t.Fatalf("concurrent revocations through two replicas share revisions: %v", revs)
	}
	evs, cp = fa.untilCheckpoint(sorted[len(sorted)-1])
	var got []uint64
	for _, m := range evs {
		got = append(got, m.GetTokenRevoked().GetRevision())
	}
	if !slices.Equal(got, sorted) {
		t.Fatalf("a's follower received revisions %v, the revocations took %v", got, sorted)
	}
	if got[0] <= rev1 {
		t.Fatalf("revisions %v not after %d", got, rev1)
	}
	fa.cancel()

	// Resume across replicas: from a's checkpoint, on b, no snapshot.
	at := point{start.epoch, cp.GetRevision(), cp.GetDigest()}
	conf, err := b.cli.ConfirmHistory(as(t, c.watch), &sigilv1.ConfirmHistoryRequest{Epoch: at.epoch, Revision: at.rev, Digest: at.digest})
	if err != nil || !conf.GetInHistory() || conf.GetRevision() < at.rev {
		t.Fatalf("ConfirmHistory on b of a's checkpoint %d = %v, %v", at.rev, conf, err)
	}
	bad := slices.Clone(at.digest)
	bad[0] ^= 1
	if conf, err := b.cli.ConfirmHistory(as(t, c.watch), &sigilv1.ConfirmHistoryRequest{Epoch: at.epoch, Revision: at.rev, Digest: bad}); err != nil || conf.GetInHistory() {
		t.Fatalf("ConfirmHistory on b of a wrong digest = %v, %v", conf, err)
	}
	rev2 := c.revoke(a, t2.GetInfo().GetTokenId())
	fb := c.follow(b, &sigilv1.WatchRevocationsRequest{AfterRevision: at.rev, Epoch: at.epoch, AfterDigest: at.digest})
	first := fb.next()
	if first.GetSnapshotChunk() != nil || first.GetSnapshotEnd() != nil {
		t.Fatalf("resume on b from a's revision %d began with a snapshot", at.rev)
	}
	r := first.GetTokenRevoked()
	if r == nil || r.GetTokenId() != t2.GetInfo().GetTokenId() || r.GetRevision() != rev2 || first.GetPreviousRevision() != at.rev {
		t.Fatalf("resume on b from %d: first message %v, want the revocation at %d chained to %d", at.rev, first, rev2, at.rev)
	}
	// A revocation acknowledged through a is at or below what b confirms
	// right after (b reads the committed revision, not its watch's).
	rev3 := c.revoke(a, t3.GetInfo().GetTokenId())
	conf, err = b.cli.ConfirmHistory(as(t, c.watch), &sigilv1.ConfirmHistoryRequest{Epoch: at.epoch, Revision: at.rev, Digest: at.digest})
	if err != nil || conf.GetRevision() < rev3 {
		t.Fatalf("ConfirmHistory on b right after a revocation at %d through a = %v, %v", rev3, conf, err)
	}
}

// listed is "name:state" of each listed token, in order.
func listed(resp *sigilv1.ListTokensResponse) []string {
	var out []string
	for _, x := range resp.GetTokens() {
		out = append(out, x.GetName()+":"+x.GetState().String())
	}
	return out
}

// TestReplicasCompactedFollowerGetsSnapshot: a follower whose revision is
// below the compaction floor, raised by any process on the store, gets a
// fresh snapshot from either replica, which it then follows live.
func TestReplicasCompactedFollowerGetsSnapshot(t *testing.T) {
	c := newCluster(t)
	a := c.start("a")
	b := c.start("b")
	fa := c.follow(a, &sigilv1.WatchRevocationsRequest{})
	start := fa.snapshot()
	x := c.mint(b, "x")
	rev := c.revoke(b, x.GetInfo().GetTokenId())
	_, cp := fa.untilCheckpoint(rev)
	fa.cancel()
	at := point{start.epoch, cp.GetRevision(), cp.GetDigest()}

	// A key event after the follower's point, then a compaction that
	// finds every revocation expired: the floor passes the point.
	rot, err := b.cli.RotateSigningKey(as(t, c.op), &sigilv1.RotateSigningKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenEtcd(context.Background(), store.EtcdOptions{Endpoints: []string{c.etcd.Endpoint}, Prefix: c.prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	floor, err := st.Compact(context.Background(), time.Now().Add(365*24*time.Hour))
	if err != nil || floor < rot.GetRevision() {
		t.Fatalf("Compact = %d, %v; want a floor at or above the key's revision %d", floor, err, rot.GetRevision())
	}
	for _, r := range []*replica{a, b} {
		if conf, err := r.cli.ConfirmHistory(as(t, c.watch), &sigilv1.ConfirmHistoryRequest{Epoch: at.epoch, Revision: at.rev, Digest: at.digest}); err != nil || conf.GetInHistory() {
			t.Fatalf("ConfirmHistory on %s of a compacted point = %v, %v", r.name, conf, err)
		}
		f := c.follow(r, &sigilv1.WatchRevocationsRequest{AfterRevision: at.rev, Epoch: at.epoch, AfterDigest: at.digest})
		m := f.next()
		if m.GetSnapshotChunk() == nil {
			t.Fatalf("resume on %s from compacted revision %d: first message %v, want a snapshot", r.name, at.rev, m)
		}
		keys := m.GetSnapshotChunk().GetKeys()
		if !slices.ContainsFunc(keys, func(k *sigilv1.SigningKey) bool { return k.GetKeyId() == rot.GetKeyId() }) {
			t.Fatalf("snapshot on %s lacks the rotated key", r.name)
		}
		end := f.snapshot()
		if end.rev < floor {
			t.Fatalf("snapshot on %s at %d, below the floor %d", r.name, end.rev, floor)
		}
		f.cancel()
	}
}

// metric returns the value of an unlabelled metric (or of one label set,
// e.g. `{job="compaction"}`) on a replica's /metrics.
func metric(t *testing.T, r *replica, name string) float64 {
	t.Helper()
	return scrape(t, r.metrics, name)
}

// scrape returns the value of a metric on the /metrics of addr.
func scrape(t *testing.T, addr, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("%s has no metric %s", addr, name)
	return 0
}

// leaderOf waits until exactly one of rs leads (by its metric) and
// returns it.
func leaderOf(t *testing.T, rs ...*replica) *replica {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var leaders []*replica
		for _, r := range rs {
			if metric(t, r, "sigil_authority_leader") == 1 {
				leaders = append(leaders, r)
			}
		}
		if len(leaders) == 1 {
			return leaders[0]
		}
		if len(leaders) > 1 {
			t.Fatalf("%d replicas lead at once", len(leaders))
		}
	}
	t.Fatal("no replica leads after 30s")
	return nil
}

const compactionStarts = `sigil_authority_leader_job_starts_total{job="compaction"}`

// TestReplicasLeadership: of two replicas exactly one leads and runs the
// cluster-wide jobs (compaction, key activation), the other runs none; a
// key rotated through the follower is activated by the leader and used by
// both (each reloads the keys the other changes: a token minted on one
// with the new key authenticates on the other); when the leader stops, the
// other takes over, and the stopped one, started again, follows.
func TestReplicasLeadership(t *testing.T) {
	c := newCluster(t)
	a := c.start("a")
	b := c.start("b")
	lead := leaderOf(t, a, b)
	other := a
	if lead == a {
		other = b
	}
	if got := metric(t, lead, compactionStarts); got != 1 {
		t.Fatalf("leader %s started compaction %v times", lead.name, got)
	}
	if got := metric(t, other, compactionStarts); got != 0 {
		t.Fatalf("follower %s started compaction %v times", other.name, got)
	}
	if !strings.Contains(lead.logs.String(), `"msg":"leading: running the cluster-wide background work"`) {
		t.Fatalf("leader's log lacks the leadership line:\n%s", lead.logs.String())
	}

	// Key rotation through the follower, activation by the leader.
	rot, err := other.cli.RotateSigningKey(as(t, c.op), &sigilv1.RotateSigningKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []*replica{lead, other} {
		waitKeyState(t, c, r, rot.GetKeyId(), sigilv1.SigningKeyState_SIGNING_KEY_STATE_ACTIVE)
	}
	for _, pair := range [][2]*replica{{other, lead}, {lead, other}} {
		m := c.mint(pair[0], "signed-on-"+pair[0].name)
		if m.GetInfo().GetKeyId() != rot.GetKeyId() {
			t.Fatalf("minted on %s with key %s, the active key is %s", pair[0].name, m.GetInfo().GetKeyId(), rot.GetKeyId())
		}
		if _, err := pair[1].cli.ListPermissions(as(t, m.GetToken()), &sigilv1.ListPermissionsRequest{}); err != nil {
			t.Fatalf("a token minted on %s with the new key, used on %s: %v", pair[0].name, pair[1].name, err)
		}
	}
	// The leader stops: the other takes over.
	lead.stop(t)
	if next := leaderOf(t, other); next != other {
		t.Fatal("unreachable")
	}
	if got := metric(t, other, compactionStarts); got != 1 {
		t.Fatalf("new leader %s started compaction %v times", other.name, got)
	}
	if !strings.Contains(lead.logs.String(), `"msg":"leadership resigned: background work stopped"`) {
		t.Fatalf("stopped leader's log lacks the resignation:\n%s", lead.logs.String())
	}
	again := c.start(lead.name + "2")
	time.Sleep(2 * time.Second) // two lease TTLs: time to (wrongly) take over
	if leaderOf(t, other, again) != other {
		t.Fatal("the restarted replica took the leadership from a live leader")
	}
	if got := metric(t, again, compactionStarts); got != 0 {
		t.Fatalf("restarted follower started compaction %v times", got)
	}
}

// waitKeyState waits until r lists key id in state want.
func waitKeyState(t *testing.T, c *cluster, r *replica, id string, want sigilv1.SigningKeyState) {
	t.Helper()
	var last sigilv1.SigningKeyState
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		ks, err := r.cli.ListSigningKeys(as(t, c.op), &sigilv1.ListSigningKeysRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range ks.GetKeys() {
			if k.GetKeyId() == id {
				last = k.GetState()
			}
		}
		if last == want {
			return
		}
	}
	t.Fatalf("key %s on %s is %v after 30s, want %v", id, r.name, last, want)
}
