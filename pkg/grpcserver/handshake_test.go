package grpcserver

import (
	"bytes"
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sigil-auth/sigil/internal/testpki"
	"github.com/sigil-auth/sigil/pkg/tlsconfig"
)

// TestHandshakeFailuresLoggedAndCounted: clients without a certificate
// fail the mTLS handshake; each is counted, the log gets one line per
// handshakeLogEvery naming the peer and the reason, and a good client
// still gets in.
func TestHandshakeFailuresLoggedAndCounted(t *testing.T) {
	pki := testpki.New(t, t.TempDir())
	serverTLS, err := tlsconfig.Server(pki.ServerCertFile, pki.ServerKeyFile, pki.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	logs := &bytes.Buffer{}
	reg := prometheus.NewRegistry()
	srv := New(Options{Logger: slog.New(slog.NewJSONHandler(logs, nil)), Registerer: reg, TLS: serverTLS})
	srv.SetServing(true)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	defer func() { srv.Shutdown(time.Second); <-done }()

	check := func(cfg *tls.Config) error {
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	for range 3 {
		if err := check(&tls.Config{RootCAs: pki.Pool}); err == nil {
			t.Fatal("a client without a certificate got in")
		}
	}
	if err := check(&tls.Config{RootCAs: pki.Pool, Certificates: []tls.Certificate{pki.Client}}); err != nil {
		t.Fatalf("a good client: %v", err)
	}
	failed := testutil.ToFloat64(srv.handshakeFailures())
	if failed < 3 {
		t.Errorf("sigil_tls_handshake_failures_total = %v, want at least 3", failed)
	}
	if n := strings.Count(logs.String(), `"msg":"TLS handshake failed"`); n != 1 {
		t.Errorf("%d handshake log lines, want 1 (rate-limited):\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), `"peer":"127.0.0.1:`) || !strings.Contains(logs.String(), "certificate") {
		t.Errorf("the log line lacks the peer or the reason:\n%s", logs.String())
	}
}

// TestCertExpiryMetricAndWarning: a server certificate ten days from its
// expiry is logged at WARN at start and its expiry is the gauge's value; a
// certificate a year from expiry is not logged.
func TestCertExpiryMetricAndWarning(t *testing.T) {
	dir := t.TempDir()
	pki := testpki.New(t, dir)
	now := time.Now()
	for _, tc := range []struct {
		name     string
		notAfter time.Time
		warn     bool
	}{
		{"ten days left", now.Add(10 * 24 * time.Hour), true},
		{"a year left", now.Add(365 * 24 * time.Hour), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			certFile, keyFile := pki.Issue(t, t.TempDir(), "server", now.Add(-time.Hour), tc.notAfter)
			serverTLS, err := tlsconfig.Server(certFile, keyFile, "")
			if err != nil {
				t.Fatal(err)
			}
			logs := &bytes.Buffer{}
			reg := prometheus.NewRegistry()
			srv := New(Options{Logger: slog.New(slog.NewJSONHandler(logs, nil)), Registerer: reg, TLS: serverTLS})
			defer srv.Shutdown(time.Second)
			warned := strings.Contains(logs.String(), "TLS certificate expires soon")
			if warned != tc.warn {
				t.Errorf("warned = %v, want %v; log:\n%s", warned, tc.warn, logs.String())
			}
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			var got float64 = -1
			for _, mf := range mfs {
				if mf.GetName() == "sigil_tls_certificate_expiry_timestamp_seconds" {
					m := mf.GetMetric()[0]
					if len(m.GetLabel()) != 1 || m.GetLabel()[0].GetValue() != CertServer {
						t.Errorf("labels %v, want cert=%q", m.GetLabel(), CertServer)
					}
					got = m.GetGauge().GetValue()
				}
			}
			if want := float64(tc.notAfter.Unix()); got != want {
				t.Errorf("sigil_tls_certificate_expiry_timestamp_seconds = %v, want %v", got, want)
			}
		})
	}
}
