package e2e

// End to end behind a real nginx (Debian's package): nginx's auth_request
// asks the real authorizer's forward-auth endpoint (--http-listen) before
// passing a request to a small HTTP product on loopback. nginx runs the
// repository's deploy/nginx/nginx.conf with only its addresses replaced.

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sigil-auth/sigil/internal/testproc"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

const nginxRoutes = `
default: deny
routes:
  - name: domain-view
    method: GET
    template: /v5/domain/domains/{fqdn}
    permission: domain:view
    resource: domains/{fqdn}
    org_header: x-organization-id
  - name: domain-renew
    method: POST
    template: /v5/domain/domains/{fqdn}/renew
    permission: domain:renew
    resource: domains/{fqdn}
    org_header: x-organization-id
`

// seen is what the product received.
type seen struct {
	Authorization, TokenID, OrgID, URI string
}

// startNginx runs nginx with deploy/nginx/nginx.conf in front of product,
// asking the forward-auth endpoint at authz, and returns its base URL.
func startNginx(t *testing.T, nginx, authz, product string) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "nginx", "nginx.conf"))
	if err != nil {
		t.Fatal(err)
	}
	listen := testproc.FreeAddr(t)
	conf := string(src)
	for old, repl := range map[string]string{
		"server 127.0.0.1:7004;": "server " + authz + ";",
		"server 127.0.0.1:8081;": "server " + product + ";",
		"listen 127.0.0.1:8080;": "listen " + listen + ";",
	} {
		if strings.Count(conf, old) != 1 {
			t.Fatalf("deploy/nginx/nginx.conf: %q not found once", old)
		}
		conf = strings.Replace(conf, old, repl, 1)
	}
	prefix := t.TempDir()
	for _, d := range []string{"logs", "tmp"} {
		if err := os.Mkdir(filepath.Join(prefix, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(nginx, "-t", "-p", prefix, "-c", path, "-e", "stderr").CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
	testproc.StartWith(t, testproc.Options{Name: "nginx", Group: true, StopSignal: syscall.SIGTERM},
		nginx, "-p", prefix, "-c", path, "-e", "stderr", "-g", "daemon off;")
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", listen, time.Second)
		if err == nil {
			c.Close()
			return "http://" + listen
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx not listening on %s: %v", listen, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestNginxForwardAuth(t *testing.T) {
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		t.Skip("nginx is not installed (apt-get install -y nginx-light); .ci/run installs it")
	}
	a := startPairAuthority(t)
	routes := filepath.Join(t.TempDir(), "routes.yaml")
	if err := os.WriteFile(routes, []byte(nginxRoutes), 0o600); err != nil {
		t.Fatal(err)
	}
	z := startPairAuthorizer(t, a, "--routes", routes, "--http-listen", "127.0.0.1:0")

	var hits atomic.Int64
	product := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_ = json.NewEncoder(w).Encode(seen{Authorization: r.Header.Get("Authorization"), TokenID: r.Header.Get("X-Sigil-Token-Id"),
			OrgID: r.Header.Get("X-Sigil-Org-Id"), URI: r.RequestURI})
	}))
	defer product.Close()
	base := startNginx(t, nginx, z.httpAddr, strings.TrimPrefix(product.URL, "http://"))

	viewer, viewerID := a.mint(t, "org-a", []string{"domain:view"}, "domains/example.com")
	do := func(t *testing.T, method, path string, h map[string]string) (*http.Response, seen) {
		t.Helper()
		req, err := http.NewRequest(method, base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range h {
			req.Header.Set(k, v)
		}
		before := hits.Load()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var s seen
		if resp.StatusCode == 200 {
			if err := json.Unmarshal(body, &s); err != nil {
				t.Fatalf("product answer %q: %v", body, err)
			}
		} else if hits.Load() != before {
			t.Fatalf("%s %s reached the product although answered %d", method, path, resp.StatusCode)
		}
		return resp, s
	}
	bearer := func(tok string) map[string]string {
		// With identity headers of the client's own, which must not pass.
		return map[string]string{"Authorization": "Bearer " + tok, "X-Sigil-Token-Id": "forged", "X-Sigil-Org-Id": "org-evil"}
	}

	t.Run("allowed, PAT stripped, ids added", func(t *testing.T) {
		resp, s := do(t, "GET", "/v5/domain/domains/example.com?x=1", bearer(viewer))
		if resp.StatusCode != 200 {
			t.Fatalf("status %d, want 200", resp.StatusCode)
		}
		if s.Authorization != "" {
			// Not printed: it holds the PAT.
			t.Fatal("the product received an Authorization header")
		}
		want := seen{TokenID: viewerID, OrgID: "org-a", URI: "/v5/domain/domains/example.com?x=1"}
		if s != want {
			t.Fatalf("product saw %+v, want %+v", s, want)
		}
	})
	t.Run("401 without a token", func(t *testing.T) {
		resp, _ := do(t, "GET", "/v5/domain/domains/example.com", nil)
		if resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Fatalf("status %d, WWW-Authenticate %q; want 401 Bearer", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
	})
	t.Run("401 with a garbage token", func(t *testing.T) {
		if resp, _ := do(t, "GET", "/v5/domain/domains/example.com", bearer("sigil_pat_garbage")); resp.StatusCode != 401 {
			t.Fatalf("status %d, want 401", resp.StatusCode)
		}
	})
	t.Run("403 wrong permission", func(t *testing.T) {
		if resp, _ := do(t, "POST", "/v5/domain/domains/example.com/renew", bearer(viewer)); resp.StatusCode != 403 {
			t.Fatalf("status %d, want 403", resp.StatusCode)
		}
	})
	t.Run("403 wrong resource", func(t *testing.T) {
		if resp, _ := do(t, "GET", "/v5/domain/domains/example.org", bearer(viewer)); resp.StatusCode != 403 {
			t.Fatalf("status %d, want 403", resp.StatusCode)
		}
	})
	t.Run("403 other organization", func(t *testing.T) {
		h := bearer(viewer)
		h["X-Organization-Id"] = "org-b"
		if resp, _ := do(t, "GET", "/v5/domain/domains/example.com", h); resp.StatusCode != 403 {
			t.Fatalf("status %d, want 403", resp.StatusCode)
		}
	})
	t.Run("unknown route", func(t *testing.T) {
		if resp, _ := do(t, "DELETE", "/v5/domain/domains/example.com", bearer(viewer)); resp.StatusCode != 403 {
			t.Fatalf("status %d, want 403", resp.StatusCode)
		}
		if resp, _ := do(t, "GET", "/admin", bearer(viewer)); resp.StatusCode != 403 {
			t.Fatalf("status %d, want 403", resp.StatusCode)
		}
	})
	t.Run("smuggled X-Forwarded-Uri is dropped", func(t *testing.T) {
		h := bearer(viewer)
		h["X-Forwarded-Method"], h["X-Forwarded-Uri"] = "GET", "/v5/domain/domains/example.com"
		if resp, _ := do(t, "POST", "/v5/domain/domains/example.com/renew", h); resp.StatusCode != 403 {
			t.Fatalf("status %d, want 403", resp.StatusCode)
		}
	})
	t.Run("revoked token", func(t *testing.T) {
		tok, id := a.mint(t, "org-a", []string{"domain:view"})
		if resp, _ := do(t, "GET", "/v5/domain/domains/example.com", bearer(tok)); resp.StatusCode != 200 {
			t.Fatalf("before revocation: %d", resp.StatusCode)
		}
		rev := a.revoke(t, id)
		// Wait until this authorizer has applied the revocation
		// (CheckPermission with min_revision), then go through nginx.
		conn, err := grpc.NewClient(z.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r, err := sigilv1.NewAuthorizerServiceClient(conn).CheckPermission(ctx, &sigilv1.CheckPermissionRequest{
			Token: tok, Permission: "domain:view", MinRevision: rev})
		if err != nil || r.GetReason() != sigilv1.DenyReason_DENY_REASON_REVOKED {
			t.Fatalf("CheckPermission after revoke = %v, %v", r, err)
		}
		if resp, _ := do(t, "GET", "/v5/domain/domains/example.com", bearer(tok)); resp.StatusCode != 401 {
			t.Fatalf("revoked token: status %d, want 401", resp.StatusCode)
		}
	})
	t.Run("stale authorizer: 5xx, never a pass", func(t *testing.T) {
		a.proc.Kill()
		// --max-staleness is 2s; the bound only guards against a hang.
		deadline := time.Now().Add(30 * time.Second)
		for {
			resp, _ := do(t, "GET", "/v5/domain/domains/example.com", bearer(viewer))
			if resp.StatusCode >= 500 {
				break
			}
			if resp.StatusCode != 200 {
				t.Fatalf("status %d while the authorizer goes stale", resp.StatusCode)
			}
			if time.Now().After(deadline) {
				t.Fatal("authorizer still answering 30s after the authority died")
			}
			time.Sleep(100 * time.Millisecond)
		}
		before := hits.Load()
		for range 3 {
			if resp, _ := do(t, "GET", "/v5/domain/domains/example.com", bearer(viewer)); resp.StatusCode < 500 {
				t.Fatalf("stale: status %d, want 5xx", resp.StatusCode)
			}
		}
		if hits.Load() != before {
			t.Fatal("a request reached the product while the authorizer was stale")
		}
	})
}
