package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sigil-auth/sigil/internal/etcdtest"
	"github.com/sigil-auth/sigil/internal/testproc"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

// runAuthority runs the authority binary with args to its end and returns
// its exit code and output.
func runAuthority(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(bin(t, "authority"), args...)
	cmd.Env = testproc.Env()
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		return exit.ExitCode(), string(out)
	case err != nil:
		t.Fatalf("authority %s: %v", args[0], err)
	}
	return 0, string(out)
}

// TestOfflineMigrateAndCompact runs the offline subcommands of the real
// binary on the data directory of a real authority: both refuse while it
// runs; once it is stopped, `authority compact` rewrites its file and
// `authority migrate` copies it into a real etcd; the authority started
// again on the same address with --store etcd serves the same tokens at
// the same epoch and revision; an authorizer that followed it all along
// resumes on it without a new snapshot, a token minted before the
// migration is still allowed, and a revocation and a mint made after it
// (the mint unseals the signing key with the same KEK file) reach it.
func TestOfflineMigrateAndCompact(t *testing.T) {
	endpoint := etcdtest.StartT(t)
	dataDir := t.TempDir()
	addr := testproc.FreeAddr(t)
	start := func(extra ...string) (*testproc.Proc, sigilv1.TokenAuthorityServiceClient, string, uint64) {
		args := append([]string{"--listen", addr, "--metrics-listen", "", "--data-dir", dataDir,
			"--key-activation-delay", "1500ms", "--shutdown-timeout", "5s"}, extra...)
		p := testproc.StartWith(t, testproc.Options{Name: "authority"}, bin(t, "authority"), args...)
		var rec struct {
			Epoch    string
			Revision uint64
		}
		if err := p.WaitRecord(60*time.Second, "database open", &rec); err != nil {
			t.Fatal(err)
		}
		_, conn := p.Listening(t, 30*time.Second)
		return p, sigilv1.NewTokenAuthorityServiceClient(conn), rec.Epoch, rec.Revision
	}
	p, mgmt, epoch, _ := start()
	a := &pairAuthority{proc: p, addr: addr, dataDir: dataDir, client: mgmt}
	mint := func(name string) (tok, id string) {
		ctx := a.operator(t)
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			resp, err := a.client.CreateToken(ctx, &sigilv1.CreateTokenRequest{
				OrgId: "acme", Name: name, CreatedBy: "alice",
				Grants: []*sigilv1.Grant{{Permissions: []string{"domain:view"}}},
				Expiry: &sigilv1.CreateTokenRequest_Ttl{Ttl: durationpb.New(10 * 24 * time.Hour)},
			})
			if err == nil {
				return resp.GetToken(), resp.GetInfo().GetTokenId()
			}
			// The first signing key becomes active after the activation delay.
			if time.Now().After(deadline) || !strings.Contains(err.Error(), "no active signing key") {
				t.Fatalf("CreateToken(%s): %v", name, err)
			}
		}
	}
	kept, keptID := mint("kept")
	_, goneID := mint("gone")
	rev := a.revoke(t, goneID)
	for i := range 20 { // some churn for the compaction
		_, id := mint(fmt.Sprintf("churn-%d", i))
		a.revoke(t, id)
	}
	before := listAcme(t, a)

	z := startPairAuthorizer(t, a)
	zconn, err := grpc.NewClient(z.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer zconn.Close()
	check := func(tok string, minRev uint64) *sigilv1.CheckPermissionResponse {
		t.Helper()
		// The authorizer may be catching up with a restarted authority:
		// retried until it answers at minRev.
		var last error
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			resp, err := sigilv1.NewAuthorizerServiceClient(zconn).CheckPermission(ctx, &sigilv1.CheckPermissionRequest{
				Token: tok, Permission: "domain:view", MinRevision: minRev})
			cancel()
			if err == nil {
				return resp
			}
			last = err
		}
		t.Fatalf("CheckPermission at revision %d: %v", minRev, last)
		return nil
	}
	if r := check(kept, rev); !r.GetAllowed() {
		t.Fatalf("before the migration: the kept token is denied: %v", r.GetReason())
	}

	migrate := []string{"migrate", "--from-data-dir", dataDir, "--etcd-endpoints", endpoint, "--etcd-prefix", "/migrated/"}
	dbPath := filepath.Join(dataDir, "sigil.db")
	for _, args := range [][]string{migrate, {"compact", "--data-dir", dataDir}} {
		code, out := runAuthority(t, args...)
		if code != 1 || !strings.Contains(out, dbPath) || !strings.Contains(out, "running authority") {
			t.Fatalf("authority %s while the authority runs: exit %d: %s; want 1 naming %s", args[0], code, out, dbPath)
		}
	}

	if err := p.Stop(20 * time.Second); err != nil {
		t.Fatalf("stopping the authority: %v\n%s", err, p.Logs)
	}
	code, out := runAuthority(t, "compact", "--data-dir", dataDir)
	if code != 0 || !strings.Contains(out, "compacted "+dbPath) {
		t.Fatalf("authority compact: exit %d: %s", code, out)
	}
	t.Logf("authority compact:\n%s", out)
	code, out = runAuthority(t, migrate...)
	if code != 0 || !strings.Contains(out, "verified") {
		t.Fatalf("authority migrate: exit %d: %s", code, out)
	}
	t.Logf("authority migrate:\n%s", out)
	m := regexp.MustCompile(`\(epoch ([0-9a-f]{32}), revision (\d+)\)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("migrate did not print the epoch and revision:\n%s", out)
	}
	migratedRev, _ := strconv.ParseUint(m[2], 10, 64)
	if m[1] != epoch || migratedRev < rev {
		t.Fatalf("migrated epoch %s revision %d; the authority had epoch %s and acknowledged revision %d", m[1], migratedRev, epoch, rev)
	}

	p, mgmt, epoch2, rev2 := start("--store", "etcd", "--etcd-endpoints", endpoint, "--etcd-prefix", "/migrated/")
	defer func() { _ = p.Stop(10 * time.Second) }()
	if epoch2 != epoch || rev2 != migratedRev {
		t.Fatalf("on etcd: epoch %s revision %d; want %s %d", epoch2, rev2, epoch, migratedRev)
	}
	a = &pairAuthority{proc: p, addr: addr, dataDir: dataDir, client: mgmt}
	if after := listAcme(t, a); after != before {
		t.Fatalf("tokens on etcd:\n%s\nbefore the migration:\n%s", after, before)
	}
	fresh, _ := mint("after-migration")
	rev3 := a.revoke(t, goneID) // already revoked: its revision stays
	if rev3 != rev {
		t.Fatalf("revoking the revoked token again answers revision %d, it was revoked at %d", rev3, rev)
	}
	rev4 := a.revoke(t, keptID)
	if r := check(fresh, rev4); !r.GetAllowed() {
		t.Fatalf("a token minted on etcd is denied: %v", r.GetReason())
	}
	if r := check(kept, rev4); r.GetAllowed() || r.GetReason() != sigilv1.DenyReason_DENY_REASON_REVOKED {
		t.Fatalf("the kept token after its revocation on etcd: allowed %v, %v", r.GetAllowed(), r.GetReason())
	}
	if n := strings.Count(z.proc.Logs.String(), `"msg":"snapshot applied"`); n != 1 {
		t.Fatalf("the authorizer applied %d snapshots, want 1 (it resumes across the migration):\n%s", n, z.proc.Logs)
	}
	if _, err := os.Stat(dbPath + ".bak"); err != nil {
		t.Fatalf("compact kept no sigil.db.bak: %v", err)
	}
}

// listAcme returns organization acme's tokens, one line each: id, name,
// state, revocation revision.
func listAcme(t *testing.T, a *pairAuthority) string {
	t.Helper()
	var b strings.Builder
	req := &sigilv1.ListTokensRequest{OrgId: "acme", PageSize: 7}
	for {
		resp, err := a.client.ListTokens(a.operator(t), req)
		if err != nil {
			t.Fatalf("ListTokens: %v", err)
		}
		for _, tk := range resp.GetTokens() {
			fmt.Fprintf(&b, "%s %s %v %v\n", tk.GetTokenId(), tk.GetName(), tk.GetState(), tk.GetRevokeTime().AsTime())
		}
		if resp.GetNextPageToken() == "" {
			return b.String()
		}
		req.PageToken = resp.GetNextPageToken()
	}
}
