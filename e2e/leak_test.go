package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sigil-auth/sigil/internal/testproc"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/pkg/token"
)

// startLeakAuthority starts an authority on dir with a short --min-ttl (so
// that a token can expire during the test) and extra flags.
func startLeakAuthority(t *testing.T, dir string, extra ...string) *pairAuthority {
	t.Helper()
	args := append([]string{"--listen", "127.0.0.1:0", "--metrics-listen", "", "--data-dir", dir,
		"--shutdown-timeout", "5s", "--min-ttl", "2s"}, extra...)
	p, addr, conn := grpcProc(t, "authority", bin(t, "authority"), args...)
	return &pairAuthority{proc: p, addr: addr, dataDir: dir, client: sigilv1.NewTokenAuthorityServiceClient(conn)}
}

// reporter returns a context carrying the reporter credential the
// authority created in its data directory.
func (a *pairAuthority) reporter(t *testing.T) context.Context {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(a.dataDir, "reporter.token"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+strings.TrimSpace(string(b)))
}

// mintTTL mints a token of org "acme" granting domain:view, living ttl.
func (a *pairAuthority) mintTTL(t *testing.T, name string, ttl time.Duration) (tok, id string) {
	t.Helper()
	resp, err := a.client.CreateToken(a.operator(t), &sigilv1.CreateTokenRequest{
		OrgId: "acme", Name: name, CreatedBy: "alice",
		Grants: []*sigilv1.Grant{{Permissions: []string{"domain:view"}}},
		Expiry: &sigilv1.CreateTokenRequest_Ttl{Ttl: durationpb.New(ttl)},
	})
	if err != nil {
		t.Fatalf("CreateToken %s: %v", name, err)
	}
	return resp.GetToken(), resp.GetInfo().GetTokenId()
}

// leakReport reports toks as the reporter and checks the outcomes.
func (a *pairAuthority) leakReport(t *testing.T, toks []string, want []sigilv1.LeakOutcome) *sigilv1.ReportLeakedTokensResponse {
	t.Helper()
	resp, err := a.client.ReportLeakedTokens(a.reporter(t), &sigilv1.ReportLeakedTokensRequest{
		Tokens: toks, Source: "e2e-scanner", Url: "https://git.example/acme/app/commit/1234",
	})
	if err != nil {
		t.Fatalf("ReportLeakedTokens: %v", err)
	}
	if len(resp.GetResults()) != len(want) {
		t.Fatalf("%d results for %d strings", len(resp.GetResults()), len(want))
	}
	for i, w := range want {
		r := resp.GetResults()[i]
		if r.GetOutcome() != w {
			t.Errorf("string %d: %v, want %v", i, r.GetOutcome(), w)
		}
		if (w == sigilv1.LeakOutcome_LEAK_OUTCOME_NOT_A_TOKEN) != (r.GetTokenId() == "") {
			t.Errorf("string %d: token id %q with outcome %v: want one exactly for a genuine token", i, r.GetTokenId(), w)
		}
	}
	return resp
}

// forgeSignature mints a token of the right shape and checksum, naming the
// authority's signing key, but signed with another key.
func forgeSignature(t *testing.T, a *pairAuthority) string {
	t.Helper()
	keys, err := a.client.ListSigningKeys(a.operator(t), &sigilv1.ListSigningKeysRequest{})
	if err != nil || len(keys.GetKeys()) == 0 {
		t.Fatalf("ListSigningKeys: %v %v", keys, err)
	}
	_, alien, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := token.NewID()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	forged, err := (*token.Codec)(nil).Mint(token.Claims{ID: id, OrgID: "acme", KeyID: keys.GetKeys()[0].GetKeyId(),
		IssuedAt: now.Add(-time.Minute), ExpiresAt: now.Add(time.Hour), Grants: []scope.Grant{{Permissions: []string{"domain:view"}}}}, alien)
	if err != nil {
		t.Fatal(err)
	}
	if !(*token.Codec)(nil).LooksLike(forged) {
		t.Fatal("the forged token does not even look like a token")
	}
	return forged
}

