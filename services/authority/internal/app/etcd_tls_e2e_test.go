package app

import (
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/internal/etcdtest"
	"github.com/sigil-auth/sigil/internal/testpki"
	"github.com/sigil-auth/sigil/internal/testproc"
)

// TestEtcdOverMutualTLS runs the real authority binary on an etcd that
// requires client certificates (--etcd-ca, --etcd-cert, --etcd-key): it
// opens the store and serves; its etcd client certificate's expiry is
// exported (sigil_tls_certificate_expiry_timestamp_seconds{cert="etcd_client"});
// without a client certificate the start is refused.
func TestEtcdOverMutualTLS(t *testing.T) {
	pki := testpki.New(t, t.TempDir())
	srv, err := etcdtest.Start(etcdtest.Options{TLS: &etcdtest.TLS{
		CertFile: pki.ServerCertFile, KeyFile: pki.ServerKeyFile, ClientCAFile: pki.CAFile,
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if !strings.HasPrefix(srv.Endpoint, "https://") {
		t.Fatalf("endpoint %s is not https", srv.Endpoint)
	}
	bin := testproc.MustBuild(t, "services/authority")
	args := func(extra ...string) []string {
		return append([]string{"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--data-dir", t.TempDir(),
			"--store", "etcd", "--etcd-endpoints", srv.Endpoint, "--etcd-prefix", "/tls/", "--etcd-ca", pki.CAFile,
			"--etcd-dial-timeout", "3s", "--shutdown-timeout", "5s"}, extra...)
	}

	p := testproc.StartWith(t, testproc.Options{Name: "authority"}, bin, args("--etcd-cert", pki.ClientCertFile, "--etcd-key", pki.ClientKeyFile)...)
	var open struct{ Store string }
	if err := p.WaitRecord(30*time.Second, "database open", &open); err != nil || open.Store != "etcd" {
		t.Fatalf("database open over mTLS: %v (store %q)", err, open.Store)
	}
	var rec struct{ Addr string }
	if err := p.WaitRecord(10*time.Second, "metrics listening", &rec); err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pki.Client.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + rec.Addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := fmt.Sprintf(`sigil_tls_certificate_expiry_timestamp_seconds{cert="etcd_client"} %s`,
		strconv.FormatFloat(float64(leaf.NotAfter.Unix()), 'g', -1, 64))
	if !strings.Contains(string(body), want) {
		t.Errorf("metrics lack %q", want)
	}
	if err := p.Stop(20 * time.Second); err != nil {
		t.Errorf("stop: %v", err)
	}

	// Without a client certificate etcd refuses the handshake: the
	// authority does not start.
	bad := testproc.StartWith(t, testproc.Options{Name: "authority-no-cert"}, bin, args()...)
	select {
	case <-bad.Done():
	case <-time.After(60 * time.Second):
		t.Fatal("the authority without an etcd client certificate still runs after 60s")
	}
	if bad.Err() == nil {
		t.Fatal("the authority without an etcd client certificate exited 0")
	}
}
