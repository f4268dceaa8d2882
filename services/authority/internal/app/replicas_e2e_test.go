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
	type proc struct {
		name, metrics string
		p             *testproc.Proc
	}
	start := func(name string) *proc {
		metrics := testproc.FreeAddr(t)
		p := testproc.StartWith(t, testproc.Options{Name: name}, bin,
			"--listen", testproc.FreeAddr(t), "--metrics-listen", metrics, "--data-dir", filepath.Join(t.TempDir(), name),
			"--operator-token-file", filepath.Join(shared, "operator.token"), "--watch-token-file", filepath.Join(shared, "watch.token"),
			"--kek-file", filepath.Join(shared, "kek"),
			"--store", "etcd", "--etcd-endpoints", endpoint, "--etcd-prefix", "/e2e-replicas/", "--etcd-leader-ttl", "2s",
			"--shutdown-timeout", "5s")
		if err := p.WaitRecord(30*time.Second, "listening", nil); err != nil {
			t.Fatal(err)
		}
		return &proc{name: name, metrics: metrics, p: p}
	}
	a := start("a")
	defer func() { _ = a.p.Stop(10 * time.Second) }()
	b := start("b")
	defer func() { _ = b.p.Stop(10 * time.Second) }()

	leads := func(x *proc) bool { return scrape(t, x.metrics, "sigil_authority_leader") == 1 }
	var lead, other *proc
	for deadline := time.Now().Add(30 * time.Second); lead == nil && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		switch la, lb := leads(a), leads(b); {
		case la && lb:
			t.Fatal("both replicas lead")
		case la:
			lead, other = a, b
		case lb:
			lead, other = b, a
		}
	}
	if lead == nil {
		t.Fatal("no replica leads after 30s")
	}
	if got := scrape(t, other.metrics, compactionStarts); got != 0 {
		t.Fatalf("the follower %s started compaction %v times", other.name, got)
	}
	if err := lead.p.WaitRecord(time.Second, "leading: running the cluster-wide background work", nil); err != nil {
		t.Fatalf("leader's log: %v", err)
	}

	killed := time.Now()
	lead.p.Kill()
	for deadline := killed.Add(30 * time.Second); !leads(other); time.Sleep(20 * time.Millisecond) {
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
