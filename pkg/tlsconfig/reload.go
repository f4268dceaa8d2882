package tlsconfig

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync"
	"time"
)

// statEvery bounds how often a key pair's files are looked at for a
// change: a handshake costs at most two stat calls once a second.
const statEvery = time.Second

// keyPair is a certificate and key read from files and read again when
// either file changes on disk, so that a renewed certificate is used by the
// next handshake without a restart. A pair that fails to load (a file
// half-written by the renewal, a key that does not match) leaves the
// previous one in use until the files are whole again.
type keyPair struct {
	certFile, keyFile string
	now               func() time.Time

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   [2]fileStamp
	checked time.Time
	lastErr error
}

// fileStamp identifies a file's contents: its size, modification time and
// a hash of its bytes (a renewal written within the file system's
// timestamp granularity, with the same size, changes only the bytes).
type fileStamp struct {
	size    int64
	modTime time.Time
	sum     [sha256.Size]byte
}

// maxPEMFile bounds what stampOf reads: certificate and key files are a
// few KiB; a larger file is stamped by its size and time only.
const maxPEMFile = 1 << 20

func stampOf(path string) (fileStamp, error) {
	st, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	stamp := fileStamp{size: st.Size(), modTime: st.ModTime()}
	if st.Size() <= maxPEMFile {
		b, err := os.ReadFile(path)
		if err != nil {
			return fileStamp{}, err
		}
		stamp.sum = sha256.Sum256(b)
	}
	return stamp, nil
}

// loadKeyPair reads the pair and refuses an expired or not yet valid
// certificate: a server that starts with one only fails every handshake.
func loadKeyPair(certFile, keyFile string, now func() time.Time) (*keyPair, error) {
	kp := &keyPair{certFile: certFile, keyFile: keyFile, now: now}
	if err := kp.load(); err != nil {
		return nil, err
	}
	if err := checkValidity(kp.cert.Leaf, now()); err != nil {
		return nil, fmt.Errorf("tls: %s: %w", certFile, err)
	}
	return kp, nil
}

func (kp *keyPair) load() error {
	s0, err := stampOf(kp.certFile)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	s1, err := stampOf(kp.keyFile)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(kp.certFile, kp.keyFile)
	if err != nil {
		return fmt.Errorf("tls: load key pair: %w", err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return fmt.Errorf("tls: parse certificate: %w", err)
		}
	}
	kp.cert, kp.stamp, kp.checked = &cert, [2]fileStamp{s0, s1}, kp.now()
	return nil
}

// get returns the current pair, reading the files again first when they
// changed since they were last read (looked at most once per statEvery).
func (kp *keyPair) get() (*tls.Certificate, error) {
	kp.mu.Lock()
	defer kp.mu.Unlock()
	if now := kp.now(); now.Sub(kp.checked) >= statEvery {
		kp.checked = now
		s0, err0 := stampOf(kp.certFile)
		s1, err1 := stampOf(kp.keyFile)
		if err0 == nil && err1 == nil && [2]fileStamp{s0, s1} != kp.stamp {
			old := kp.cert
			if err := kp.load(); err != nil {
				kp.cert, kp.lastErr = old, err
			} else {
				kp.lastErr = nil
			}
		}
	}
	return kp.cert, nil
}

func checkValidity(leaf *x509.Certificate, now time.Time) error {
	switch {
	case now.After(leaf.NotAfter):
		return fmt.Errorf("certificate expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return fmt.Errorf("certificate not valid before %s", leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return nil
}

// Expiry returns when the certificate a TLS configuration made by Server
// or Client presents now expires (false when it presents none): for a
// metric, and a warning as it nears.
func Expiry(cfg *tls.Config) (time.Time, bool) {
	if cfg == nil {
		return time.Time{}, false
	}
	var cert *tls.Certificate
	switch {
	case cfg.GetCertificate != nil:
		cert, _ = cfg.GetCertificate(&tls.ClientHelloInfo{})
	case cfg.GetClientCertificate != nil:
		cert, _ = cfg.GetClientCertificate(&tls.CertificateRequestInfo{})
	}
	if cert == nil || cert.Leaf == nil {
		return time.Time{}, false
	}
	return cert.Leaf.NotAfter, true
}
