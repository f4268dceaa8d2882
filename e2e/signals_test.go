package e2e

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/internal/testproc"
)

// TestHangupDoesNotKill sends SIGHUP, the usual reload signal, to both
// services: each logs it and keeps serving (its default action would end
// the process with status 129), then stops cleanly on SIGTERM.
func TestHangupDoesNotKill(t *testing.T) {
	dir := t.TempDir()
	authority, authorizer := testproc.FreeAddr(t), testproc.FreeAddr(t)
	a := testproc.Start(t, bin(t, "authority"), "--data-dir", filepath.Join(dir, "data"),
		"--listen", authority, "--metrics-listen", testproc.FreeAddr(t))
	if err := testproc.WaitServing(authority, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	z := testproc.Start(t, bin(t, "authorizer"), "--authority", authority,
		"--authority-token-file", filepath.Join(dir, "data", "watch.token"),
		"--listen", authorizer, "--metrics-listen", testproc.FreeAddr(t))
	if err := testproc.WaitServing(authorizer, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct {
		proc *testproc.Proc
		addr string
	}{{a, authority}, {z, authorizer}} {
		for range 2 {
			if err := p.proc.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := p.proc.WaitLine(10*time.Second, func(l string) bool { return strings.Contains(l, "SIGHUP received") }); err != nil {
			t.Fatalf("%s: %v", p.proc.Name, err)
		}
		if err := testproc.WaitServing(p.addr, 5*time.Second); err != nil || p.proc.Exited() {
			t.Fatalf("%s after SIGHUP: exited %v, %v", p.proc.Name, p.proc.Exited(), err)
		}
	}
	for _, p := range []*testproc.Proc{z, a} {
		if err := p.Stop(20 * time.Second); err != nil {
			t.Errorf("%s: %v", p.Name, err)
		}
	}
}
