package deploy_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// rulesFile is the subset of a Prometheus rules file the test reads.
type rulesFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// TestAlertRulesMatchCodeAndRunbook: every sigil_ metric an alert reads is
// registered by the services' code (a renamed metric would silently never
// fire), and every alert's runbook link names a heading of
// docs/operations.md. promtool checks the syntax and the alerts' behaviour
// (task check:rules).
func TestAlertRulesMatchCodeAndRunbook(t *testing.T) {
	raw, err := os.ReadFile("prometheus/sigil.rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rf rulesFile
	if err := yaml.Unmarshal(raw, &rf); err != nil {
		t.Fatal(err)
	}
	registered := registeredMetricNames(t)
	anchors := headingAnchors(t, "../docs/operations.md")
	metric := regexp.MustCompile(`\bsigil_[a-z_]+`)
	alerts := 0
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			alerts++
			for _, name := range metric.FindAllString(r.Expr, -1) {
				if !registered[name] {
					t.Errorf("alert %s reads %s, which no service registers", r.Alert, name)
				}
			}
			link := r.Annotations["runbook"]
			anchor, ok := strings.CutPrefix(link, "docs/operations.md#")
			if !ok {
				t.Errorf("alert %s: runbook %q does not point into docs/operations.md", r.Alert, link)
				continue
			}
			if !anchors[anchor] {
				t.Errorf("alert %s: docs/operations.md has no heading for #%s", r.Alert, anchor)
			}
		}
	}
	if alerts == 0 {
		t.Fatal("no alert rules read")
	}
}

// registeredMetricNames returns every "sigil_…" string literal in the
// non-test Go sources of pkg/ and services/: the metric names the
// services register.
func registeredMetricNames(t *testing.T) map[string]bool {
	t.Helper()
	lit := regexp.MustCompile(`"(sigil_[a-z_]+)"`)
	names := map[string]bool{}
	for _, root := range []string{"../pkg", "../services"} {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			src, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, m := range lit.FindAllStringSubmatch(string(src), -1) {
				names[m[1]] = true
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return names
}

// headingAnchors returns the GitHub-style anchors of a Markdown file's
// headings: lower case, spaces to hyphens, punctuation dropped.
func headingAnchors(t *testing.T, path string) map[string]bool {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	drop := regexp.MustCompile(`[^a-z0-9 _-]`)
	anchors := map[string]bool{}
	for _, line := range strings.Split(string(raw), "\n") {
		text, ok := strings.CutPrefix(line, "#")
		if !ok {
			continue
		}
		text = strings.TrimSpace(strings.TrimLeft(text, "#"))
		anchors[strings.ReplaceAll(drop.ReplaceAllString(strings.ToLower(text), ""), " ", "-")] = true
	}
	return anchors
}
