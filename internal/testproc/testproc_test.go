package testproc

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// fixture is a main package that logs a JSON record, then exits 0 on
// SIGTERM, or ignores SIGTERM with -stubborn.
const fixture = `package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stubborn := flag.Bool("stubborn", false, "ignore SIGTERM")
	flag.Parse()
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM)
	fmt.Println("starting")
	fmt.Fprintln(os.Stderr, ` + "`" + `{"msg":"listening","addr":"127.0.0.1:1"}` + "`" + `)
	for range c {
		if !*stubborn {
			fmt.Println("stopped")
			return
		}
	}
}
`

// newModule writes a module with the fixture as its package "cmd/fixture".
func newModule(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	write(t, filepath.Join(root, "go.mod"), "module example.com/fixture\n\ngo 1.26\n")
	write(t, filepath.Join(root, "cmd", "fixture", "main.go"), fixture)
	return root
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestSourceKey(t *testing.T) {
	root := newModule(t)
	key := func() string {
		t.Helper()
		k, err := sourceKey(root)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	k1 := key()
	if k1 != key() {
		t.Fatal("the key of the same sources changed")
	}
	write(t, filepath.Join(root, "cmd", "fixture", "main_test.go"), "package main\n")
	write(t, filepath.Join(root, ".hidden", "x.go"), "package x\n")
	if key() != k1 {
		t.Fatal("a test file or a hidden directory changed the key")
	}
	write(t, filepath.Join(root, "cmd", "fixture", "extra.go"), "package main\n")
	k2 := key()
	if k2 == k1 {
		t.Fatal("a new source file did not change the key")
	}
	write(t, filepath.Join(root, "cmd", "fixture", "extra.go"), "package main\n\n")
	k3 := key()
	if k3 == k2 {
		t.Fatal("an edited source file did not change the key")
	}
	write(t, filepath.Join(root, "go.mod"), "module example.com/fixture\n\ngo 1.26.0\n")
	if key() == k3 {
		t.Fatal("go.mod did not change the key")
	}
	t.Setenv("GOFLAGS", "-tags=testproc_key_test")
	if key() == k3 {
		t.Fatal("GOFLAGS did not change the key")
	}
}

// TestBuildOnce builds from several goroutines of two builders, as two test
// processes would: one go build, one path.
func TestBuildOnce(t *testing.T) {
	root, base := newModule(t), t.TempDir()
	var logA, logB Buffer
	a, b := newBuilder(root, base, &logA), newBuilder(root, base, &logB)
	paths := make([]string, 6)
	var wg sync.WaitGroup
	for i := range paths {
		bl := a
		if i%2 == 1 {
			bl = b
		}
		wg.Go(func() {
			p, err := bl.build("cmd/fixture")
			if err != nil {
				t.Error(err)
			}
			paths[i] = p
		})
	}
	wg.Wait()
	for _, p := range paths {
		if p != paths[0] {
			t.Fatalf("paths differ: %v", paths)
		}
	}
	if n := a.built + b.built; n != 1 {
		t.Fatalf("%d builds, want 1", n)
	}
	if got := logA.String() + logB.String(); strings.Count(got, "testproc: built cmd/fixture in ") != 1 {
		t.Fatalf("build log %q", got)
	}
	if filepath.Base(paths[0]) != "fixture" || !strings.HasPrefix(paths[0], base) {
		t.Fatalf("binary at %s", paths[0])
	}

	// A new process with the same sources reuses it; changed sources build
	// anew.
	c := newBuilder(root, base, &Buffer{})
	if p, err := c.build("cmd/fixture"); err != nil || p != paths[0] || c.built != 0 {
		t.Fatalf("same sources: %s, %v, %d builds", p, err, c.built)
	}
	write(t, filepath.Join(root, "cmd", "fixture", "extra.go"), "package main\n")
	d := newBuilder(root, base, &Buffer{})
	if p, err := d.build("cmd/fixture"); err != nil || p == paths[0] || d.built != 1 {
		t.Fatalf("changed sources: %s, %v, %d builds", p, err, d.built)
	}
}

func TestBuildError(t *testing.T) {
	root := newModule(t)
	write(t, filepath.Join(root, "cmd", "broken", "main.go"), "package main\n\nfunc main() { undefined() }\n")
	_, err := newBuilder(root, t.TempDir(), &Buffer{}).build("cmd/broken")
	if err == nil || !strings.Contains(err.Error(), "undefined") {
		t.Fatalf("err = %v, want the compiler's message", err)
	}
}

func fixtureBin(t *testing.T) string {
	t.Helper()
	p, err := newBuilder(newModule(t), t.TempDir(), &Buffer{}).build("cmd/fixture")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestProcLogsStopAndReap(t *testing.T) {
	bin := fixtureBin(t)
	t.Setenv("SIGIL_TESTPROC_LEAK", "1")
	p := StartWith(t, Options{Env: []string{"FIXTURE=1"}}, bin)
	var rec struct{ Addr string }
	if err := p.WaitRecord(10*time.Second, "listening", &rec); err != nil {
		t.Fatal(err)
	}
	if rec.Addr != "127.0.0.1:1" {
		t.Fatalf("record addr %q", rec.Addr)
	}
	if err := p.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if !p.Exited() {
		t.Fatal("not reaped after Stop")
	}
	// Reaped: the pid is gone (no zombie left to signal).
	if err := syscall.Kill(p.PID(), 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("signal 0 to the stopped pid: %v", err)
	}
	logs := p.Logs.String()
	for _, want := range []string{"starting\n", `"msg":"listening"`, "stopped\n"} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	}
}

func TestStopKillsAfterBound(t *testing.T) {
	p := Start(t, fixtureBin(t), "-stubborn")
	if _, err := p.WaitLine(10*time.Second, func(l string) bool { return l == "starting" }); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(300 * time.Millisecond); !errors.Is(err, ErrStopTimeout) {
		t.Fatalf("Stop of a process ignoring SIGTERM: %v", err)
	}
	if !p.Exited() {
		t.Fatal("not reaped after SIGKILL")
	}
}

func TestEnvDropsSigilVariables(t *testing.T) {
	t.Setenv("SIGIL_AUTHORITY_LISTEN", "x")
	for _, kv := range Env() {
		if strings.HasPrefix(kv, "SIGIL_") {
			t.Fatalf("Env has %s", kv)
		}
	}
	p := StartWith(t, Options{Env: []string{"SIGIL_X=given"}}, "/bin/sh", "-c", "env")
	if err := p.Err(); err != nil {
		t.Fatal(err)
	}
	out := p.Logs.String()
	if strings.Contains(out, "SIGIL_AUTHORITY_LISTEN") || !strings.Contains(out, "SIGIL_X=given") {
		t.Fatalf("environment:\n%s", out)
	}
}

func TestWaitLineFailsWhenTheProcessExits(t *testing.T) {
	p := Start(t, "/bin/sh", "-c", "echo bye; exit 3")
	_, err := p.WaitLine(10*time.Second, func(string) bool { return false })
	if err == nil || !strings.Contains(err.Error(), "bye") || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("err = %v", err)
	}
}

func TestGroupSignal(t *testing.T) {
	// The shell's child would not see a signal sent to the shell alone. (A
	// background job of sh ignores SIGINT, so SIGHUP stands for the stop
	// signal.)
	p := StartWith(t, Options{Group: true, StopSignal: syscall.SIGHUP}, "/bin/sh", "-c",
		`(trap 'echo child stopped; exit 0' HUP; sleep 60 & wait) & echo started; wait`)
	if _, err := p.WaitLine(10*time.Second, func(l string) bool { return l == "started" }); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(10 * time.Second); errors.Is(err, ErrStopTimeout) {
		t.Fatal(err)
	}
	if !strings.Contains(p.Logs.String(), "child stopped") {
		t.Fatalf("the child did not get the signal:\n%s", p.Logs.String())
	}
}

func TestWaitServing(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(s, hs)
	go s.Serve(l)
	defer s.Stop()
	if err := WaitServing(l.Addr().String(), 200*time.Millisecond); err == nil {
		t.Fatal("NOT_SERVING taken for SERVING")
	}
	time.AfterFunc(100*time.Millisecond, func() { hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING) })
	if err := WaitServing(l.Addr().String(), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if addr := FreeAddr(t); WaitServing(addr, 100*time.Millisecond) == nil {
		t.Fatal("nothing listening, yet SERVING")
	}
}
