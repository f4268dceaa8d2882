package store

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sigil-auth/sigil/internal/etcdtest"
)

// TestEtcdElectionOneLeaderAndTakeover: of two replicas campaigning on one
// prefix, one leads and the other waits (past the lease TTL, so a lease
// not kept alive would show); when the leader stops renewing its lease
// without resigning (a crash: the session is orphaned), the other leads
// once the lease expires; a resignation hands over at once. The
// election's keys live under the prefix without upsetting Check.
func TestEtcdElectionOneLeaderAndTakeover(t *testing.T) {
	ctx := context.Background()
	prefix := etcdtest.Prefix(t)
	a := openEtcdTest(t, prefix, EtcdOptions{})
	b := openEtcdTest(t, prefix, EtcdOptions{})
	const ttl = time.Second
	ea := NewElector(a, ElectorOptions{TTL: ttl, ID: "replica-a"})
	eb := NewElector(b, ElectorOptions{TTL: ttl, ID: "replica-b"})

	ta, err := ea.Campaign(ctx)
	if err != nil {
		t.Fatal(err)
	}
	type won struct {
		term Term
		err  error
		at   time.Time
	}
	bWon := make(chan won, 1)
	bctx, cancelB := context.WithCancel(ctx)
	defer cancelB()
	go func() {
		tb, err := eb.Campaign(bctx)
		bWon <- won{tb, err, time.Now()}
	}()
	// Three lease TTLs: a leader whose lease lapsed would have lost it.
	select {
	case w := <-bWon:
		t.Fatalf("b's campaign returned (%v) while a leads", w.err)
	case <-ta.Done():
		t.Fatal("a's term ended while it keeps its lease")
	case <-time.After(3 * ttl):
	}
	resp, err := a.cli.Get(ctx, prefix+leaderBucket+"/", clientv3.WithFirstCreate()...)
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "replica-a" {
		t.Fatalf("oldest election key: %v, %v", resp, err)
	}
	if err := b.Check(ctx); err != nil {
		t.Fatalf("Check with the election's keys present: %v", err)
	}

	// a crashes: its lease is no longer renewed, and not revoked either.
	crashed := time.Now()
	ta.(*etcdTerm).sess.Orphan()
	select {
	case <-ta.Done():
	default:
		t.Fatal("a's term not done after its session ended")
	}
	var w won
	select {
	case w = <-bWon:
	case <-time.After(30 * time.Second):
		t.Fatal("b did not take over within 30s of a's crash")
	}
	if w.err != nil {
		t.Fatalf("b's campaign: %v", w.err)
	}
	t.Logf("b leads %v after a stopped renewing a %v lease", w.at.Sub(crashed).Round(time.Millisecond), ttl)

	// b resigns: a (campaigning again, as after a restart) leads at once,
	// well before b's lease would have expired.
	aWon := make(chan won, 1)
	go func() {
		ta2, err := ea.Campaign(bctx)
		aWon <- won{ta2, err, time.Now()}
	}()
	select {
	case w := <-aWon:
		t.Fatalf("a's second campaign returned (%v) while b leads", w.err)
	case <-time.After(2 * ttl):
	}
	if err := w.term.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.term.Done():
	default:
		t.Fatal("b's term not done after Resign")
	}
	select {
	case w := <-aWon:
		if w.err != nil {
			t.Fatal(w.err)
		}
		if err := w.term.Resign(ctx); err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a did not lead after b resigned")
	}
}

// TestEtcdCampaignEndsWithContext: a campaign that waits returns the
// context's error when it ends, and leaves no candidate key behind.
func TestEtcdCampaignEndsWithContext(t *testing.T) {
	ctx := context.Background()
	prefix := etcdtest.Prefix(t)
	a := openEtcdTest(t, prefix, EtcdOptions{})
	b := openEtcdTest(t, prefix, EtcdOptions{})
	ta, err := NewElector(a, ElectorOptions{TTL: time.Second}).Campaign(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ta.Resign(ctx) }()
	cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if _, err := NewElector(b, ElectorOptions{TTL: time.Second}).Campaign(cctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("campaign with a leader present = %v, want the context's deadline", err)
	}
	resp, err := a.cli.Get(ctx, prefix+leaderBucket+"/", clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("election keys after the abandoned campaign: %d, %v", len(resp.Kvs), err)
	}
}

// TestBoltElectorLeadsAtOnce: with bbolt one process holds the file, so it
// leads at once and until it resigns.
func TestBoltElectorLeadsAtOnce(t *testing.T) {
	s := openBare(t, filepath.Join(t.TempDir(), "s.db"))
	e := NewElector(s, ElectorOptions{})
	term, err := e.Campaign(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-term.Done():
		t.Fatal("the sole leader's term is done before it resigned")
	default:
	}
	if err := term.Resign(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-term.Done():
	default:
		t.Fatal("term not done after Resign")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.Campaign(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("campaign with an ended context = %v", err)
	}
}
