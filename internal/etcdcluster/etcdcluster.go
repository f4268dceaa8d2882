// Package etcdcluster starts an etcd cluster of real server processes on
// loopback for tests: each member is the deploy/etcd binary (etcd's own
// server, built from the module go.mod pins, through internal/testproc's
// cached build), on free ports, with its data directory in the test's
// temporary directory. A member can be killed with SIGKILL and restarted on
// the same ports and data, as a crashed machine would come back.
package etcdcluster

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/sigil-auth/sigil/internal/testproc"
)

// Cluster is a started etcd cluster.
type Cluster struct {
	tb      testing.TB
	bin     string
	token   string
	initial string // --initial-cluster
	Members []*Member
}

// Member is one etcd server process of a Cluster.
type Member struct {
	Name      string
	ClientURL string // http://127.0.0.1:port
	PeerURL   string
	Dir       string // data directory

	c    *Cluster
	mu   sync.Mutex
	proc *testproc.Proc
	runs int
}

// Start starts an n-member cluster and waits until every member is healthy
// (up to a minute). The processes are stopped when the test ends.
func Start(tb testing.TB, n int) *Cluster {
	tb.Helper()
	c := &Cluster{tb: tb, bin: testproc.MustBuild(tb, "deploy/etcd"), token: fmt.Sprintf("sigil-test-%d", time.Now().UnixNano())}
	var peers []string
	for i := range n {
		m := &Member{
			Name:      fmt.Sprintf("etcd%d", i+1),
			ClientURL: "http://" + testproc.FreeAddr(tb),
			PeerURL:   "http://" + testproc.FreeAddr(tb),
			Dir:       tb.TempDir(),
			c:         c,
		}
		c.Members = append(c.Members, m)
		peers = append(peers, m.Name+"="+m.PeerURL)
	}
	c.initial = strings.Join(peers, ",")
	for _, m := range c.Members {
		m.start()
	}
	if err := c.WaitHealthy(time.Minute); err != nil {
		tb.Fatal(err)
	}
	// WaitHealthy passes over stopped members (killed on purpose later);
	// at the start every one must run, or a port was taken meanwhile.
	for _, m := range c.Members {
		if !m.Running() {
			tb.Fatalf("etcdcluster: %s exited at start (its logs follow at cleanup)", m.Name)
		}
	}
	return c
}

// Endpoints are the members' client URLs.
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, m := range c.Members {
		eps = append(eps, m.ClientURL)
	}
	return eps
}

// EndpointList is Endpoints joined with commas, as --etcd-endpoints takes them.
func (c *Cluster) EndpointList() string { return strings.Join(c.Endpoints(), ",") }

// Client returns a client of the whole cluster, closed when the test ends.
func (c *Cluster) Client() *clientv3.Client {
	c.tb.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		c.tb.Fatal(err)
	}
	c.tb.Cleanup(func() { cli.Close() })
	return cli
}

func (m *Member) start() {
	m.c.tb.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	state := "new"
	if m.runs > 0 {
		state = "existing" // ignored once the data directory holds a member, as here
	}
	m.runs++
	m.proc = testproc.StartWith(m.c.tb, testproc.Options{Name: fmt.Sprintf("%s#%d", m.Name, m.runs)}, m.c.bin,
		"--name", m.Name,
		"--data-dir", m.Dir,
		"--listen-client-urls", m.ClientURL,
		"--advertise-client-urls", m.ClientURL,
		"--listen-peer-urls", m.PeerURL,
		"--initial-advertise-peer-urls", m.PeerURL,
		"--initial-cluster", m.c.initial,
		"--initial-cluster-state", state,
		"--initial-cluster-token", m.c.token,
		// Loopback: a short heartbeat keeps elections quick after a kill.
		"--heartbeat-interval", "50",
		"--election-timeout", "500",
		"--log-level", "warn",
		"--listen-metrics-urls", "",
	)
}

// Kill kills the member with SIGKILL (no chance to flush or say goodbye)
// and waits until it is gone.
func (m *Member) Kill() {
	m.mu.Lock()
	p := m.proc
	m.mu.Unlock()
	p.Kill()
}

// Running reports whether the member's process runs.
func (m *Member) Running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.proc != nil && !m.proc.Exited()
}

// Restart starts a killed member again on the same ports and data
// directory. It does not wait for health (see WaitHealthy).
func (m *Member) Restart() {
	m.c.tb.Helper()
	if m.Running() {
		m.c.tb.Fatalf("etcdcluster: restart of %s, which still runs", m.Name)
	}
	m.start()
}

// Healthy checks the member as `etcdctl endpoint health` does: it knows a
// leader and answers a linearizable read (which needs the quorum).
func (m *Member) Healthy(ctx context.Context) error {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{m.ClientURL}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return fmt.Errorf("%s: %w", m.Name, err)
	}
	defer cli.Close()
	st, err := cli.Status(ctx, m.ClientURL)
	if err != nil {
		return fmt.Errorf("%s: status: %w", m.Name, err)
	}
	if st.Leader == 0 {
		return fmt.Errorf("%s: no leader", m.Name)
	}
	if _, err := cli.Get(ctx, "health"); err != nil {
		return fmt.Errorf("%s: linearizable read: %w", m.Name, err)
	}
	return nil
}

// WaitHealthy waits up to timeout until every running member is healthy.
func (c *Cluster) WaitHealthy(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var err error
		for _, m := range c.Members {
			if !m.Running() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			err = m.Healthy(ctx)
			cancel()
			if err != nil {
				break
			}
		}
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcdcluster: not healthy within %s: %w", timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Leader returns the member the running members report as leader.
func (c *Cluster) Leader(ctx context.Context) (*Member, error) {
	for _, m := range c.Members {
		if !m.Running() {
			continue
		}
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{m.ClientURL}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			continue
		}
		st, err := cli.Status(ctx, m.ClientURL)
		cli.Close()
		if err != nil || st.Leader == 0 {
			continue
		}
		for _, l := range c.Members {
			if l.Running() && l.id(ctx) == st.Leader {
				return l, nil
			}
		}
	}
	return nil, fmt.Errorf("etcdcluster: no running member knows a running leader")
}

// id is the member's raft id, 0 if it does not answer.
func (m *Member) id(ctx context.Context) uint64 {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{m.ClientURL}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return 0
	}
	defer cli.Close()
	st, err := cli.Status(ctx, m.ClientURL)
	if err != nil {
		return 0
	}
	return st.Header.GetMemberId()
}
