package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/internal/testproc"
)

// TestHowtoTLS runs the TLS quick start of docs/howto.md: its `sh tls`
// blocks in one shell, in order, and the services as its `sh tls-run`
// block starts them (the real binaries, on free ports instead of 7001 and
// 7002). The certificates come from the documented openssl commands.
func TestHowtoTLS(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl is not installed; the documented commands need it")
	}
	doc, err := os.ReadFile(filepath.Join(repoRoot(t), "docs", "howto.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?ms)^```sh tls\n(.*?)^```").FindAllStringSubmatch(string(doc), -1)
	run := regexp.MustCompile("(?ms)^```sh tls-run\n(.*?)^```").FindStringSubmatch(string(doc))
	if len(blocks) != 3 || run == nil {
		t.Fatalf("docs/howto.md has %d `sh tls` blocks and %d `sh tls-run`, this test expects 3 and 1", len(blocks), len(run)/2)
	}
	work := walkthroughDir(t)
	if err := os.MkdirAll(filepath.Join(work, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"authority", "authorizer"} {
		if err := os.Symlink(bin(t, name), filepath.Join(work, "bin", name)); err != nil {
			t.Fatal(err)
		}
	}
	addrs := strings.NewReplacer(
		"127.0.0.1:7001", testproc.FreeAddr(t), "127.0.0.1:7002", testproc.FreeAddr(t),
		"127.0.0.1:9101", testproc.FreeAddr(t), "127.0.0.1:9102", testproc.FreeAddr(t))
	shell := func(i int) string {
		t.Helper()
		cmd := exec.Command("bash", "-c", "set -euo pipefail\n"+addrs.Replace(blocks[i][1]))
		cmd.Dir = work
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("block %d: %v\n%s", i, err, out)
		}
		return string(out)
	}

	out := shell(0)
	for _, f := range []string{"ca.pem", "authority.pem", "authority.key", "authorizer.pem", "authorizer-client.pem", "admin.pem", "admin.key"} {
		if !strings.Contains(out, f) {
			t.Errorf("certificates: %s missing from\n%s", f, out)
		}
	}

	// The run block: its `bin/...` commands, started as processes (the
	// `go tool task build` line is what testproc's build stands for).
	var started int
	for _, line := range strings.Split(strings.ReplaceAll(addrs.Replace(run[1]), "\\\n", " "), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], "bin/") {
			continue
		}
		p := testproc.StartWith(t, testproc.Options{Name: f[0], Dir: work}, filepath.Join(work, f[0]), f[1:]...)
		var rec struct{ Addr string }
		if err := p.WaitRecord(30*time.Second, "listening", &rec); err != nil {
			t.Fatal(err)
		}
		started++
	}
	if started != 2 {
		t.Fatalf("the tls-run block starts %d services, want 2", started)
	}

	// The authorizer is SERVING once it has the authority's snapshot, over
	// mTLS; the probe retries until then.
	var probe string
	for deadline := time.Now().Add(30 * time.Second); ; {
		cmd := exec.Command("bash", "-c", "set -euo pipefail\n"+addrs.Replace(blocks[1][1]))
		cmd.Dir = work
		b, err := cmd.CombinedOutput()
		if probe = string(b); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("probes and call: %v\n%s", err, probe)
		}
		time.Sleep(200 * time.Millisecond)
	}
	lines := strings.Split(strings.TrimSpace(probe), "\n")
	if len(lines) != 3 || !strings.HasSuffix(lines[0], ": SERVING") || !strings.HasSuffix(lines[1], ": SERVING") {
		t.Fatalf("probes: %q", probe)
	}
	if n := strings.TrimSpace(lines[2]); n == "0" || n == "" {
		t.Errorf("ListPermissions over mTLS listed %q permissions", n)
	}
	shell(2) // fails unless the authority refuses a client without a certificate
}
