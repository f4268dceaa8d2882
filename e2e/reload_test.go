package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/internal/testproc"
)

// TestRoutesReloadOnHangup: the authorizer reads its --routes file again on
// SIGHUP. A token holding only domain:view is allowed GET /v5/domain/…
// under the first file; after the file is changed to require domain:tech
// for that route and SIGHUP is sent, the same request is denied. A broken
// file then leaves the last good policy in force and is logged at ERROR
// naming the file.
func TestRoutesReloadOnHangup(t *testing.T) {
	a := startPairAuthority(t)
	tok, _ := a.mint(t, "org-reload", []string{"domain:view"}, "domains/example.com")
	routes := filepath.Join(t.TempDir(), "routes.yaml")
	if err := os.WriteFile(routes, []byte(nginxRoutes), 0o600); err != nil {
		t.Fatal(err)
	}
	z := startPairAuthorizer(t, a, "--routes", routes, "--http-listen", "127.0.0.1:0")

	status := func() int {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, "http://"+z.httpAddr+"/v1/authz", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("X-Original-Method", "GET")
		req.Header.Set("X-Original-URI", "/v5/domain/domains/example.com")
		req.Header.Set("X-Organization-Id", "org-reload")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	hangup := func(want string) string {
		t.Helper()
		if err := z.proc.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		line, err := z.proc.WaitLine(10*time.Second, func(l string) bool { return strings.Contains(l, want) })
		if err != nil {
			t.Fatalf("after SIGHUP, no %q line: %v", want, err)
		}
		return line
	}

	if got := status(); got != http.StatusOK {
		t.Fatalf("before the reload: status %d, want 200", got)
	}
	stricter := strings.Replace(nginxRoutes, "permission: domain:view", "permission: domain:tech", 1)
	if err := os.WriteFile(routes, []byte(stricter), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := status(); got != http.StatusOK {
		t.Fatalf("file changed, no SIGHUP yet: status %d, want 200 (the file is read on SIGHUP only)", got)
	}
	hangup("routes file reloaded")
	if got := status(); got != http.StatusForbidden {
		t.Fatalf("after the reload: status %d, want 403 (the route now needs domain:tech)", got)
	}

	if err := os.WriteFile(routes, []byte("routes: [ {name: broken"), 0o600); err != nil {
		t.Fatal(err)
	}
	if line := hangup("routes file not reloaded"); !strings.Contains(line, routes) || !strings.Contains(line, "ERROR") {
		t.Errorf("the line is not an ERROR naming the file %s:\n%s", routes, line)
	}
	if got := status(); got != http.StatusForbidden {
		t.Fatalf("after a broken file: status %d, want 403 (the last good policy stays)", got)
	}
	if err := testproc.WaitServing(z.addr, 5*time.Second); err != nil || z.proc.Exited() {
		t.Fatalf("authorizer after the reloads: exited %v, %v", z.proc.Exited(), err)
	}
}
