package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sigil-auth/sigil/internal/testpki"
	"github.com/sigil-auth/sigil/internal/testproc"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

// TestE2EFollowsAuthorityOverMutualTLS runs the authority with mTLS
// required: an authorizer given the CA and a client certificate syncs and
// enforces revocations; one without a client certificate, or without TLS,
// never becomes SERVING (it fails closed) and answers UNAVAILABLE.
func TestE2EFollowsAuthorityOverMutualTLS(t *testing.T) {
	p := testpki.New(t, t.TempDir())
	dataDir := t.TempDir()
	proc := start(t, "authority", authorityPkg, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
		"--data-dir", dataDir, "--shutdown-timeout", "5s",
		"--tls-cert", p.ServerCertFile, "--tls-key", p.ServerKeyFile, "--tls-client-ca", p.CAFile)
	conn, err := grpc.NewClient(proc.addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: p.Pool, Certificates: []tls.Certificate{p.Client}, MinVersion: tls.VersionTLS12,
	})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	a := &authority{proc: proc, dataDir: dataDir, client: sigilv1.NewTokenAuthorityServiceClient(conn)}

	z := startAuthorizer(t, a, "--authority-ca", p.CAFile, "--authority-cert", p.ClientCertFile, "--authority-key", p.ClientKeyFile)
	tok, id := a.mint(t)
	wantDecision(t, z, tok, 0, allowed)
	rev := a.revoke(t, id)
	wantDecision(t, z, tok, rev, sigilv1.DenyReason_DENY_REASON_REVOKED)

	// Both sides export their certificate's expiry: the authority its
	// server certificate, the authorizer its client certificate.
	leaf, err := x509.ParseCertificate(p.Client.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []struct {
		proc *testproc.Proc
		msg  string // the log record naming the metrics address
		cert string
	}{{proc.Proc, "metrics listening", "server"}, {z.Proc, "listening", "authority_client"}} {
		var rec struct {
			Addr        string
			MetricsAddr string `json:"metrics_addr"`
		}
		if err := m.proc.WaitRecord(5*time.Second, m.msg, &rec); err != nil {
			t.Fatal(err)
		}
		addr := rec.Addr
		if m.msg == "listening" {
			addr = rec.MetricsAddr
		}
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := fmt.Sprintf(`sigil_tls_certificate_expiry_timestamp_seconds{cert=%q} %s`, m.cert,
			strconv.FormatFloat(float64(leaf.NotAfter.Unix()), 'g', -1, 64))
		if !strings.Contains(string(body), want) {
			t.Errorf("%s metrics lack %q", m.proc.Name, want)
		}
	}

	for _, tc := range []struct {
		name string
		args []string
	}{
		{"no client certificate", []string{"--authority-ca", p.CAFile}},
		{"plaintext", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--authority", a.addr,
				"--authority-token-file", filepath.Join(dataDir, "watch.token"), "--max-staleness", "2s"}, tc.args...)
			bad := start(t, "authorizer", authorizerPkg, args...)
			// Several reconnect attempts (backoff is capped at a few seconds).
			time.Sleep(3 * time.Second)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			h, err := healthpb.NewHealthClient(bad.conn).Check(ctx, &healthpb.HealthCheckRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if h.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
				t.Fatalf("health = %v, want NOT_SERVING", h.GetStatus())
			}
			resp, err := sigilv1.NewAuthorizerServiceClient(bad.conn).CheckPermission(ctx, &sigilv1.CheckPermissionRequest{
				Token: tok, Permission: "domain:view", Resource: "domains/example.com",
			})
			if err == nil || resp.GetAllowed() {
				t.Fatalf("CheckPermission = %v, %v; want UNAVAILABLE", resp, err)
			}
		})
	}
}
