package tlsconfig

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// writePair writes a self-signed certificate and its key, and returns their paths.
func writePair(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "sigil-test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func TestServer(t *testing.T) {
	dir := t.TempDir()
	cert, key := writePair(t, dir)
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name             string
		cert, key, ca    string
		wantNil, wantErr bool
		wantClientAuth   tls.ClientAuthType
	}{
		{name: "plaintext", wantNil: true},
		{name: "tls", cert: cert, key: key, wantClientAuth: tls.NoClientCert},
		{name: "mtls", cert: cert, key: key, ca: cert, wantClientAuth: tls.RequireAndVerifyClientCert},
		{name: "cert without key", cert: cert, wantErr: true},
		{name: "key without cert", key: key, wantErr: true},
		{name: "client CA without server cert", ca: cert, wantErr: true},
		{name: "missing file", cert: filepath.Join(dir, "nope.pem"), key: key, wantErr: true},
		{name: "CA file without certificates", cert: cert, key: key, ca: notPEM, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Server(tc.cert, tc.key, tc.ca)
			if tc.wantErr {
				if err == nil {
					t.Fatal("want an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantNil {
				if cfg != nil {
					t.Fatal("want nil (plaintext)")
				}
				return
			}
			if len(cfg.Certificates) != 1 || cfg.MinVersion != tls.VersionTLS12 || cfg.ClientAuth != tc.wantClientAuth {
				t.Fatalf("config = %d certs, min %x, client auth %v", len(cfg.Certificates), cfg.MinVersion, cfg.ClientAuth)
			}
			if tc.ca != "" && cfg.ClientCAs == nil {
				t.Fatal("client CAs not loaded")
			}
		})
	}
}

func TestClient(t *testing.T) {
	dir := t.TempDir()
	cert, key := writePair(t, dir)
	tests := []struct {
		name              string
		ca, cert, key     string
		wantNil, wantErr  bool
		wantRoots, wantCC bool
	}{
		{name: "plaintext", wantNil: true},
		{name: "server CA only", ca: cert, wantRoots: true},
		{name: "mtls", ca: cert, cert: cert, key: key, wantRoots: true, wantCC: true},
		{name: "cert without key", ca: cert, cert: cert, wantErr: true},
		{name: "missing CA", ca: filepath.Join(dir, "nope.pem"), wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Client(tc.ca, tc.cert, tc.key)
			if tc.wantErr {
				if err == nil {
					t.Fatal("want an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantNil {
				if cfg != nil {
					t.Fatal("want nil (plaintext)")
				}
				return
			}
			if (cfg.RootCAs != nil) != tc.wantRoots || (len(cfg.Certificates) == 1) != tc.wantCC {
				t.Fatalf("roots %v, client certs %d", cfg.RootCAs != nil, len(cfg.Certificates))
			}
		})
	}
}
