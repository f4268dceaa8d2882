// Command tlsgen makes a throw-away certificate authority and the
// certificates of the compose profile "tls" (docker-compose.yml): server
// certificates for the authority and the authorizer (their service names,
// localhost and 127.0.0.1), and client certificates for the authorizer (to
// reach the authority), for the health probes and for an administrator.
// Files that exist are kept. For development and tests only: production
// certificates come from your PKI.
//
//	go run ./deploy/tlsgen -dir deploy/secrets/tls
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// leaf is one certificate to issue.
type leaf struct {
	name   string   // file name stem and common name
	server bool     // server (true) or client certificate
	dns    []string // server names besides localhost
}

var leaves = []leaf{
	{name: "authority", server: true, dns: []string{"authority-tls"}},
	{name: "authorizer", server: true, dns: []string{"authorizer-tls"}},
	{name: "authorizer-client"},
	{name: "probe"},
	{name: "admin"},
}

func main() {
	dir := flag.String("dir", "deploy/secrets/tls", "directory to write the PEM files into (mode 0755 so the containers' user can read it: keep it inside a 0700 directory, as deploy/secrets is)")
	days := flag.Int("days", 30, "validity of every certificate, in days")
	flag.Parse()
	if err := run(*dir, time.Duration(*days)*24*time.Hour); err != nil {
		fmt.Fprintln(os.Stderr, "tlsgen:", err)
		os.Exit(1)
	}
}

func run(dir string, validity time.Duration) error {
	// The containers (uid 65532) bind-mount the directory itself, so it
	// must be searchable by them; its parent (deploy/secrets, 0700) keeps
	// other users of the host out.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, "ca.pem")); err == nil {
		fmt.Println("tlsgen: keeping the certificates in", dir)
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	ca := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "sigil compose dev CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(validity),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	if ca, err = x509.ParseCertificate(caDER); err != nil {
		return err
	}
	for _, l := range leaves {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		tmpl := &x509.Certificate{
			SerialNumber: serial(), Subject: pkix.Name{CommonName: l.name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(validity),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		if l.server {
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
			tmpl.DNSNames = append([]string{"localhost"}, l.dns...)
			tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return err
		}
		// 0644 inside the 0700 directory: compose bind-mounts the files
		// with their host permissions and the containers run as uid
		// 65532 (scripts/compose-secrets.sh does the same).
		if err := write(filepath.Join(dir, l.name+".key"), "PRIVATE KEY", keyDER); err != nil {
			return err
		}
		if err := write(filepath.Join(dir, l.name+".pem"), "CERTIFICATE", der); err != nil {
			return err
		}
	}
	// The CA last: its presence means the set is complete.
	if err := write(filepath.Join(dir, "ca.pem"), "CERTIFICATE", caDER); err != nil {
		return err
	}
	fmt.Println("tlsgen: wrote a CA and", len(leaves), "certificates into", dir)
	return nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err)
	}
	return n
}

func write(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o644)
}
