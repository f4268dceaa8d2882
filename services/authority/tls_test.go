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

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

// pki writes a CA, a server certificate for 127.0.0.1 and a client
// certificate into dir.
type pki struct {
	ca                 *x509.Certificate
	caKey              *ecdsa.PrivateKey
	pool               *x509.CertPool
	caFile             string
	serverCert, srvKey string
	clientPair         tls.Certificate
	otherClient        tls.Certificate
}

func newPKI(t *testing.T, dir string) *pki {
	t.Helper()
	p := &pki{}
	var caDER []byte
	p.caKey, p.ca, caDER = makeCert(t, nil, nil, "sigil test ca", true, nil)
	p.pool = x509.NewCertPool()
	p.pool.AddCert(p.ca)
	p.caFile = writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", caDER)
	srvKey, _, srvDER := makeCert(t, p.ca, p.caKey, "authority", false, []net.IP{net.ParseIP("127.0.0.1")})
	p.serverCert = writePEM(t, filepath.Join(dir, "server.pem"), "CERTIFICATE", srvDER)
	kb, _ := x509.MarshalECPrivateKey(srvKey)
	p.srvKey = writePEM(t, filepath.Join(dir, "server.key"), "EC PRIVATE KEY", kb)
	cliKey, _, cliDER := makeCert(t, p.ca, p.caKey, "client", false, nil)
	p.clientPair = tls.Certificate{Certificate: [][]byte{cliDER}, PrivateKey: cliKey}
	// A client certificate from another CA.
	oKey, oCA, _ := makeCert(t, nil, nil, "other ca", true, nil)
	otherKey, _, otherDER := makeCert(t, oCA, oKey, "intruder", false, nil)
	p.otherClient = tls.Certificate{Certificate: [][]byte{otherDER}, PrivateKey: otherKey}
	return p
}

func makeCert(t *testing.T, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, cn string, isCA bool, ips []net.IP) (*ecdsa.PrivateKey, *x509.Certificate, []byte) {
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

func writePEM(t *testing.T, path, typ string, der []byte) string {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestMutualTLS starts the binary with --tls-client-ca: a client with a
// certificate of that CA is served, one without or with a foreign one is not.
func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	pk := newPKI(t, dir)
	// The plaintext client of startProc cannot talk to it; only the log
	// line matters to find the address.
	p := startProc(t, filepath.Join(dir, "data"), "--tls-cert", pk.serverCert, "--tls-key", pk.srvKey, "--tls-client-ca", pk.caFile)
	call := func(certs []tls.Certificate) error {
		cfg := &tls.Config{RootCAs: pk.pool, Certificates: certs, MinVersion: tls.VersionTLS12}
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
	if err := call([]tls.Certificate{pk.clientPair}); err != nil {
		t.Fatalf("client with a certificate of the CA: %v", err)
	}
	if err := call(nil); err == nil {
		t.Fatal("client without certificate served")
	}
	if err := call([]tls.Certificate{pk.otherClient}); err == nil {
		t.Fatal("client with a foreign certificate served")
	}
	// Plaintext is refused.
	if _, err := p.client.ListPermissions(p.op(), &sigilv1.ListPermissionsRequest{}); err == nil {
		t.Fatal("plaintext client served")
	}
}
