// Package replicatest runs, for the authorizer's failover tests, several
// real authority replicas (the authority binary, built by testproc) on
// loopback sharing one store in a real etcd started inside the test
// process (etcd's embed package). Nothing here is a mock.
package replicatest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sigil-auth/sigil/internal/etcdtest"
	"github.com/sigil-auth/sigil/internal/testproc"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/pkg/token"
)

// ConnectParams is the authorizer's reconnect backoff towards the authority
// (capped at 2s), for the tests' own clients.
var ConnectParams = grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
	MinConnectTimeout: 2 * time.Second,
}

// Cluster is n authority replicas on one etcd prefix sharing one data
// directory (credentials and key-encryption key).
type Cluster struct {
	tb      testing.TB
	bin     string
	etcd    string
	DataDir string
	// Addrs are the replicas' listen addresses; a replica started again
	// keeps its address.
	Addrs []string
	// Procs are the running replicas (Kill one to fail it).
	Procs []*testproc.Proc
	conns []*grpc.ClientConn
	op    context.Context // carries the operator credential
}

// Start starts etcd and n replicas, one after the other; everything stops
// when the test ends. It skips the test under -short.
func Start(tb testing.TB, n int) *Cluster {
	tb.Helper()
	if testing.Short() {
		tb.Skip("starts etcd and real authority replicas (run without -short)")
	}
	c := &Cluster{tb: tb, bin: testproc.MustBuild(tb, "services/authority"), etcd: etcdtest.StartT(tb), DataDir: tb.TempDir()}
	for range n {
		c.Addrs = append(c.Addrs, testproc.FreeAddr(tb))
	}
	c.Procs = make([]*testproc.Proc, n)
	for i := range n {
		c.StartReplica(i)
		conn, err := grpc.NewClient(c.Addrs[i], grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithConnectParams(ConnectParams))
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { conn.Close() })
		c.conns = append(c.conns, conn)
	}
	b, err := os.ReadFile(filepath.Join(c.DataDir, "operator.token"))
	if err != nil {
		tb.Fatal(err)
	}
	c.op = metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+strings.TrimSpace(string(b)))
	return c
}

// StartReplica starts replica i (again) on its address and waits until it
// listens.
func (c *Cluster) StartReplica(i int) {
	c.tb.Helper()
	p := testproc.StartWith(c.tb, testproc.Options{Name: fmt.Sprint("authority-", i)}, c.bin,
		"--listen", c.Addrs[i], "--metrics-listen", "", "--data-dir", c.DataDir,
		"--store", "etcd", "--etcd-endpoints", c.etcd, "--etcd-prefix", "/replicatest/",
		"--key-activation-delay", "1500ms", "--shutdown-timeout", "5s")
	if err := p.WaitRecord(30*time.Second, "listening", nil); err != nil {
		c.tb.Fatal(err)
	}
	c.Procs[i] = p
}

// WaitConnected connects the tests' client of replica i and waits until it
// is ready (a warm standby, as the authorizer keeps every replica's
// connection), for at most 10s.
func (c *Cluster) WaitConnected(i int) {
	c.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn := c.conns[i]
	for s := conn.GetState(); s != connectivity.Ready; s = conn.GetState() {
		conn.Connect()
		if !conn.WaitForStateChange(ctx, s) {
			c.tb.Fatalf("replica %d: connection not ready within 10s (%v)", i, s)
		}
	}
}

// WatchTokenFile is the path of the watch credential.
func (c *Cluster) WatchTokenFile() string { return filepath.Join(c.DataDir, "watch.token") }

// WatchToken reads the watch credential.
func (c *Cluster) WatchToken() (string, error) {
	b, err := os.ReadFile(c.WatchTokenFile())
	return strings.TrimSpace(string(b)), err
}

// Operator returns a context carrying the operator credential.
func (c *Cluster) Operator() context.Context { return c.op }

// Client returns a client of replica i.
func (c *Cluster) Client(i int) sigilv1.TokenAuthorityServiceClient {
	return sigilv1.NewTokenAuthorityServiceClient(c.conns[i])
}

// Mint mints a token (org-a, domain:view, ten days) through replica i,
// waiting for the first signing key to become active, and returns it and
// its id.
func (c *Cluster) Mint(i int, name string) (string, token.ID) {
	c.tb.Helper()
	ctx, cancel := context.WithTimeout(c.op, 20*time.Second)
	defer cancel()
	for {
		resp, err := c.Client(i).CreateToken(ctx, &sigilv1.CreateTokenRequest{
			OrgId: "org-a", Name: name, CreatedBy: "alice",
			Grants: []*sigilv1.Grant{{Permissions: []string{"domain:view"}}},
			Expiry: &sigilv1.CreateTokenRequest_Ttl{Ttl: durationpb.New(10 * 24 * time.Hour)},
		})
		if err == nil {
			id, err := token.ParseID(resp.GetInfo().GetTokenId())
			if err != nil {
				c.tb.Fatal(err)
			}
			return resp.GetToken(), id
		}
		if !strings.Contains(err.Error(), "no active signing key") || ctx.Err() != nil {
			c.tb.Fatalf("CreateToken(%s) through replica %d: %v", name, i, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Revoke revokes id through replica i and returns the acknowledged
// revision.
func (c *Cluster) Revoke(i int, id token.ID) uint64 {
	c.tb.Helper()
	ctx, cancel := context.WithTimeout(c.op, 10*time.Second)
	defer cancel()
	resp, err := c.Client(i).RevokeToken(ctx, &sigilv1.RevokeTokenRequest{TokenId: id.String(), Reason: "failover test"})
	if err != nil {
		c.tb.Fatalf("RevokeToken through replica %d: %v", i, err)
	}
	return resp.GetRevision()
}
