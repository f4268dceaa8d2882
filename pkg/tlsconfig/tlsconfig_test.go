package tlsconfig

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"

	"github.com/sigil-auth/sigil/internal/testpki"
)

func TestServer(t *testing.T) {
	dir := t.TempDir()
	pk := testpki.New(t, dir)
	cert, key, ca := pk.ServerCertFile, pk.ServerKeyFile, pk.CAFile
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
		{name: "mtls", cert: cert, key: key, ca: ca, wantClientAuth: tls.RequireAndVerifyClientCert},
		{name: "cert without key", cert: cert, wantErr: true},
		{name: "key without cert", key: key, wantErr: true},
		{name: "client CA without server cert", ca: ca, wantErr: true},
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
			if _, ok := Expiry(cfg); !ok || cfg.MinVersion != tls.VersionTLS12 || cfg.ClientAuth != tc.wantClientAuth {
				t.Fatalf("config: certificate %v, min %x, client auth %v", ok, cfg.MinVersion, cfg.ClientAuth)
			}
			if tc.ca != "" && cfg.ClientCAs == nil {
				t.Fatal("client CAs not loaded")
			}
		})
	}
}

func TestClient(t *testing.T) {
	dir := t.TempDir()
	pk := testpki.New(t, dir)
	ca, cert, key := pk.CAFile, pk.ClientCertFile, pk.ClientKeyFile
	tests := []struct {
		name              string
		ca, cert, key     string
		wantNil, wantErr  bool
		wantRoots, wantCC bool
	}{
		{name: "plaintext", wantNil: true},
		{name: "server CA only", ca: ca, wantRoots: true},
		{name: "mtls", ca: ca, cert: cert, key: key, wantRoots: true, wantCC: true},
		{name: "cert without key", ca: ca, cert: cert, wantErr: true},
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
			if _, cc := Expiry(cfg); (cfg.RootCAs != nil) != tc.wantRoots || cc != tc.wantCC {
				t.Fatalf("roots %v, client certificate %v", cfg.RootCAs != nil, cc)
			}
		})
	}
}
