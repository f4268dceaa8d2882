package app

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/sigil-auth/sigil/internal/testproc"
	"github.com/sigil-auth/sigil/services/authorizer/internal/config"
)

// TestStartFailureLeavesNothingRunning: a start that fails after the gRPC
// server was built (here: the metrics address is taken) returns its error
// and leaves no goroutine behind, the server's call workers included.
func TestStartFailureLeavesNothingRunning(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg, err := config.Parse([]string{
		"--listen", "127.0.0.1:0", "--metrics-listen", taken.Addr().String(), "--authority", "127.0.0.1:1",
	}, func(string) (string, bool) { return "", false }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	err = run(context.Background(), cfg, Options{LogOut: &testproc.Buffer{}})
	if err == nil || !strings.Contains(err.Error(), "metrics listen") {
		t.Fatalf("run = %v, want the metrics listen error", err)
	}
}
