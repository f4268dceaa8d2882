package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/internal/etcdtest"
)

// openEtcdTest opens an etcd store under a fresh prefix of the shared
// embedded server and closes it on cleanup.
func openEtcdTest(t *testing.T, prefix string, opts EtcdOptions) *Etcd {
	t.Helper()
	if opts.Endpoints == nil {
		opts.Endpoints = []string{etcdtest.Shared(t).Endpoint}
	}
	opts.Prefix = prefix
	s, err := OpenEtcd(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// chain stores n tokens, each minted through the previous, and returns
// them root first.
func chain(t *testing.T, s Store, org string, n int) []Token {
	t.Helper()
	nodes := []Token{tok(org, "root", "u", time.Hour)}
	for i := 1; i <= n; i++ {
		nodes = append(nodes, childOf(nodes[i-1], fmt.Sprint("n", i)))
	}
	for _, x := range nodes {
		mustCreate(t, s, x)
	}
	return nodes
}

// TestEtcdChunkedRevocationResumes: a revocation larger than one etcd
// transaction that stops after its first chunk (as a crash would) leaves
// the chunk's tokens revoked, the rest not, and its intent visible; a
// writer meanwhile (here a mint through a token not yet revoked)
// finishes it first and is then refused; and a store that
// opens finishes what is left, with the request's audit record at the last
// revision.
func TestEtcdChunkedRevocationResumes(t *testing.T) {
	ctx := context.Background()
	prefix := etcdtest.Prefix(t)
	a := openEtcdTest(t, prefix, EtcdOptions{})
	addTestKey(t, a, testKeyID)
	size := 5 * a.revocationLimit()
	nodes := chain(t, a, "o", size)
	before := a.Revision()
	crash := errors.New("simulated crash")
	a.afterChunk = func() error { return crash }
	if _, _, _, err := a.RevokeToken(ctx, nodes[0].ID, auditFor(AuditTokenRevoked, t0)); !errors.Is(err, crash) {
		t.Fatalf("RevokeToken = %v, want the simulated crash", err)
	}
	if err := a.Check(ctx); err == nil || !strings.Contains(err.Error(), "chunked revocation is in progress") {
		t.Fatalf("Check with an intent left: %v", err)
	}
	revoked := 0
	for _, x := range nodes {
		got, err := a.GetToken(ctx, x.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.RevokeRev != 0 {
			revoked++
		}
	}
	if revoked == 0 || revoked == len(nodes) || a.Revision() != before+uint64(revoked) {
		t.Fatalf("after the first chunk: %d of %d revoked at revision %d (from %d)", revoked, len(nodes), a.Revision(), before)
	}
	// The deepest tokens go first: the root is still live.
	if got, _ := a.GetToken(ctx, nodes[0].ID); got.RevokeRev != 0 {
		t.Fatal("the root was revoked in the first chunk")
	}

	// The next writer mints through the root: it finishes the revocation
	// first, then finds the root revoked. (A store that opens would
	// finish it too: TestEtcdOpenFinishesChunkedRevocation.)
	a.afterChunk = nil
	late := childOf(nodes[0], "late")
	if _, err := a.CreateToken(ctx, late, auditFor(AuditTokenCreated, t0)); !errors.Is(err, ErrNotActive) {
		t.Fatalf("mint through the root during the revocation: %v, want ErrNotActive", err)
	}
	b := openEtcdTest(t, prefix, EtcdOptions{})
	last := before + uint64(len(nodes))
	if b.Revision() != last {
		t.Fatalf("revision %d after the revocation was finished, want %d", b.Revision(), last)
	}
	root, err := b.GetToken(ctx, nodes[0].ID)
	if err != nil || root.RevokeRev != last {
		t.Fatalf("root revoked at %d, %v; want %d", root.RevokeRev, err, last)
	}
	recs, err := listAuditAfter(ctx, b, "o", last-1, 10)
	if err != nil || len(recs) != 1 || recs[0].Revision != last || recs[0].TokenID != root.ID || recs[0].Reason != "test" {
		t.Fatalf("audit record at the last revision: %+v, %v", recs, err)
	}
	if err := b.Check(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestEtcdOpenFinishesChunkedRevocation: a store that opens finishes a
// chunked revocation a crashed process left, before it serves anything.
func TestEtcdOpenFinishesChunkedRevocation(t *testing.T) {
	ctx := context.Background()
	prefix := etcdtest.Prefix(t)
	a := openEtcdTest(t, prefix, EtcdOptions{})
	addTestKey(t, a, testKeyID)
	nodes := chain(t, a, "o", 3*a.revocationLimit())
	a.afterChunk = func() error { return errors.New("crash") }
	if _, _, err := a.RevokeTokens(ctx, "o", "", auditFor(AuditTokensRevoked, t0)); err == nil {
		t.Fatal("RevokeTokens did not stop")
	}
	_ = a.Close()
	b := openEtcdTest(t, prefix, EtcdOptions{})
	for _, x := range nodes {
		if got, err := b.GetToken(ctx, x.ID); err != nil || got.RevokeRev == 0 {
			t.Fatalf("token %s not revoked after reopening: %v", x.Name, err)
		}
	}
	if err := b.Check(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestEtcdTwoClients: two stores on one prefix (two authority processes)
// share one revision order without gap or duplicate, and each sees the
// other's commits through Revision, Changed and EventsAfter.
func TestEtcdTwoClients(t *testing.T) {
	ctx := context.Background()
	prefix := etcdtest.Prefix(t)
	a := openEtcdTest(t, prefix, EtcdOptions{})
	b := openEtcdTest(t, prefix, EtcdOptions{})
	if a.Epoch() != b.Epoch() {
		t.Fatal("two clients of one prefix see two epochs")
	}
	addTestKey(t, a, testKeyID)
	changed := b.Changed()
	x := tok("o", "x", "u", time.Hour)
	mustCreate(t, a, x)
	_, rev, _, err := a.RevokeToken(ctx, x.ID, auditFor(AuditTokenRevoked, t0))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("b's Changed not closed by a's commit")
	}
	deadline := time.Now().Add(10 * time.Second)
	for b.Revision() < rev && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if b.Revision() != rev {
		t.Fatalf("b at revision %d, a committed %d", b.Revision(), rev)
	}
	evs, err := b.EventsAfter(ctx, 0, 0)
	if err != nil || len(evs) != 2 || evs[1].Revision != rev || evs[1].TokenID != x.ID {
		t.Fatalf("b's EventsAfter(0) = %+v, %v", evs, err)
	}
	// Alternating writers: dense revisions.
	for i := range 10 {
		s := Store(a)
		if i%2 == 1 {
			s = b
		}
		if got := mustCreate(t, s, tok("o", fmt.Sprint("t", i), "u", time.Hour)); got != rev+uint64(i)+1 {
			t.Fatalf("write %d at revision %d, want %d", i, got, rev+uint64(i)+1)
		}
	}
	if err := a.Check(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestEtcdUnavailable: when the cluster is gone, a mutation fails with
// ErrUnavailable within the request timeout instead of hanging, and so does
// a read.
func TestEtcdUnavailable(t *testing.T) {
	t.Parallel() // the server's Close waits seconds for the client's open streams
	srv, err := etcdtest.Start(etcdtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			srv.Close()
		}
	}()
	s := openEtcdTest(t, "/u/", EtcdOptions{Endpoints: []string{srv.Endpoint}, RequestTimeout: 500 * time.Millisecond})
	addTestKey(t, s, testKeyID)
	srv.Close()
	stopped = true
	ctx := context.Background()
	if _, err := s.CreateToken(ctx, tok("o", "x", "u", time.Hour), auditFor(AuditTokenCreated, t0)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("CreateToken without etcd: %v, want ErrUnavailable", err)
	}
	if _, err := s.EventsAfter(ctx, 0, 0); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("EventsAfter without etcd: %v, want ErrUnavailable", err)
	}
}

// TestEtcdRevocationTooLarge: a revocation whose intent record does not fit
// in one etcd request is refused with ErrTooLarge, and nothing is revoked.
func TestEtcdRevocationTooLarge(t *testing.T) {
	ctx := context.Background()
	s := openEtcdTest(t, etcdtest.Prefix(t), EtcdOptions{MaxRequestBytes: 16 << 10})
	addTestKey(t, s, testKeyID)
	nodes := chain(t, s, "o", 400)
	before := s.Revision()
	if _, _, _, err := s.RevokeToken(ctx, nodes[0].ID, auditFor(AuditTokenRevoked, t0)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("RevokeToken of %d tokens with 16 KiB requests: %v, want ErrTooLarge", len(nodes), err)
	}
	if s.Revision() != before {
		t.Fatalf("revision moved from %d to %d", before, s.Revision())
	}
	if err := s.Check(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestEtcdTwoClientsRace: writers on two clients of one prefix (two
// processes) race, for one name among others: the guarded transactions
// give every creation its own revision, without a gap, and the name to
// exactly one of them.
func TestEtcdTwoClientsRace(t *testing.T) {
	ctx := context.Background()
	prefix := etcdtest.Prefix(t)
	clients := []*Etcd{openEtcdTest(t, prefix, EtcdOptions{}), openEtcdTest(t, prefix, EtcdOptions{})}
	addTestKey(t, clients[0], testKeyID)
	before := clients[0].Revision()
	const writers, each = 6, 8
	var (
		mu    sync.Mutex
		revs  = map[uint64]bool{}
		taken int
		wg    sync.WaitGroup
	)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := clients[w%2]
			for i := range each {
				name := fmt.Sprint("w", w, "-", i)
				if i == each/2 {
					name = "same"
				}
				rev, err := s.CreateToken(ctx, tok("o", name, "u", time.Hour), auditFor(AuditTokenCreated, t0))
				mu.Lock()
				switch {
				case err == nil && revs[rev]:
					t.Errorf("revision %d handed out twice", rev)
				case err == nil:
					revs[rev] = true
					if name == "same" {
						taken++
					}
				case !errors.Is(err, ErrNameTaken) || name != "same":
					t.Errorf("CreateToken(%s): %v", name, err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	want := writers*(each-1) + 1
	if taken != 1 || len(revs) != want {
		t.Fatalf("name taken %d times, %d creations; want 1, %d", taken, len(revs), want)
	}
	for r := before + 1; r <= before+uint64(want); r++ {
		if !revs[r] {
			t.Fatalf("revision %d missing", r)
		}
	}
	if err := clients[1].Check(ctx); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkEtcdCreateToken measures CreateToken on the embedded etcd (one
// member, loopback, fsync off: round trips and transaction work, not disk
// latency), with b.SetParallelism 1 and 16 (times GOMAXPROCS goroutines). Local
// writers are serialized (Etcd.wmu), so the figure is per-mutation latency.
// On the 2-core development VM, -benchtime 2s: about 1.2 ms (1) and 1.0 ms
// (16) per create: seven round trips (head, reads, commit).
func BenchmarkEtcdCreateToken(b *testing.B) {
	for _, writers := range []int{1, 16} {
		b.Run(fmt.Sprint("parallelism=", writers), func(b *testing.B) {
			s, err := OpenEtcd(context.Background(), EtcdOptions{Endpoints: []string{etcdtest.Shared(b).Endpoint}, Prefix: etcdtest.Prefix(b)})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			addTestKey(b, s, testKeyID)
			b.SetParallelism(writers)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := s.CreateToken(context.Background(), tok("o", newID(), "u", time.Hour), auditFor(AuditTokenCreated, t0)); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
