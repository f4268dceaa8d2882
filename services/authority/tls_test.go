package main

import (
	"context"
	"crypto/tls"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/sigil-auth/sigil/internal/testpki"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

// TestMutualTLS starts the binary with --tls-client-ca: a client with a
// certificate of that CA is served, one without or with a foreign one is not.
func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	pk := testpki.New(t, dir)
	// The plaintext client of startProc cannot talk to it; only the log
	// line matters to find the address.
	p := startProc(t, filepath.Join(dir, "data"), "--tls-cert", pk.ServerCertFile, "--tls-key", pk.ServerKeyFile, "--tls-client-ca", pk.CAFile)
	call := func(certs []tls.Certificate) error {
		cfg := &tls.Config{RootCAs: pk.Pool, Certificates: certs, MinVersion: tls.VersionTLS12}
		conn, err := grpc.NewClient(p.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(p.op(), 5*time.Second)
		defer cancel()
		_, err = sigilv1.NewTokenAuthorityServiceClient(conn).ListPermissions(ctx, &sigilv1.ListPermissionsRequest{})
		return err
	}
	if err := call([]tls.Certificate{pk.Client}); err != nil {
		t.Fatalf("client with a certificate of the CA: %v", err)
	}
	if err := call(nil); err == nil {
		t.Fatal("client without certificate served")
	}
	if err := call([]tls.Certificate{pk.Foreign}); err == nil {
		t.Fatal("client with a foreign certificate served")
	}
	// Plaintext is refused.
	if _, err := p.client.ListPermissions(p.op(), &sigilv1.ListPermissionsRequest{}); err == nil {
		t.Fatal("plaintext client served")
	}
}
