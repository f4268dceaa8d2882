package app

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/internal/testproc"
	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/services/authorizer/internal/authoritytest"
	"github.com/sigil-auth/sigil/services/authorizer/internal/config"
	"github.com/sigil-auth/sigil/services/authorizer/internal/routes"
)

const typoRoutes = `
routes:
  - name: domain-view
    method: GET
    template: /domains/{fqdn}
    permission: domain:veiw
    resource: domains/{fqdn}
  - name: domain-renew
    method: POST
    template: /domains/{fqdn}/renew
    permission: domain:renew
    resource: domains/{fqdn}
`

// errorLines returns the ERROR log lines whose msg contains msg.
func errorLines(logs string, msg string) []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(logs))
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["level"] == "ERROR" && strings.Contains(m["msg"].(string), msg) {
			out = append(out, m)
		}
	}
	return out
}

// A routes file naming a permission outside the authority's catalog stops
// the authorizer when the first catalog arrives, with an ERROR line naming
// the file, the route and the permission.
func TestRoutesUnknownPermissionFailsStart(t *testing.T) {
	fake, authorityAddr := authoritytest.StartTCP(t)
	path := filepath.Join(t.TempDir(), "routes.yaml")
	if err := os.WriteFile(path, []byte(typoRoutes), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]string{
		"--listen", "127.0.0.1:0", "--metrics-listen", "", "--authority", authorityAddr, "--routes", path, "--shutdown-timeout", "2s",
	}, func(string) (string, bool) { return "", false }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	logs := &testproc.Buffer{}
	done := make(chan error, 1)
	// The SIGHUP reloader lives until ctx ends, as in the process.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { done <- run(ctx, cfg, Options{LogOut: logs}) }()
	fake.Next(t).Send(t, authoritytest.BuiltinCatalog())
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("still running with an unknown permission in its routes; logs:\n%s", logs)
	}
	want := `routes[0].permission (route "domain-view"): unknown permission "domain:veiw" (not in the authority's catalog)`
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), path) {
		t.Fatalf("run = %v, want an error with %s", err, want)
	}
	lines := errorLines(logs.String(), "route names a permission")
	if len(lines) != 1 || lines[0]["routes_file"] != path || lines[0]["route"] != "domain-view" || lines[0]["permission"] != "domain:veiw" {
		t.Fatalf("ERROR lines %v; logs:\n%s", lines, logs)
	}
}

// A later catalog without a route's permission logs an ERROR per route and
// does not stop the process; a later reload naming it is refused.
func TestRoutesCatalogChange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "routes.yaml")
	good := strings.Replace(typoRoutes, "domain:veiw", "domain:view", 1)
	if err := os.WriteFile(path, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	live, err := routes.LoadLive(path)
	if err != nil {
		t.Fatal(err)
	}
	logs := &testproc.Buffer{}
	logger := slog.New(slog.NewJSONHandler(logs, nil))
	fault := make(chan error, 1)
	checkRoutesCatalog(live, scope.Builtin(), logger, fault)
	if len(fault) != 0 || len(errorLines(logs.String(), "")) != 0 {
		t.Fatalf("a good file at start: fault %d, logs %s", len(fault), logs)
	}
	other, err := scope.NewCatalog([]scope.Permission{{Name: "domain:renew", Description: "renew"}})
	if err != nil {
		t.Fatal(err)
	}
	checkRoutesCatalog(live, other, logger, fault)
	if len(fault) != 0 {
		t.Fatal("a later catalog change stopped the process")
	}
	lines := errorLines(logs.String(), "route names a permission")
	if len(lines) != 1 || lines[0]["route"] != "domain-view" || lines[0]["permission"] != "domain:view" || lines[0]["at_start"] != false {
		t.Fatalf("ERROR lines %v", lines)
	}
	if _, err := live.Reload(); err == nil || !strings.Contains(err.Error(), `unknown permission "domain:view"`) {
		t.Fatalf("reload against the new catalog = %v", err)
	}
}
