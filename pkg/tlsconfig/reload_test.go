package tlsconfig

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/internal/testpki"
)

// TestKeyPairReloadsOnChange swaps the certificate files on disk, as a
// renewal does: the next handshake after statEvery serves the new one; a
// half-written file keeps the previous pair in use.
func TestKeyPairReloadsOnChange(t *testing.T) {
	dir := t.TempDir()
	pki := testpki.New(t, dir)
	now := time.Now()
	clock := now
	kp, err := loadKeyPair(pki.ServerCertFile, pki.ServerKeyFile, func() time.Time { return clock })
	if err != nil {
		t.Fatal(err)
	}
	first, _ := kp.get()

	renewed, renewedKey := pki.Issue(t, t.TempDir(), "renewed", now.Add(-time.Minute), now.Add(48*time.Hour))
	copyFile(t, renewed, pki.ServerCertFile)
	copyFile(t, renewedKey, pki.ServerKeyFile)
	if got, _ := kp.get(); got != first {
		t.Fatal("files looked at again before statEvery passed")
	}
	clock = clock.Add(statEvery)
	got, _ := kp.get()
	if got == first || !got.Leaf.NotAfter.Equal(now.Add(48*time.Hour).Truncate(time.Second)) {
		t.Fatalf("after the swap: same pair %v, expiry %v", got == first, got.Leaf.NotAfter)
	}

	// A renewal caught half-way: the certificate written, the key not
	// yet. The pair in use stays.
	again, _ := pki.Issue(t, t.TempDir(), "again", now, now.Add(72*time.Hour))
	copyFile(t, again, pki.ServerCertFile)
	clock = clock.Add(statEvery)
	if cur, _ := kp.get(); cur != got {
		t.Fatal("a mismatched certificate and key replaced the working pair")
	}
	if kp.lastErr == nil || !strings.Contains(kp.lastErr.Error(), "key pair") {
		t.Fatalf("last reload error = %v, want the key pair mismatch", kp.lastErr)
	}
}

// TestRefusesExpiredCertificate: a server that starts with an expired or
// not yet valid certificate would only fail every handshake.
func TestRefusesExpiredCertificate(t *testing.T) {
	dir := t.TempDir()
	pki := testpki.New(t, dir)
	now := time.Now()
	expired, expiredKey := pki.Issue(t, dir, "expired", now.Add(-48*time.Hour), now.Add(-time.Hour))
	future, futureKey := pki.Issue(t, dir, "future", now.Add(time.Hour), now.Add(48*time.Hour))
	for _, tc := range []struct{ name, cert, key, want string }{
		{"expired", expired, expiredKey, "certificate expired at"},
		{"not yet valid", future, futureKey, "certificate not valid before"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Server(tc.cert, tc.key, ""); err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.cert) {
				t.Errorf("Server: %v, want %q naming the file", err, tc.want)
			}
			if _, err := Client(pki.CAFile, tc.cert, tc.key); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Client: %v, want %q", err, tc.want)
			}
		})
	}
}

// TestServerServesRenewedCertificate runs real handshakes: a client that
// trusts the CA sees the renewed certificate after the files change,
// without a new server configuration.
func TestServerServesRenewedCertificate(t *testing.T) {
	dir := t.TempDir()
	pki := testpki.New(t, dir)
	cfg, err := Server(pki.ServerCertFile, pki.ServerKeyFile, "")
	if err != nil {
		t.Fatal(err)
	}
	lis, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	expiryOf := func() time.Time {
		c, err := tls.Dial("tcp", lis.Addr().String(), &tls.Config{RootCAs: pki.Pool})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].NotAfter
	}
	before := expiryOf()
	now := time.Now()
	renewed, renewedKey := pki.Issue(t, t.TempDir(), "renewed", now.Add(-time.Minute), now.Add(240*time.Hour))
	copyFile(t, renewed, pki.ServerCertFile)
	copyFile(t, renewedKey, pki.ServerKeyFile)
	deadline := time.Now().Add(10 * time.Second) // only guards a hang; a reload takes statEvery
	for expiryOf().Equal(before) {
		if time.Now().After(deadline) {
			t.Fatal("the renewed certificate was never served")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got, ok := Expiry(cfg); !ok || !got.Equal(now.Add(240*time.Hour).Truncate(time.Second)) {
		t.Fatalf("Expiry = %v %v, want the renewed certificate's", got, ok)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(filepath.Dir(to), ".tmp-"+filepath.Base(to))
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, to); err != nil {
		t.Fatal(err)
	}
}
