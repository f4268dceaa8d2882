// Package testpki makes throw-away certificate authorities for tests: a CA,
// a server certificate for 127.0.0.1, a client certificate of that CA and
// one of a foreign CA, written as PEM files.
package testpki

import (
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
)

// PKI is a test CA and the certificates it issued.
type PKI struct {
	CAFile                        string // the CA certificate
	ServerCertFile, ServerKeyFile string // for 127.0.0.1, signed by the CA
	ClientCertFile, ClientKeyFile string // signed by the CA
	Pool                          *x509.CertPool
	Client                        tls.Certificate // the client certificate and key
	Foreign                       tls.Certificate // a client certificate of another CA

	ca    *x509.Certificate
	caKey *ecdsa.PrivateKey
}

// Issue writes into dir a certificate for 127.0.0.1 named name, signed by
// the CA and valid from notBefore to notAfter (for renewal and expiry
// tests), and returns its certificate and key files.
func (p *PKI) Issue(t testing.TB, dir, name string, notBefore, notAfter time.Time) (certFile, keyFile string) {
	t.Helper()
	key, _, der := issueValid(t, p.ca, p.caKey, name, false, []net.IP{net.ParseIP("127.0.0.1")}, notBefore, notAfter)
	return writePEM(t, filepath.Join(dir, name+".pem"), "CERTIFICATE", der), writeKey(t, filepath.Join(dir, name+".key"), key)
}

// New writes a PKI into dir, valid for an hour around now.
func New(t testing.TB, dir string) *PKI {
	t.Helper()
	caKey, ca, caDER := issue(t, nil, nil, "sigil test ca", true, nil)
	p := &PKI{Pool: x509.NewCertPool(), ca: ca, caKey: caKey}
	p.Pool.AddCert(ca)
	p.CAFile = writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", caDER)
	srvKey, _, srvDER := issue(t, ca, caKey, "server", false, []net.IP{net.ParseIP("127.0.0.1")})
	p.ServerCertFile = writePEM(t, filepath.Join(dir, "server.pem"), "CERTIFICATE", srvDER)
	p.ServerKeyFile = writeKey(t, filepath.Join(dir, "server.key"), srvKey)
	cliKey, _, cliDER := issue(t, ca, caKey, "client", false, nil)
	p.ClientCertFile = writePEM(t, filepath.Join(dir, "client.pem"), "CERTIFICATE", cliDER)
	p.ClientKeyFile = writeKey(t, filepath.Join(dir, "client.key"), cliKey)
	p.Client = tls.Certificate{Certificate: [][]byte{cliDER}, PrivateKey: cliKey}
	otherCAKey, otherCA, _ := issue(t, nil, nil, "other ca", true, nil)
	foreignKey, _, foreignDER := issue(t, otherCA, otherCAKey, "intruder", false, nil)
	p.Foreign = tls.Certificate{Certificate: [][]byte{foreignDER}, PrivateKey: foreignKey}
	return p
}

func issue(t testing.TB, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, cn string, isCA bool, ips []net.IP) (*ecdsa.PrivateKey, *x509.Certificate, []byte) {
	t.Helper()
	return issueValid(t, parent, parentKey, cn, isCA, ips, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
}

func issueValid(t testing.TB, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, cn string, isCA bool, ips []net.IP, notBefore, notAfter time.Time) (*ecdsa.PrivateKey, *x509.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: notBefore, NotAfter: notAfter,
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

func writePEM(t testing.TB, path, typ string, der []byte) string {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func writeKey(t testing.TB, path string, key *ecdsa.PrivateKey) string {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return writePEM(t, path, "EC PRIVATE KEY", der)
}