// checkAt asks the authorizer at addr whether tok may view, at minRev.
func checkAt(t *testing.T, addr, tok string, minRev uint64) *sigilv1.CheckPermissionResponse {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := sigilv1.NewAuthorizerServiceClient(conn).CheckPermission(ctx, &sigilv1.CheckPermissionRequest{
		Token: tok, Permission: "domain:view", MinRevision: minRev,
	})
	if err != nil {
		t.Fatalf("CheckPermission: %v", err)
	}
	return resp
}

func wantDenied(t *testing.T, resp *sigilv1.CheckPermissionResponse, reason sigilv1.DenyReason) {
	t.Helper()
	if resp.GetAllowed() || resp.GetReason() != reason {
		t.Fatalf("allowed %v reason %v, want denied with %v", resp.GetAllowed(), resp.GetReason(), reason)
	}
}

// TestE2ELeakedTokens: with real binaries, a leaked genuine token is
// denied by the authorizer right after the report (min_revision = the
// report's revision); forged look-alikes are NOT_A_TOKEN; a second report
// is ALREADY_REVOKED; an expired token is EXPIRED; and a genuine token the
// restored store has no record of is REVOKED, then denied.
func TestE2ELeakedTokens(t *testing.T) {
	dir := t.TempDir()
	a := startLeakAuthority(t, dir)
	z := startPairAuthorizer(t, a)

	live, liveID := a.mintTTL(t, "live", time.Hour)
	short, shortID := a.mintTTL(t, "short", 2*time.Second)
	bystander, _ := a.mintTTL(t, "bystander", time.Hour)
	if r := checkAt(t, z.addr, live, 0); !r.GetAllowed() {
		t.Fatalf("live token denied before the report: %v", r.GetReason())
	}
	badChecksum := live[:len(live)-1] + map[bool]string{true: "B", false: "A"}[live[len(live)-1] == 'A']
	forged := forgeSignature(t, a)

	NotAToken, Revoked := sigilv1.LeakOutcome_LEAK_OUTCOME_NOT_A_TOKEN, sigilv1.LeakOutcome_LEAK_OUTCOME_REVOKED
	resp := a.leakReport(t, []string{live, badChecksum, forged, live},
		[]sigilv1.LeakOutcome{Revoked, NotAToken, NotAToken, Revoked})
	if resp.GetResults()[0].GetTokenId() != liveID || resp.GetRevision() == 0 {
		t.Fatalf("report: token id %q revision %d, want %s and a revision", resp.GetResults()[0].GetTokenId(), resp.GetRevision(), liveID)
	}
	wantDenied(t, checkAt(t, z.addr, live, resp.GetRevision()), sigilv1.DenyReason_DENY_REASON_REVOKED)
	if r := checkAt(t, z.addr, bystander, resp.GetRevision()); !r.GetAllowed() {
		t.Fatalf("an unreported token is denied: %v", r.GetReason())
	}
	info, err := a.client.GetToken(a.operator(t), &sigilv1.GetTokenRequest{TokenId: liveID})
	if err != nil {
		t.Fatal(err)
	}
	if reason := info.GetInfo().GetRevokeReason(); !strings.Contains(reason, "e2e-scanner") || !strings.Contains(reason, "https://git.example/acme/app/commit/1234") {
		t.Fatalf("revocation reason %q does not name the source and url", reason)
	}

	// No secret in the authority's or the authorizer's logs.
	for _, logs := range []string{a.proc.Logs.String(), z.proc.Logs.String()} {
		if strings.Contains(logs, live) || strings.Contains(logs, forged) {
			t.Fatal("a reported token is in the logs")
		}
	}

	again := a.leakReport(t, []string{live}, []sigilv1.LeakOutcome{sigilv1.LeakOutcome_LEAK_OUTCOME_ALREADY_REVOKED})
	if again.GetRevision() != resp.GetRevision() {
		t.Fatalf("second report at revision %d, want the first revocation's %d", again.GetRevision(), resp.GetRevision())
	}

	// The short token expires (the authority's clock: a whole second past
	// its expiry second).
	exp, err := a.client.GetToken(a.operator(t), &sigilv1.GetTokenRequest{TokenId: shortID})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(exp.GetInfo().GetExpireTime().AsTime().Add(1100 * time.Millisecond)))
	a.leakReport(t, []string{short}, []sigilv1.LeakOutcome{sigilv1.LeakOutcome_LEAK_OUTCOME_EXPIRED})

	// A restore: back up the file, mint a token on the running store, put
	// the backup back and start with --restored. The store has no record
	// of the token; it is genuine all the same.
	if err := a.proc.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := z.proc.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(dir, "sigil.db")
	backup := filepath.Join(t.TempDir(), "backup.db")
	copyDB(t, db, backup)
	a = startLeakAuthority(t, dir)
	unrecorded, unrecordedID := a.mintTTL(t, "after-backup", time.Hour)
	if err := a.proc.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	copyDB(t, backup, db)
	a = startLeakAuthority(t, dir, "--restored")
	if _, err := a.client.GetToken(a.operator(t), &sigilv1.GetTokenRequest{TokenId: unrecordedID}); err == nil {
		t.Fatal("the restored store knows the token minted after the backup")
	}
	z = startPairAuthorizer(t, a)
	if r := checkAt(t, z.addr, unrecorded, 0); !r.GetAllowed() {
		t.Fatalf("the unrecorded token is denied before the report: %v", r.GetReason())
	}
	res := a.leakReport(t, []string{unrecorded}, []sigilv1.LeakOutcome{Revoked})
	if res.GetResults()[0].GetTokenId() != unrecordedID {
		t.Fatalf("token id %q, want %s", res.GetResults()[0].GetTokenId(), unrecordedID)
	}
	wantDenied(t, checkAt(t, z.addr, unrecorded, res.GetRevision()), sigilv1.DenyReason_DENY_REASON_REVOKED)

	audit, err := a.client.ListAuditEvents(a.operator(t), &sigilv1.ListAuditEventsRequest{OrgId: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	leaks := 0
	for _, e := range audit.GetEvents() {
		if e.GetAction() == sigilv1.AuditAction_AUDIT_ACTION_TOKEN_LEAKED && e.GetTokenId() == unrecordedID && e.GetActor() == "reporter" {
			leaks++
		}
	}
	if leaks != 1 {
		t.Fatalf("%d leak audit events for the unrecorded token, want 1", leaks)
	}
}

// copyDB copies a stopped authority's bbolt file.
func copyDB(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestSecretScanningDocReport runs the `sh leak-report` block of
// docs/secret-scanning.md, as written but for the address, against a fresh
// authority whose data directory is the block's data/.
func TestSecretScanningDocReport(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(repoRoot(t), "docs", "secret-scanning.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?ms)^```sh leak-report\n(.*?)^```").FindAllStringSubmatch(string(doc), -1)
	if len(blocks) != 1 {
		t.Fatalf("docs/secret-scanning.md has %d `sh leak-report` blocks, this test runs 1", len(blocks))
	}
	work := walkthroughDir(t)
	addr := testproc.FreeAddr(t)
	p := testproc.Start(t, bin(t, "authority"), "--data-dir", filepath.Join(work, "data"),
		"--listen", addr, "--metrics-listen", "")
	if err := testproc.WaitServing(addr, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", "-c", "set -euo pipefail\n"+strings.ReplaceAll(blocks[0][1], "127.0.0.1:7001", addr))
	cmd.Dir = work
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("block: %v\n%s", err, out)
	}
	for _, want := range []string{`"outcome": "LEAK_OUTCOME_NOT_A_TOKEN"`, `"revision": "0"`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), `"tokenId": "`) && !strings.Contains(string(out), `"tokenId": ""`) {
		t.Errorf("a look-alike got a token id:\n%s", out)
	}
	if err := p.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(p.Logs.String(), "thisIsNotARealTokenBody") {
		t.Error("the reported string is in the authority's log")
	}
}
