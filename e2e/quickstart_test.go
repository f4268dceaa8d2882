package e2e

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/pkg/healthcheck"
)

// syncBuffer is a bytes.Buffer safe for a writer goroutine and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// runDev starts `go tool task dev` in dir with its own addresses, waits for
// its ready message, checks both services answer SERVING, then stops it
// with Ctrl-C (SIGINT to its process group) and returns its output.
func runDev(t *testing.T, dir string, env []string) string {
	t.Helper()
	authority, authorizer := freeAddr(t), freeAddr(t)
	cmd := exec.Command("go", "tool", "task", "dev")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Env = append(cmd.Env,
		"SIGIL_DEV_AUTHORITY="+authority,
		"SIGIL_DEV_AUTHORIZER="+authorizer,
		"SIGIL_DEV_AUTHORITY_METRICS="+freeAddr(t),
		"SIGIL_DEV_AUTHORIZER_METRICS="+freeAddr(t),
	)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out syncBuffer
	pr, pw := io.Pipe()
	cmd.Stdout = io.MultiWriter(&out, pw)
	cmd.Stderr = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait(); pw.Close() }()
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "Sigil is running.") {
				close(ready)
				break
			}
		}
		io.Copy(io.Discard, pr)
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("task dev exited before it was ready: %v\n%s", err, out.String())
	case <-time.After(4 * time.Minute):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		t.Fatalf("task dev not ready after 4 minutes:\n%s", out.String())
	}
	for _, addr := range []string{authority, authorizer} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := healthcheck.Check(ctx, addr, "", nil)
		cancel()
		if err != nil {
			t.Errorf("%s: %v", addr, err)
		}
	}
	// Ctrl-C in a terminal signals the whole foreground process group.
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		t.Fatalf("task dev did not stop within 30s of Ctrl-C:\n%s", out.String())
	}
	for _, addr := range []string{authority, authorizer} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if err := healthcheck.Check(ctx, addr, "", nil); err == nil {
			t.Errorf("%s still serving after Ctrl-C", addr)
		}
		cancel()
	}
	return out.String()
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
