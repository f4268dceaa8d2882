package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/sigil-auth/sigil/pkg/flagenv"
)

// TestConfigurationReference checks that docs/configuration.md lists every
// flag each binary accepts, with its environment variable.
func TestConfigurationReference(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(repoRoot(t), "docs", "configuration.md"))
	if err != nil {
		t.Fatal(err)
	}
	flagLine := regexp.MustCompile(`(?m)^\s+-([a-z0-9-]+)`)
	for _, svc := range []struct{ name, prefix string }{
		{"authority", "SIGIL_AUTHORITY"},
		{"authorizer", "SIGIL_AUTHORIZER"},
	} {
		t.Run(svc.name, func(t *testing.T) {
			out, _ := exec.Command(bin(t, svc.name), "--help").CombinedOutput()
			flags := flagLine.FindAllStringSubmatch(string(out), -1)
			if len(flags) < 10 {
				t.Fatalf("--help lists %d flags:\n%s", len(flags), out)
			}
			section := string(doc)[strings.Index(string(doc), "## "+svc.name):]
			if next := strings.Index(section[3:], "\n## "); next >= 0 {
				section = section[:next+3]
			}
			for _, f := range flags {
				row := "| `--" + f[1] + "` | `" + flagenv.Name(svc.prefix, f[1]) + "` |"
				if !strings.Contains(section, row) {
					t.Errorf("docs/configuration.md, section %s, lacks the row for --%s (%s)", svc.name, f[1], row)
				}
			}
		})
	}
}
