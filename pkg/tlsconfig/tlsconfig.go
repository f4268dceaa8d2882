// Package tlsconfig builds TLS configurations for Sigil's servers and clients
// from PEM files.
package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"
)

// Server returns the server TLS configuration for certFile and keyFile, or
// nil when both are empty (plaintext). When clientCAFile is set, clients
// must present a certificate signed by one of its CAs (mTLS). An expired
// or not yet valid certificate is an error. The certificate and key are
// read again when their files change, so a renewed certificate is served
// without a restart; the client CA is read once.
func Server(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	if certFile == "" && keyFile == "" {
		if clientCAFile != "" {
			return nil, errors.New("tls: a client CA needs --tls-cert and --tls-key")
		}
		return nil, nil
	}
	if certFile == "" || keyFile == "" {
		return nil, errors.New("tls: --tls-cert and --tls-key go together")
	}
	kp, err := loadKeyPair(certFile, keyFile, time.Now)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return kp.get() },
		MinVersion:     tls.VersionTLS12,
	}
	if clientCAFile != "" {
		pool, err := loadPool(clientCAFile)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// Client returns the client TLS configuration trusting caFile and, when
// certFile and keyFile are set, presenting that client certificate (read
// again when its files change, as for Server; an expired one is an error).
// It returns nil when all three are empty (plaintext).
func Client(caFile, certFile, keyFile string) (*tls.Config, error) {
	if caFile == "" && certFile == "" && keyFile == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pool, err := loadPool(caFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("tls: client certificate and key go together")
	}
	if certFile != "" {
		kp, err := loadKeyPair(certFile, keyFile, time.Now)
		if err != nil {
			return nil, err
		}
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return kp.get() }
	}
	return cfg, nil
}

func loadPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tls: read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tls: no certificate found in %s", path)
	}
	return pool, nil
}
