package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/sigil-auth/sigil/internal/testproc"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

// proc is a running authority process.
type proc struct {
	*testproc.Proc
	t           testing.TB
	addr        string
	metricsAddr string
	dataDir     string
	conn        *grpc.ClientConn
	client      sigilv1.TokenAuthorityServiceClient
}

// authorityBin is the authority binary, built once for the test run.
func authorityBin(t testing.TB) string {
	t.Helper()
	return testproc.MustBuild(t, "services/authority")
}

// startProc starts the authority on loopback ports with dataDir and waits
// for its "listening" log line.
func startProc(t testing.TB, dataDir string, extra ...string) *proc {
	t.Helper()
	p, err := tryStart(t, dataDir, extra...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// tryStart starts the authority and returns an error, holding its logs, if
// it exits before it listens.
func tryStart(t testing.TB, dataDir string, extra ...string) (*proc, error) {
	t.Helper()
	args := append([]string{
		"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--data-dir", dataDir,
		"--key-activation-delay", "1500ms", "--shutdown-timeout", "5s", "--lock-timeout", "1s",
	}, extra...)
	tp := testproc.StartWith(t, testproc.Options{Name: "authority"}, authorityBin(t), args...)
	var listening, metrics struct{ Addr string }
	if err := tp.WaitRecord(30*time.Second, "listening", &listening); err != nil {
		tp.Kill()
		return nil, err
	}
	// Logged before "listening", unless --metrics-listen is empty.
	_ = tp.WaitRecord(0, "metrics listening", &metrics)
	conn, err := grpc.NewClient(listening.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { conn.Close() })
	return &proc{Proc: tp, t: t, addr: listening.Addr, metricsAddr: metrics.Addr, dataDir: dataDir,
		conn: conn, client: sigilv1.NewTokenAuthorityServiceClient(conn)}, nil
}

// kill sends SIGKILL and waits for the process.
func (p *proc) kill() {
	p.Kill()
	p.conn.Close()
}

// term sends SIGTERM and requires a clean exit; bound only guards against a
// hang.
func (p *proc) term(t testing.TB, bound time.Duration) {
	t.Helper()
	if err := p.Stop(bound); err != nil {
		t.Fatalf("%v\n%s", err, p.Logs.String())
	}
}

func (p *proc) secret(name string) string {
	p.t.Helper()
	b, err := os.ReadFile(filepath.Join(p.dataDir, name))
	if err != nil {
		p.t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func (p *proc) op() context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+p.secret("operator.token"))
}

func (p *proc) watchCtx() context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+p.secret("watch.token"))
}

func metadataCtx(kv ...string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), kv...)
}
