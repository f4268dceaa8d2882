package healthcheck

import (
	"bytes"
	"net"
	"strings"
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMainExitCodes(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(lis)
	defer srv.Stop()
	addr := lis.Addr().String()

	// A closed port: nothing listens there once the listener is closed.
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()

	tests := []struct {
		name     string
		status   healthpb.HealthCheckResponse_ServingStatus
		args     []string
		wantCode int
		wantOut  string
	}{
		{"serving", healthpb.HealthCheckResponse_SERVING, nil, 0, "SERVING"},
		{"not serving", healthpb.HealthCheckResponse_NOT_SERVING, nil, 1, "NOT_SERVING"},
		{"unknown service", healthpb.HealthCheckResponse_SERVING, []string{"--service", "nope.Service"}, 1, "NotFound"},
		{"nothing listening", healthpb.HealthCheckResponse_SERVING, []string{"--addr", deadAddr, "--timeout", "500ms"}, 1, deadAddr},
		{"bad flag", healthpb.HealthCheckResponse_SERVING, []string{"--bogus"}, 2, "bogus"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hs.SetServingStatus("", tc.status)
			var out bytes.Buffer
			code := Main(tc.args, addr, &out)
			if code != tc.wantCode {
				t.Fatalf("exit code = %d, want %d (output %q)", code, tc.wantCode, out.String())
			}
			if !strings.Contains(out.String(), tc.wantOut) {
				t.Fatalf("output %q lacks %q", out.String(), tc.wantOut)
			}
		})
	}
}
