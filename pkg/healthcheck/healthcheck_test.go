package healthcheck

import (
	"bytes"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sigil-auth/sigil/internal/testpki"
	"github.com/sigil-auth/sigil/pkg/tlsconfig"
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

// TestMainTLS probes a server that requires a client certificate (mTLS):
// without TLS flags, or with a server certificate it cannot verify, the
// probe fails; with the CA and a client certificate it reports SERVING.
func TestMainTLS(t *testing.T) {
	dir := t.TempDir()
	pki := testpki.New(t, dir)
	serverTLS, err := tlsconfig.Server(pki.ServerCertFile, pki.ServerKeyFile, pki.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(serverTLS)))
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(lis)
	defer srv.Stop()
	addr := lis.Addr().String()
	otherCA := testpki.New(t, t.TempDir()).CAFile

	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
	}{
		{"plaintext against TLS", nil, 1, addr},
		{"mTLS", []string{"--tls-ca", pki.CAFile, "--tls-cert", pki.ClientCertFile, "--tls-key", pki.ClientKeyFile}, 0, "SERVING"},
		{"no client certificate", []string{"--tls-ca", pki.CAFile}, 1, addr},
		{"unknown CA", []string{"--tls-ca", otherCA, "--tls-cert", pki.ClientCertFile, "--tls-key", pki.ClientKeyFile}, 1, "certificate"},
		{"wrong server name", []string{"--tls-ca", pki.CAFile, "--tls-cert", pki.ClientCertFile, "--tls-key", pki.ClientKeyFile, "--tls-server-name", "elsewhere"}, 1, "certificate"},
		{"client certificate without CA", []string{"--tls-cert", pki.ClientCertFile, "--tls-key", pki.ClientKeyFile}, 2, "need --tls-ca"},
		{"missing CA file", []string{"--tls-ca", filepath.Join(dir, "nope.pem")}, 2, "nope.pem"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			code := Main(append([]string{"--addr", addr, "--timeout", "2s"}, tc.args...), addr, &out)
			if code != tc.wantCode {
				t.Fatalf("exit code = %d, want %d (output %q)", code, tc.wantCode, out.String())
			}
			if !strings.Contains(out.String(), tc.wantOut) {
				t.Fatalf("output %q lacks %q", out.String(), tc.wantOut)
			}
		})
	}
}
