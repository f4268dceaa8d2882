package e2e

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/internal/testproc"
)

// walkthroughBlock matches the README's fenced blocks marked for this test.
var walkthroughBlock = regexp.MustCompile("(?ms)^```sh walkthrough\n(.*?)^```")

// stop sends SIGTERM, requires a clean exit (20s only guard against a
// hang) and returns the log.
func stop(t *testing.T, p *testproc.Proc) string {
	t.Helper()
	if err := p.Stop(20 * time.Second); err != nil {
		t.Errorf("%v\n%s", err, p.Logs.String())
	}
	return p.Logs.String()
}

// TestREADMEWalkthrough runs the README's `sh walkthrough` blocks, in order
// and in one shell, against freshly started binaries, and checks what each
// block prints. Only the addresses are changed, to free ports.
func TestREADMEWalkthrough(t *testing.T) {
	work := walkthroughDir(t)
	authority, authorizer := testproc.FreeAddr(t), testproc.FreeAddr(t)
	authorityProc := testproc.Start(t, bin(t, "authority"), "--data-dir", filepath.Join(work, "data"),
		"--listen", authority, "--metrics-listen", testproc.FreeAddr(t))
	if err := testproc.WaitServing(authority, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	authorizerProc := testproc.Start(t, bin(t, "authorizer"), "--authority", authority,
		"--authority-token-file", filepath.Join(work, "data", "watch.token"),
		"--listen", authorizer, "--metrics-listen", testproc.FreeAddr(t))
	if err := testproc.WaitServing(authorizer, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	runWalkthrough(t, work, authority, authorizer)

	// Stop both, then read their logs: no secret may be in them.
	operator, err := os.ReadFile(filepath.Join(work, "data", "operator.token"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []*testproc.Proc{authorizerProc, authorityProc} {
		logs := stop(t, p)
		if logs == "" {
			t.Errorf("%s log is empty", p.Name)
		}
		// Every v1 token body starts with the version byte 0x01: "AQ".
		if strings.Contains(logs, "sigil_pat_AQ") {
			t.Errorf("%s log contains a token", p.Name)
		}
		if strings.Contains(logs, strings.TrimSpace(string(operator))) {
			t.Errorf("%s log contains the operator token", p.Name)
		}
	}
}

// walkthroughDir makes the directory the walkthrough runs in, as the root
// of a checkout would be: `go tool grpcurl` needs go.mod and go.sum, and
// data/ is where it reads the operator token.
func walkthroughDir(t *testing.T) string {
	t.Helper()
	root := repoRoot(t)
	work := t.TempDir()
	for _, f := range []string{"go.mod", "go.sum"} {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(work, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return work
}

// runWalkthrough runs the README's `sh walkthrough` blocks in work against
// an authority and an authorizer at the given addresses (the blocks' own
// 127.0.0.1:7001 and :7002 are replaced by them) and checks what each block
// prints. work/data/operator.token must hold the operator credential.
func runWalkthrough(t *testing.T, work, authority, authorizer string) {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := walkthroughBlock.FindAllStringSubmatch(string(readme), -1)
	checks := walkthroughChecks()
	if len(blocks) != len(checks) {
		t.Fatalf("README has %d walkthrough blocks, this test checks %d: update both together", len(blocks), len(checks))
	}
	var script strings.Builder
	script.WriteString("set -euo pipefail\n")
	for i, b := range blocks {
		body := strings.NewReplacer("127.0.0.1:7001", authority, "127.0.0.1:7002", authorizer).Replace(b[1])
		fmt.Fprintf(&script, "echo '@@block %d@@'\n%s\n", i, body)
	}
	cmd := exec.Command("bash", "-c", script.String())
	cmd.Dir = work
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("walkthrough failed: %v\n%s", err, out)
	}
	outputs := splitBlocks(t, string(out), len(blocks))
	for i, check := range checks {
		t.Run(fmt.Sprintf("block%d", i), func(t *testing.T) {
			check(t, outputs[i])
			if t.Failed() {
				t.Logf("block:\n%s\noutput:\n%s", blocks[i][1], outputs[i])
			}
		})
	}
}

// walkthroughChecks checks the output of each walkthrough block, in order.
func walkthroughChecks() []func(t *testing.T, out string) {
	return []func(t *testing.T, out string){
		func(t *testing.T, out string) { // variables
			if strings.TrimSpace(out) != "" {
				t.Errorf("setting variables printed %q", out)
			}
		},
		func(t *testing.T, out string) { // reflection
			mustContain(t, out, "sigil.v1.TokenAuthorityService", "sigil.v1.AuthorizerService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection")
		},
		func(t *testing.T, out string) { // catalog
			mustContain(t, out, `"name": "domain:renew"`, `"name": "certificate:manage"`, `"name": "organization:tokens"`, `"implies": [`)
		},
		func(t *testing.T, out string) { // mint
			mustContain(t, out, `"name": "renew-example-com"`, `"domain:view"`, `"domains/example.com"`, `"state": "TOKEN_STATE_ACTIVE"`, `"createdBy": "alice"`)
			if strings.Contains(out, "sigil_pat_") {
				t.Error("the walkthrough prints the token secret")
			}
		},
		func(t *testing.T, out string) { // three checks, in order
			mustContainInOrder(t, out, `"allowed": true`, `"reason": "DENY_REASON_PERMISSION_NOT_GRANTED"`, `"reason": "DENY_REASON_ORG_MISMATCH"`)
		},
		func(t *testing.T, out string) { // revoke, then read-after-revoke
			mustContainInOrder(t, out, `"revokeReason": "walkthrough"`, `"state": "TOKEN_STATE_REVOKED"`, `"allowed": false`, `"reason": "DENY_REASON_REVOKED"`)
		},
		func(t *testing.T, out string) { // audit log
			mustContainInOrder(t, out, `"action": "AUDIT_ACTION_TOKEN_CREATED"`, `"action": "AUDIT_ACTION_TOKEN_REVOKED"`, `"reason": "walkthrough"`)
		},
		func(t *testing.T, out string) { // leaver
			mustContainInOrder(t, out, `"name": "bob-billing"`, `"name": "bob-certificates"`, `"revokedCount": "2"`)
			after := out[strings.Index(out, `"revokedCount"`):]
			if strings.Contains(after, `"tokenId"`) {
				t.Errorf("active tokens remain after the bulk revocation:\n%s", after)
			}
		},
	}
}

// splitBlocks cuts the script output at the block markers.
func splitBlocks(t *testing.T, out string, n int) []string {
	t.Helper()
	outputs := make([]string, n)
	cur := -1
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var i int
		if _, err := fmt.Sscanf(sc.Text(), "@@block %d@@", &i); err == nil {
			cur = i
			continue
		}
		if cur >= 0 {
			outputs[cur] += sc.Text() + "\n"
		}
	}
	if cur != n-1 {
		t.Fatalf("output stops at block %d of %d:\n%s", cur, n, out)
	}
	return outputs
}

func mustContain(t *testing.T, out string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %s", w)
		}
	}
}

func mustContainInOrder(t *testing.T, out string, wants ...string) {
	t.Helper()
	rest := out
	for _, w := range wants {
		i := strings.Index(rest, w)
		if i < 0 {
			t.Errorf("output lacks %s (in order)", w)
			return
		}
		rest = rest[i+len(w):]
	}
}
