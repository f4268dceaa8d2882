package app

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/internal/etcdtest"
	"github.com/sigil-auth/sigil/internal/testproc"
)

// TestReplicasLeaderKilled runs two real authority binaries on one etcd
// prefix (embedded etcd, loopback) with a 2 s leader lease: exactly one
// leads; killed with -9 (no resignation, its lease left to expire), the
// other takes over and starts the background work, after about the lease.
func TestReplicasLeaderKilled(t *testing.T) {
	endpoint := etcdtest.StartT(t)
	bin := testproc.MustBuild(t, "services/authority")
	shared := t.TempDir()
	start := func(name string) *replicaProc {
		return startReplicaProc(t, bin, name, shared, "--store", "etcd", "--etcd-endpoints", endpoint,
			"--etcd-prefix", "/e2e-replicas/", "--etcd-leader-ttl", "2s")
	}
	a := start("a")
	defer func() { _ = a.p.Stop(10 * time.Second) }()
	b := start("b")
	defer func() { _ = b.p.Stop(10 * time.Second) }()

	lead, other := waitLeader(t, a, b)
	if got := scrape(t, other.metrics, compactionStarts); got != 0 {
		t.Fatalf("the follower %s started compaction %v times", other.name, got)
	}
	if err := lead.p.WaitRecord(time.Second, "leading: running the cluster-wide background work", nil); err != nil {
		t.Fatalf("leader's log: %v", err)
	}

	killed := time.Now()
	lead.p.Kill()
	for deadline := killed.Add(30 * time.Second); !other.leads(t); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not take over within 30s of the leader's kill", other.name)
		}
	}
	t.Logf("%s leads %v after the leader was killed (lease 2s)", other.name, time.Since(killed).Round(10*time.Millisecond))
	if got := scrape(t, other.metrics, compactionStarts); got != 1 {
		t.Fatalf("the new leader started compaction %v times", got)
	}
	if err := other.p.WaitRecord(5*time.Second, "leading: running the cluster-wide background work", nil); err != nil {
		t.Fatalf("new leader's log: %v", err)
	}
}

// replicaProc is one real authority binary sharing its credentials and
// key-encryption key with the other replicas of a test.
type replicaProc struct {
	name, addr, metrics string
	p                   *testproc.Proc
}

// startReplicaProc starts bin as replica name with the credential files
// of shared, its own data directory and args (the store flags), and waits
// until it listens.
func startReplicaProc(t *testing.T, bin, name, shared string, args ...string) *replicaProc {
	t.Helper()
	addr, metrics := testproc.FreeAddr(t), testproc.FreeAddr(t)
	p := testproc.StartWith(t, testproc.Options{Name: name}, bin, append([]string{
		"--listen", addr, "--metrics-listen", metrics, "--data-dir", filepath.Join(t.TempDir(), name),
		"--operator-token-file", filepath.Join(shared, "operator.token"), "--watch-token-file", filepath.Join(shared, "watch.token"),
		"--kek-file", filepath.Join(shared, "kek"), "--shutdown-timeout", "5s",
	}, args...)...)
	if err := p.WaitRecord(30*time.Second, "listening", nil); err != nil {
		t.Fatal(err)
	}
	return &replicaProc{name: name, addr: addr, metrics: metrics, p: p}
}

// leads reports whether the replica says it leads (sigil_authority_leader).
func (r *replicaProc) leads(t *testing.T) bool {
	return scrape(t, r.metrics, "sigil_authority_leader") == 1
}

// waitLeader waits (up to 30 s) until exactly one of a and b leads, and
// returns it and the other; both leading fails the test.
func waitLeader(t *testing.T, a, b *replicaProc) (lead, other *replicaProc) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		switch la, lb := a.leads(t), b.leads(t); {
		case la && lb:
			t.Fatal("both replicas lead")
		case la:
			return a, b
		case lb:
			return b, a
		}
		if time.Now().After(deadline) {
			t.Fatal("no replica leads after 30s")
		}
	}
}
