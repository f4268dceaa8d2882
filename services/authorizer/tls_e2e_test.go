package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

// testPKI is a CA with a server certificate for 127.0.0.1 and a client
// certificate, written as PEM files.
type testPKI struct {
	caFile, serverCert, serverKey, clientCert, clientKey string
	pool                                                 *x509.CertPool
	client                                               tls.Certificate
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	caKey, ca, caDER := issue(t, nil, nil, "sigil test ca", true, nil)
	p := &testPKI{pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	p.caFile = writePEMFile(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", caDER)
	srvKey, _, srvDER := issue(t, ca, caKey, "authority", false, []net.IP{net.ParseIP("127.0.0.1")})
	p.serverCert = writePEMFile(t, filepath.Join(dir, "server.pem"), "CERTIFICATE", srvDER)
	p.serverKey = writeKeyFile(t, filepath.Join(dir, "server.key"), srvKey)
	cliKey, _, cliDER := issue(t, ca, caKey, "authorizer", false, nil)
	p.clientCert = writePEMFile(t, filepath.Join(dir, "client.pem"), "CERTIFICATE", cliDER)
	p.clientKey = writeKeyFile(t, filepath.Join(dir, "client.key"), cliKey)
	p.client = tls.Certificate{Certificate: [][]byte{cliDER}, PrivateKey: cliKey}
	return p
}

func issue(t *testing.T, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, cn string, isCA bool, ips []net.IP) (*ecdsa.PrivateKey, *x509.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: ips, BasicConstraintsValid: true, IsCA: isCA,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent, parentKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return key, cert, der
}

func writePEMFile(t *testing.T, path, typ string, der []byte) string {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func writeKeyFile(t *testing.T, path string, key *ecdsa.PrivateKey) string {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return writePEMFile(t, path, "EC PRIVATE KEY", der)
}

// TestE2EFollowsAuthorityOverMutualTLS runs the authority with mTLS
// required: an authorizer given the CA and a client certificate syncs and
// enforces revocations; one without a client certificate, or without TLS,
// never becomes SERVING (it fails closed) and answers UNAVAILABLE.
func TestE2EFollowsAuthorityOverMutualTLS(t *testing.T) {
	p := newTestPKI(t)
	dataDir := t.TempDir()
	proc := start(t, "authority", authorityBin, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
		"--data-dir", dataDir, "--shutdown-timeout", "5s",
		"--tls-cert", p.serverCert, "--tls-key", p.serverKey, "--tls-client-ca", p.caFile)
	conn, err := grpc.NewClient(proc.addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: p.pool, Certificates: []tls.Certificate{p.client}, MinVersion: tls.VersionTLS12,
	})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	a := &authority{proc: proc, dataDir: dataDir, client: sigilv1.NewTokenAuthorityServiceClient(conn)}

	z := startAuthorizer(t, a, "--authority-ca", p.caFile, "--authority-cert", p.clientCert, "--authority-key", p.clientKey)
	tok, id := a.mint(t)
	wantDecision(t, z, tok, 0, allowed)
	rev := a.revoke(t, id)
	wantDecision(t, z, tok, rev, sigilv1.DenyReason_DENY_REASON_REVOKED)

	for _, tc := range []struct {
		name string
		args []string
	}{
		{"no client certificate", []string{"--authority-ca", p.caFile}},
		{"plaintext", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--authority", a.addr,
				"--authority-token-file", filepath.Join(dataDir, "watch.token"), "--max-staleness", "2s"}, tc.args...)
			bad := start(t, "authorizer", authorizerBin, args...)
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
