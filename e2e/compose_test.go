package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sigil-auth/sigil/internal/testproc"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

// compose is one Docker Compose project of this test: docker-compose.yml
// of a copy of the repository, under its own project name, image tag,
// secrets directory and host ports, so that it touches nothing of a
// deployment the user runs on the same engine.
type compose struct {
	t    *testing.T
	dir  string   // the repository copy
	env  []string // the project's variables
	port map[string]string
}

// needDocker skips the test, saying why, where no Docker engine or no
// Compose is reachable: the test is about running the real images.
func needDocker(t *testing.T) {
	t.Helper()
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Skipf("no Docker engine reachable, so the images cannot be run (docker info: %v: %s)", err, strings.TrimSpace(string(out)))
	}
	if exec.Command("docker", "compose", "version").Run() != nil && exec.Command("docker-compose", "version").Run() != nil {
		t.Skip("neither 'docker compose' (v2) nor 'docker-compose' (v1.29) is installed")
	}
}

// newCompose copies the repository, builds the static binaries the images
// are made of (as `go tool task build` does) and prepares the project.
func newCompose(t *testing.T) *compose {
	t.Helper()
	dir := copyRepo(t)
	build := exec.Command("go", "build", "-trimpath", "-buildvcs=auto", "-o", "bin/", "./services/authority", "./services/authorizer")
	build.Dir = dir
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	name := fmt.Sprintf("sigile2e%d", os.Getpid())
	c := &compose{t: t, dir: dir, port: map[string]string{}}
	c.env = []string{
		"COMPOSE_PROJECT_NAME=" + name,
		"SIGIL_IMAGE_TAG=" + name,
		"SIGIL_SECRETS_DIR=" + filepath.Join(t.TempDir(), "secrets"),
	}
	for _, v := range []string{"SIGIL_AUTHORITY_PORT", "SIGIL_AUTHORITY_METRICS_PORT", "SIGIL_AUTHORIZER_1_PORT",
		"SIGIL_AUTHORIZER_1_METRICS_PORT", "SIGIL_AUTHORIZER_2_PORT", "SIGIL_AUTHORIZER_2_METRICS_PORT", "SIGIL_ENVOY_PORT"} {
		addr := testproc.FreeAddr(t)
		c.port[v] = addr[strings.LastIndex(addr, ":")+1:]
		c.env = append(c.env, v+"="+c.port[v])
	}
	t.Cleanup(func() {
		// Everything this project made: containers, network, volume, images.
		if out, err := c.cmd("scripts/compose.sh", "down", "-v", "--timeout", "20").CombinedOutput(); err != nil {
			t.Errorf("compose down: %v\n%s", err, out)
		}
		_ = exec.Command("docker", "rmi", "sigil-authority:"+name, "sigil-authorizer:"+name).Run()
	})
	c.run("scripts/compose-secrets.sh")
	return c
}

func (c *compose) cmd(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), c.env...)
	return cmd
}

// run runs a command in the project and fails the test, with its output,
// if it fails.
func (c *compose) run(name string, args ...string) string {
	c.t.Helper()
	out, err := c.cmd(name, args...).CombinedOutput()
	if err != nil {
		c.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (c *compose) addr(v string) string { return "127.0.0.1:" + c.port[v] }

// TestComposeEndToEnd builds the images FROM scratch, brings up the default
// profile of docker-compose.yml (the authority and two authorizers), waits
// until each container's healthcheck (the binary's `healthcheck`
// subcommand) reports healthy, runs the README walkthrough against the
// containers, replaces the authority container and checks that nothing was
// lost (the named volume), and tears everything down.
func TestComposeEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds images and runs containers")
	}
	needDocker(t)
	start := time.Now()
	c := newCompose(t)
	c.run("scripts/compose-up.sh")
	t.Logf("images built and every container healthy in %s", time.Since(start).Round(time.Second))

	work := walkthroughDir(t)
	if err := os.MkdirAll(filepath.Join(work, "data"), 0o700); err != nil {
		t.Fatal(err)
	}
	secrets := strings.TrimPrefix(c.env[2], "SIGIL_SECRETS_DIR=")
	operator, err := os.ReadFile(filepath.Join(secrets, "operator.token"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "data", "operator.token"), operator, 0o600); err != nil {
		t.Fatal(err)
	}
	runWalkthrough(t, work, c.addr("SIGIL_AUTHORITY_PORT"), c.addr("SIGIL_AUTHORIZER_1_PORT"))
	if t.Failed() {
		return
	}

	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+strings.TrimSpace(string(operator)))
	before := listTokens(t, ctx, c.addr("SIGIL_AUTHORITY_PORT"))
	if len(before) != 3 {
		t.Fatalf("after the walkthrough: %d tokens in acme, want 3", len(before))
	}

	// Replace the authority container (a restart alone would keep its
	// writable layer): its bbolt file is in the named volume, so every
	// token, and the signing key, must still be there.
	c.run("scripts/compose.sh", "rm", "--stop", "--force", "authority")
	c.run("scripts/compose-up.sh")
	after := listTokens(t, ctx, c.addr("SIGIL_AUTHORITY_PORT"))
	if strings.Join(before, ",") != strings.Join(after, ",") {
		t.Fatalf("tokens before the restart %v, after %v", before, after)
	}

	// The second authorizer followed the restarted authority: a token
	// minted now is allowed there, with min_revision, so it has caught up.
	authority, err := grpc.NewClient(c.addr("SIGIL_AUTHORITY_PORT"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer authority.Close()
	minted, err := sigilv1.NewTokenAuthorityServiceClient(authority).CreateToken(ctx, &sigilv1.CreateTokenRequest{
		OrgId: "acme", Name: "after-restart", CreatedBy: "alice", Expiry: &sigilv1.CreateTokenRequest_Ttl{Ttl: durationpb.New(7 * 24 * time.Hour)},
		Grants: []*sigilv1.Grant{{Permissions: []string{"domain:view"}}},
	})
	if err != nil {
		t.Fatalf("mint after restart: %v", err)
	}
	revoked, err := sigilv1.NewTokenAuthorityServiceClient(authority).RevokeToken(ctx, &sigilv1.RevokeTokenRequest{TokenId: minted.GetInfo().GetTokenId()})
	if err != nil {
		t.Fatal(err)
	}
	authorizer, err := grpc.NewClient(c.addr("SIGIL_AUTHORIZER_2_PORT"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer authorizer.Close()
	cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got, err := sigilv1.NewAuthorizerServiceClient(authorizer).CheckPermission(cctx, &sigilv1.CheckPermissionRequest{
		Token: minted.GetToken(), Permission: "domain:view", MinRevision: revoked.GetRevision(),
	})
	if err != nil {
		t.Fatalf("check on authorizer-2 after the restart: %v", err)
	}
	if got.GetAllowed() || got.GetReason() != sigilv1.DenyReason_DENY_REASON_REVOKED {
		t.Fatalf("authorizer-2 after the restart: allowed %v, reason %v; want denied REVOKED", got.GetAllowed(), got.GetReason())
	}
	t.Logf("compose end to end in %s", time.Since(start).Round(time.Second))
}

// listTokens returns the names of organization acme's tokens.
func listTokens(t *testing.T, ctx context.Context, addr string) []string {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := sigilv1.NewTokenAuthorityServiceClient(conn).ListTokens(ctx, &sigilv1.ListTokensRequest{OrgId: "acme"})
	if err != nil {
		t.Fatalf("list tokens: %v", err)
	}
	var names []string
	for _, tk := range resp.GetTokens() {
		names = append(names, tk.GetName()+"/"+tk.GetState().String())
	}
	return names
}
