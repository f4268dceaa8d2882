package app

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/internal/testproc"
)

// TestStopBoundedAndTruthful: a stop step that never finishes (a hook,
// standing for a database close that hangs) makes the run fail within
// --shutdown-timeout with an ERROR line, and "stopped" is not logged; a
// stop that finishes logs "stopped" last.
func TestStopBoundedAndTruthful(t *testing.T) {
	for _, blocked := range []bool{true, false} {
		cfg := testConfig(t)
		cfg.ShutdownTimeout = time.Second
		logs := &testproc.Buffer{}
		block := make(chan struct{})
		opts := Options{Stderr: logs, LookupEnv: func(string) (string, bool) { return "", false }}
		if blocked {
			opts.stopHook = func() { <-block }
		}
		ready := make(chan struct{})
		opts.Ready = func(net.Addr, net.Addr) { close(ready) }
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- RunWithOptions(ctx, cfg, opts) }()
		select {
		case <-ready:
		case err := <-done:
			t.Fatal(err)
		case <-time.After(30 * time.Second):
			t.Fatal("not ready")
		}
		cancel()
		var err error
		select {
		case err = <-done:
		case <-time.After(30 * time.Second): // guards a hang only
			t.Fatal("the run did not return")
		}
		close(block)
		out := logs.String()
		if blocked {
			if err == nil || !strings.Contains(err.Error(), "--shutdown-timeout") {
				t.Fatalf("blocked stop: err = %v, want one naming --shutdown-timeout", err)
			}
			if !strings.Contains(out, "stop did not finish within --shutdown-timeout") || strings.Contains(out, `"msg":"stopped"`) {
				t.Fatalf("blocked stop: logs do not tell it, or claim stopped:\n%s", out)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if last := lines[len(lines)-1]; !strings.Contains(last, `"msg":"stopped"`) {
			t.Fatalf("last line %s, want stopped", last)
		}
	}
}
