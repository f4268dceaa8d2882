package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

// binary is the authority built once for every test of this package.
var binary string

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "sigil-authority-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "authority")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// lockedBuffer collects a process's stderr.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// proc is a running authority process.
type proc struct {
	t           testing.TB
	cmd         *exec.Cmd
	logs        *lockedBuffer
	addr        string
	metricsAddr string
	dataDir     string
	done        chan struct{}
	exitErr     error
	conn        *grpc.ClientConn
	client      sigilv1.TokenAuthorityServiceClient
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

func tryStart(t testing.TB, dataDir string, extra ...string) (*proc, error) {
	args := append([]string{
		"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--data-dir", dataDir,
		"--key-activation-delay", "1500ms", "--shutdown-timeout", "5s", "--lock-timeout", "1s",
	}, extra...)
	cmd := exec.Command(binary, args...)
	cmd.Env = filterEnv(os.Environ())
	logs := &lockedBuffer{}
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	cmd.Stdout = logs
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{t: t, cmd: cmd, logs: logs, dataDir: dataDir, done: make(chan struct{})}
	addrs := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var metrics string
		for sc.Scan() {
			line := sc.Text()
			logs.Write([]byte(line + "\n"))
			var rec struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil {
				switch rec.Msg {
				case "metrics listening":
					metrics = rec.Addr
				case "listening":
					select {
					case addrs <- [2]string{rec.Addr, metrics}:
					default:
					}
				}
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	go func() {
		p.exitErr = cmd.Wait()
		pw.Close()
		close(p.done)
	}()
	select {
	case a := <-addrs:
		p.addr, p.metricsAddr = a[0], a[1]
	case <-p.done:
		return nil, fmt.Errorf("authority exited before listening: %v\n%s", p.exitErr, logs.String())
	case <-time.After(20 * time.Second):
		p.kill()
		return nil, fmt.Errorf("authority did not listen in time:\n%s", logs.String())
	}
	conn, err := grpc.NewClient(p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		p.kill()
		return nil, err
	}
	p.conn = conn
	p.client = sigilv1.NewTokenAuthorityServiceClient(conn)
	t.Cleanup(func() { p.kill() })
	return p, nil
}

func filterEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "SIGIL_AUTHORITY_") {
			out = append(out, kv)
		}
	}
	return out
}

// kill sends SIGKILL and waits for the process.
func (p *proc) kill() {
	if p.conn != nil {
		p.conn.Close()
	}
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// term sends SIGTERM and returns how long the process took to exit.
func (p *proc) term(t testing.TB, bound time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(bound):
		p.kill()
		t.Fatalf("authority did not stop within %s after SIGTERM", bound)
	}
	if p.exitErr != nil {
		t.Fatalf("authority exited with %v\n%s", p.exitErr, p.logs.String())
	}
	return time.Since(start)
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
