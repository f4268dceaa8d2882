package app

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// TestStartFailureLeavesNothingRunning: a start that fails after the gRPC
// server was built (the listen or the metrics address is taken) returns
// its error and leaves no goroutine behind, the server's call workers
// included.
func TestStartFailureLeavesNothingRunning(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for _, c := range []struct{ name, want string }{{"listen", "listen "}, {"metrics", "metrics listen"}} {
		t.Run(c.name, func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			cfg := testConfig(t)
			if c.name == "listen" {
				cfg.Listen = taken.Addr().String()
			} else {
				cfg.MetricsListen = taken.Addr().String()
			}
			err := RunWithOptions(context.Background(), cfg, Options{Stderr: io.Discard})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("run = %v, want the %q error", err, c.want)
			}
		})
	}
}
