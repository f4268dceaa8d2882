package routes

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigil-auth/sigil/pkg/scope"
)

func TestUnknownPermissions(t *testing.T) {
	p := mustParse(t, testPolicy)
	if bad := p.UnknownPermissions(scope.Builtin()); len(bad) != 0 {
		t.Fatalf("built-in permissions reported unknown: %v", bad)
	}
	if bad := p.UnknownPermissions(nil); len(bad) != 0 {
		t.Fatalf("no catalog: %v", bad)
	}
	typo := mustParse(t, strings.Replace(testPolicy, "permission: domain:view\n    resource: domains/{fqdn}\n", "permission: domain:veiw\n    resource: domains/{fqdn}\n", 1))
	bad := typo.UnknownPermissions(scope.Builtin())
	if len(bad) != 1 || bad[0].Name != "domain-view" || bad[0].Permission != "domain:veiw" {
		t.Fatalf("unknown = %v, want domain-view", bad)
	}
	err := typo.CheckCatalog("/etc/routes.yaml", scope.Builtin())
	want := `routes /etc/routes.yaml: routes[3].permission (route "domain-view"): unknown permission "domain:veiw" (not in the authority's catalog)`
	if err == nil || err.Error() != want {
		t.Fatalf("CheckCatalog = %v, want %s", err, want)
	}
}

// A reload naming an unknown permission is refused like a broken file once
// the catalog is known; before, it is accepted.
func TestReloadRefusesUnknownPermission(t *testing.T) {
	path := filepath.Join(t.TempDir(), "routes.yaml")
	write := func(src string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(testPolicy)
	l, err := LoadLive(path)
	if err != nil {
		t.Fatal(err)
	}
	first := l.Policy()
	typo := strings.Replace(testPolicy, "permission: domain:renew", "permission: domain:renwe", 1)
	write(typo)
	l.SetCatalog(scope.Builtin())
	if _, err := l.Reload(); err == nil || !strings.Contains(err.Error(), `unknown permission "domain:renwe"`) || !strings.Contains(err.Error(), path) {
		t.Fatalf("Reload = %v, want an unknown permission error naming the file", err)
	}
	if l.Policy() != first {
		t.Fatal("the refused file replaced the policy")
	}
	l.SetCatalog(nil)
	if _, err := l.Reload(); err != nil || l.Policy() == first {
		t.Fatalf("without a catalog: %v", err)
	}
}
