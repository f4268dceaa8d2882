package ha

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sigil-auth/sigil/internal/etcdcluster"
	"github.com/sigil-auth/sigil/internal/testproc"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

// replica is one authority process on a fixed address, restartable in place.
type replica struct {
	name    string
	addr    string
	dataDir string
	conn    *grpc.ClientConn
	mgmt    sigilv1.TokenAuthorityServiceClient

	mu      sync.Mutex
	proc    *testproc.Proc
	runs    int
	metrics string // Prometheus address of the current run
}

// authorizer is one authorizer process on a fixed address.
type authorizer struct {
	name      string
	addr      string
	authority string // --authority
	staleness time.Duration
	conn      *grpc.ClientConn
	authz     sigilv1.AuthorizerServiceClient

	mu   sync.Mutex
	proc *testproc.Proc
	runs int
}

// system is an etcd cluster, authority replicas sharing it (one KEK and
// one pair of credentials, each with its own data directory for its
// high-water mark) and authorizers.
type system struct {
	t     *testing.T
	etcd  *etcdcluster.Cluster
	creds string // directory of kek, operator.token, watch.token
	opCtx context.Context

	replicas    []*replica
	authorizers []*authorizer
}

// newSystem starts three etcd members and n authority replicas on them.
func newSystem(t *testing.T, replicas int) *system {
	t.Helper()
	s := &system{t: t, etcd: etcdcluster.Start(t, 3), creds: t.TempDir()}
	for i := range replicas {
		r := &replica{name: fmt.Sprintf("authority-%c", 'a'+i), addr: testproc.FreeAddr(t), dataDir: t.TempDir()}
		r.conn = dial(t, r.addr)
		r.mgmt = sigilv1.NewTokenAuthorityServiceClient(r.conn)
		s.replicas = append(s.replicas, r)
		// The first replica makes the store and the credential files;
		// the others start once they exist.
		if err := s.startReplica(r); err != nil {
			t.Fatal(err)
		}
	}
	if replicas == 0 {
		return s
	}
	op, err := os.ReadFile(filepath.Join(s.creds, "operator.token"))
	if err != nil {
		t.Fatal(err)
	}
	s.opCtx = metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+strings.TrimSpace(string(op)))
	return s
}

func dial(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// startReplica starts (or restarts, on the same address, data directory
// and credentials) an authority replica and waits until it serves. The
// process belongs to the whole test (s.t), whichever subtest starts it.
func (s *system) startReplica(r *replica) error {
	r.mu.Lock()
	r.runs++
	name := fmt.Sprintf("%s#%d", r.name, r.runs)
	r.mu.Unlock()
	p := testproc.StartWith(s.t, testproc.Options{Name: name}, testproc.MustBuild(s.t, "services/authority"),
		"--listen", r.addr, "--metrics-listen", "127.0.0.1:0", "--data-dir", r.dataDir,
		"--store", "etcd", "--etcd-endpoints", s.etcd.EndpointList(),
		"--kek-file", filepath.Join(s.creds, "kek"),
		"--operator-token-file", filepath.Join(s.creds, "operator.token"),
		"--watch-token-file", filepath.Join(s.creds, "watch.token"),
		"--key-activation-delay", "1500ms", "--shutdown-timeout", "5s")
	r.mu.Lock()
	r.proc = p
	r.mu.Unlock()
	if err := p.WaitRecord(60*time.Second, "listening", nil); err != nil {
		return err
	}
	var rec struct{ Addr string }
	if err := p.WaitRecord(time.Second, "metrics listening", &rec); err != nil {
		return err
	}
	r.mu.Lock()
	r.metrics = rec.Addr
	r.mu.Unlock()
	if err := testproc.WaitServing(r.addr, 30*time.Second); err != nil {
		return err
	}
	return reconnect(r.conn)
}

// reconnect makes the test's client connection to a restarted process
// connect now: after the process died, grpc-go backs off its reconnects
// (up to two minutes) and fails calls fast with the old "connection
// refused" meanwhile. Nil (not dialled yet) is fine.
func reconnect(conn *grpc.ClientConn) error {
	if conn == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn.ResetConnectBackoff()
	for st := conn.GetState(); st != connectivity.Ready; st = conn.GetState() {
		conn.Connect()
		if !conn.WaitForStateChange(ctx, st) {
			return fmt.Errorf("client connection to %s not ready: %s", conn.Target(), st)
		}
	}
	return nil
}

// kill kills the replica with SIGKILL.
func (r *replica) kill() {
	r.mu.Lock()
	p := r.proc
	r.mu.Unlock()
	p.Kill()
}

// addAuthorizer starts an authorizer following authority (one address, or
// several comma-separated with authorizer failover).
func (s *system) addAuthorizer(name, authority string, staleness time.Duration) (*authorizer, error) {
	a := &authorizer{name: name, addr: testproc.FreeAddr(s.t), authority: authority, staleness: staleness}
	a.conn = dial(s.t, a.addr)
	a.authz = sigilv1.NewAuthorizerServiceClient(a.conn)
	if err := s.startAuthorizer(a); err != nil {
		a.kill()
		return nil, err
	}
	s.authorizers = append(s.authorizers, a)
	return a, nil
}

// startAuthorizer starts (or restarts) an authorizer and waits until it
// is synced (SERVING).
func (s *system) startAuthorizer(a *authorizer) error {
	a.mu.Lock()
	a.runs++
	name := fmt.Sprintf("%s#%d", a.name, a.runs)
	a.mu.Unlock()
	p := testproc.StartWith(s.t, testproc.Options{Name: name}, testproc.MustBuild(s.t, "services/authorizer"),
		"--listen", a.addr, "--metrics-listen", "127.0.0.1:0",
		"--authority", a.authority, "--authority-token-file", filepath.Join(s.creds, "watch.token"),
		"--max-staleness", a.staleness.String(), "--shutdown-timeout", "5s")
	a.mu.Lock()
	a.proc = p
	a.mu.Unlock()
	if err := p.WaitRecord(30*time.Second, "listening", nil); err != nil {
		return err
	}
	if err := testproc.WaitServing(a.addr, 30*time.Second); err != nil {
		return err
	}
	return reconnect(a.conn)
}

func (a *authorizer) kill() {
	a.mu.Lock()
	p := a.proc
	a.mu.Unlock()
	p.Kill()
}

// mintRequest is a mint of one token of organization acme with a unique name.
func mintRequest(name string) *sigilv1.CreateTokenRequest {
	return &sigilv1.CreateTokenRequest{
		OrgId: "acme", Name: name, CreatedBy: "alice",
		Expiry: &sigilv1.CreateTokenRequest_Ttl{Ttl: durationpb.New(7 * 24 * time.Hour)},
		Grants: []*sigilv1.Grant{{Permissions: []string{"domain:view"}}},
	}
}

// call runs fn with a deadline.
func call[T any](ctx context.Context, timeout time.Duration, fn func(ctx context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return fn(ctx)
}
