package app

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestWriteProbeStallsAndRecovers drives the write probe with a store
// stand-in whose commit hangs (as on a frozen disk), then fails (a
// read-only disk), then works: health goes NOT_SERVING with an ERROR line
// while writes cannot commit, the stalled gauge follows, and health comes
// back when a probe commits. (e2e.TestHungDisk does the same with a real
// frozen file system, where root is available.)
func TestWriteProbeStallsAndRecovers(t *testing.T) {
	var mu sync.Mutex
	mode := "ok"
	release := make(chan struct{})
	probe := func(ctx context.Context) error {
		mu.Lock()
		m := mode
		mu.Unlock()
		switch m {
		case "hang":
			<-release // a commit stuck in fsync ignores its context
			return ctx.Err()
		case "fail":
			return errors.New("write sigil.db: read-only file system")
		}
		return nil
	}
	var states []bool
	var smu sync.Mutex
	stall := func(on bool) { smu.Lock(); states = append(states, on); smu.Unlock() }
	logs := &bytes.Buffer{}
	var lmu sync.Mutex
	logger := slog.New(slog.NewJSONHandler(lockedWriter{&lmu, logs}, nil))
	reg := prometheus.NewRegistry()
	p := newWriteProbe(probe, 10*time.Millisecond, 50*time.Millisecond, logger, stall, reg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				lmu.Lock()
				defer lmu.Unlock()
				t.Fatalf("%s: not reached; log:\n%s", what, logs.String())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	last := func() (bool, int) {
		smu.Lock()
		defer smu.Unlock()
		if len(states) == 0 {
			return false, 0
		}
		return states[len(states)-1], len(states)
	}
	logHas := func(s string) bool { lmu.Lock(); defer lmu.Unlock(); return strings.Contains(logs.String(), s) }

	mu.Lock()
	mode = "hang"
	mu.Unlock()
	waitFor("stalled on a hanging commit", func() bool { on, _ := last(); return on })
	if !logHas("store writes stalled") || testutil.ToFloat64(p.stalled) != 1 {
		t.Fatalf("stalled: log line %v, gauge %v", logHas("store writes stalled"), testutil.ToFloat64(p.stalled))
	}
	mu.Lock()
	mode = "fail"
	mu.Unlock()
	close(release)
	// Still failing: stays stalled (no flapping back to SERVING).
	time.Sleep(100 * time.Millisecond)
	if on, _ := last(); !on {
		t.Fatal("health came back while writes were failing")
	}
	mu.Lock()
	mode = "ok"
	mu.Unlock()
	waitFor("serving again once a probe commits", func() bool { on, n := last(); return !on && n >= 2 })
	if !logHas("store writes commit again") || testutil.ToFloat64(p.stalled) != 0 {
		t.Fatalf("recovered: log line %v, gauge %v", logHas("store writes commit again"), testutil.ToFloat64(p.stalled))
	}
	if testutil.ToFloat64(p.failures) < 1 {
		t.Errorf("sigil_store_write_probe_failures_total = %v, want at least 1", testutil.ToFloat64(p.failures))
	}
}

// lockedWriter serialises writes to a buffer shared with the test.
type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}
