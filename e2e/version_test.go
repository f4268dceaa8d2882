package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestVersion runs `--version` on both binaries: one line naming the
// binary, the module version, the commit it was built from and Go. Go
// stamps the commit when it builds inside a git clone (a .git directory; it
// does not recognise a `git worktree`), as CI's and a user's are.
func TestVersion(t *testing.T) {
	commit := ""
	if st, err := os.Stat(filepath.Join(repoRoot(t), ".git")); err == nil && st.IsDir() {
		head, err := exec.Command("git", "-C", repoRoot(t), "rev-parse", "HEAD").Output()
		if err != nil {
			t.Fatalf("git rev-parse: %v", err)
		}
		commit = ` commit ` + strings.TrimSpace(string(head))[:12] + ` \([^)]*\)`
	} else {
		t.Log("not a git clone: the binaries carry no commit")
	}
	// Built here rather than taken from testproc's cache, which is keyed
	// by the sources and may hold a binary stamped with an earlier commit.
	dir := t.TempDir()
	build := exec.Command("go", "build", "-buildvcs=auto", "-o", dir+"/", "./services/authority", "./services/authorizer")
	build.Dir = repoRoot(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	for _, name := range []string{"authority", "authorizer"} {
		for _, arg := range []string{"--version", "version"} {
			out, err := exec.Command(filepath.Join(dir, name), arg).CombinedOutput()
			if err != nil {
				t.Fatalf("%s %s: %v\n%s", name, arg, err, out)
			}
			want := regexp.MustCompile(`^` + name + ` \S+` + commit + ` go1\.\d+(\.\d+)?\n$`)
			if !want.Match(out) {
				t.Errorf("%s %s printed %q, want %s", name, arg, out, want)
			}
		}
	}
}
