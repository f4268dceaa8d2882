package e2e

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sigil-auth/sigil/internal/testproc"
	"github.com/sigil-auth/sigil/pkg/healthcheck"
)

// runDev starts `go tool task dev` in dir with its own addresses, waits for
// its ready message, checks both services answer SERVING, then stops it
// with Ctrl-C (SIGINT to its process group) and returns its output.
func runDev(t *testing.T, dir string, env []string) string {
	t.Helper()
	authority, authorizer := testproc.FreeAddr(t), testproc.FreeAddr(t)
	env = append(env,
		"SIGIL_DEV_AUTHORITY="+authority,
		"SIGIL_DEV_AUTHORIZER="+authorizer,
		"SIGIL_DEV_AUTHORITY_METRICS="+testproc.FreeAddr(t),
		"SIGIL_DEV_AUTHORIZER_METRICS="+testproc.FreeAddr(t),
	)
	// Ctrl-C in a terminal signals the whole foreground process group.
	p := testproc.StartWith(t, testproc.Options{Name: "task dev", Dir: dir, Env: env, Group: true, StopSignal: syscall.SIGINT},
		"go", "tool", "task", "dev")
	if _, err := p.WaitLine(4*time.Minute, func(line string) bool { return strings.Contains(line, "Sigil is running.") }); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{authority, authorizer} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := healthcheck.Check(ctx, addr, "", nil)
		cancel()
		if err != nil {
			t.Errorf("%s: %v", addr, err)
		}
	}
	// Only a hang fails here; the exit status of an interrupted task is
	// not the point.
	if err := p.Stop(30 * time.Second); errors.Is(err, testproc.ErrStopTimeout) {
		t.Fatalf("%v:\n%s", err, p.Logs.String())
	}
	for _, addr := range []string{authority, authorizer} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if err := healthcheck.Check(ctx, addr, "", nil); err == nil {
			t.Errorf("%s still serving after Ctrl-C", addr)
		}
		cancel()
	}
	return p.Logs.String()
}

// TestQuickStart runs the README's run command from a clean copy of the
// repository: both services reach SERVING, Ctrl-C stops them, and a second
// run reuses the data of the first.
func TestQuickStart(t *testing.T) {
	dir := copyRepo(t)
	out := runDev(t, dir, nil)
	for _, want := range []string{"authority is SERVING", "authorizer is SERVING", "operator token: ./data/operator.token", "stopped"} {
		if !strings.Contains(out, want) {
			t.Errorf("first run output lacks %q:\n%s", want, out)
		}
	}
	first, err := os.ReadFile(filepath.Join(dir, "data", "operator.token"))
	if err != nil {
		t.Fatalf("operator token not in ./data: %v", err)
	}

	out = runDev(t, dir, nil)
	second, err := os.ReadFile(filepath.Join(dir, "data", "operator.token"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, second) {
		t.Error("second run made a new operator token instead of reusing ./data")
	}
	if strings.Contains(out, strings.TrimSpace(string(second))) {
		t.Error("the run command printed the operator token itself")
	}
}

// TestDevRefusesABusyPort starts a foreign gRPC server, SERVING over the
// health protocol, on the authority's address, then runs the README's run
// command: it must fail at once with one line naming the port and the
// variable that moves it, and never report the foreign server as ours.
func TestDevRefusesABusyPort(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	foreign := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(foreign, hs)
	go func() { _ = foreign.Serve(lis) }()
	t.Cleanup(foreign.Stop)
	addr := lis.Addr().String()

	dir := copyRepo(t)
	p := testproc.StartWith(t, testproc.Options{Name: "task dev", Dir: dir, Group: true, StopSignal: syscall.SIGINT, Env: []string{
		"SIGIL_DEV_AUTHORITY=" + addr,
		"SIGIL_DEV_AUTHORIZER=" + testproc.FreeAddr(t),
		"SIGIL_DEV_AUTHORITY_METRICS=" + testproc.FreeAddr(t),
		"SIGIL_DEV_AUTHORIZER_METRICS=" + testproc.FreeAddr(t),
	}}, "go", "tool", "task", "dev")
	select {
	case <-p.Done():
	case <-time.After(4 * time.Minute): // compiling task on a cold cache; only a hang fails here
		t.Fatalf("dev still running with its port taken:\n%s", p.Logs.String())
	}
	out := p.Logs.String()
	if p.Err() == nil {
		t.Errorf("dev exited 0 with its port taken:\n%s", out)
	}
	port := addr[strings.LastIndex(addr, ":")+1:]
	want := "dev: port " + port + " (" + addr + ") is already in use; stop what holds it or set SIGIL_DEV_AUTHORITY to another address for the authority"
	if !strings.Contains(out, want) {
		t.Errorf("output lacks %q:\n%s", want, out)
	}
	for _, never := range []string{"SERVING", "building services", "Sigil is running"} {
		if strings.Contains(out, never) {
			t.Errorf("output has %q although the port was taken:\n%s", never, out)
		}
	}
}
