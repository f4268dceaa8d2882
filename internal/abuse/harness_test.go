package abuse

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/sigil-auth/sigil/internal/testproc"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

// svc is a running binary: its gRPC and metrics addresses and a client
// connection.
type svc struct {
	*testproc.Proc
	addr, metrics string
	conn          *grpc.ClientConn
}

func dial(t testing.TB, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// startAuthority runs the authority on loopback with a fresh data directory.
func startAuthority(t testing.TB, extra ...string) (*svc, string) {
	t.Helper()
	dir := t.TempDir()
	args := append([]string{"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--data-dir", dir,
		"--key-activation-delay", "1500ms", "--shutdown-timeout", "5s"}, extra...)
	p := testproc.StartWith(t, testproc.Options{Name: "authority"}, testproc.MustBuild(t, "services/authority"), args...)
	var lis, met struct{ Addr string }
	if err := p.WaitRecord(30*time.Second, "listening", &lis); err != nil {
		t.Fatal(err)
	}
	_ = p.WaitRecord(0, "metrics listening", &met)
	if err := testproc.WaitServing(lis.Addr, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	return &svc{Proc: p, addr: lis.Addr, metrics: met.Addr, conn: dial(t, lis.Addr)}, dir
}

// startAuthorizer runs an authorizer following the authority whose data
// directory is dir, and waits until it serves.
func startAuthorizer(t testing.TB, authority *svc, dir string, extra ...string) *svc {
	t.Helper()
	args := append([]string{"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--authority", authority.addr,
		"--authority-token-file", filepath.Join(dir, "watch.token"), "--shutdown-timeout", "5s"}, extra...)
	p := testproc.StartWith(t, testproc.Options{Name: "authorizer"}, testproc.MustBuild(t, "services/authorizer"), args...)
	var lis struct {
		Addr        string
		MetricsAddr string `json:"metrics_addr"`
	}
	if err := p.WaitRecord(30*time.Second, "listening", &lis); err != nil {
		t.Fatal(err)
	}
	if err := testproc.WaitServing(lis.Addr, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	return &svc{Proc: p, addr: lis.Addr, metrics: lis.MetricsAddr, conn: dial(t, lis.Addr)}
}

// operator returns a context carrying the operator credential of dir.
func operator(t testing.TB, dir string) context.Context {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "operator.token"))
	if err != nil {
		t.Fatal(err)
	}
	return withCred(context.Background(), strings.TrimSpace(string(b)))
}

func withCred(ctx context.Context, cred string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+cred)
}

func watchCred(t testing.TB, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "watch.token"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// metric reads one sample (name with its labels, as exposed) from the
// service's /metrics.
func (s *svc) metric(t testing.TB, sample string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + s.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("metric %s not exposed by %s", sample, s.metrics)
	return 0
}

// peakRSS returns the process's peak resident set (VmHWM), in MiB.
func (s *svc) peakRSS(t testing.TB) float64 {
	t.Helper()
	return s.procStatus(t, "VmHWM")
}

// rss returns the process's resident set now (VmRSS), in MiB.
func (s *svc) rss(t testing.TB) float64 {
	t.Helper()
	return s.procStatus(t, "VmRSS")
}

// procStatus returns a field of /proc/<pid>/status given in kB, in MiB.
func (s *svc) procStatus(t testing.TB, field string) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.PID()))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb / 1024
		}
	}
	t.Fatalf("no %s in /proc status", field)
	return 0
}

// client returns the service's clients.
func (s *svc) authority() sigilv1.TokenAuthorityServiceClient {
	return sigilv1.NewTokenAuthorityServiceClient(s.conn)
}
func (s *svc) authorizer() sigilv1.AuthorizerServiceClient {
	return sigilv1.NewAuthorizerServiceClient(s.conn)
}
