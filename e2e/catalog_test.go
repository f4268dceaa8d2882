package e2e

// End to end: unknown permissions are loud. The authority streams its
// permission catalog to the authorizers; a routes file, a check or a
// product annotation naming a permission outside it is refused, naming it.

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/sigil-auth/sigil/internal/testproc"
	"github.com/sigil-auth/sigil/pkg/authz"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

// An authorizer whose routes file names domain:veiw exits non-zero once it
// has the authority's catalog, with an ERROR line naming the file, the
// route and the permission.
func TestRoutesUnknownPermissionStopsAuthorizer(t *testing.T) {
	a := startPairAuthority(t)
	routes := filepath.Join(t.TempDir(), "routes.yaml")
	if err := os.WriteFile(routes, []byte(strings.Replace(nginxRoutes, "permission: domain:view", "permission: domain:veiw", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	p := testproc.StartWith(t, testproc.Options{Name: "authorizer"}, bin(t, "authorizer"),
		"--listen", "127.0.0.1:0", "--metrics-listen", "", "--authority", a.addr, "--routes", routes,
		"--authority-token-file", filepath.Join(a.dataDir, "watch.token"), "--shutdown-timeout", "5s")
	select {
	case <-p.Done():
	case <-time.After(60 * time.Second):
		t.Fatalf("the authorizer still runs with domain:veiw in its routes:\n%s", p.Logs)
	}
	if p.Err() == nil {
		t.Fatal("the authorizer exited with status 0")
	}
	line, err := p.WaitLine(time.Second, func(l string) bool {
		return strings.Contains(l, "route names a permission that is not in the authority's catalog")
	})
	if err != nil {
		t.Fatalf("no ERROR line for the route: %v\n%s", err, p.Logs)
	}
	for _, want := range []string{`"level":"ERROR"`, `"routes_file":"` + routes + `"`, `"route":"domain-view"`, `"permission":"domain:veiw"`} {
		if !strings.Contains(line, want) {
			t.Errorf("the line lacks %s:\n%s", want, line)
		}
	}
}

// CheckPermission and CheckPermissions with a permission outside the
// catalog are INVALID_ARGUMENT naming the field, whatever the token; the
// pool's VerifyPermissions (a product's start-up check) names it, and the
// example product starts only after verifying its annotations.
func TestCheckUnknownPermission(t *testing.T) {
	a := startPairAuthority(t)
	z := startPairAuthorizer(t, a)
	tok, _ := a.mint(t, "org-cat", []string{"domain:view"})
	conn, err := grpc.NewClient(z.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := sigilv1.NewAuthorizerServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	wantField := func(err error, field, perm string) {
		t.Helper()
		st := status.Convert(err)
		if st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), field+": ") ||
			!strings.Contains(st.Message(), `unknown permission "`+perm+`" (not in the authority's catalog)`) || strings.Contains(st.Message(), tok) {
			t.Fatalf("error %v, want INVALID_ARGUMENT naming %s and %s", err, field, perm)
		}
		var named bool
		for _, d := range st.Details() {
			if br, ok := d.(*errdetails.BadRequest); ok {
				named = named || slices.ContainsFunc(br.GetFieldViolations(), func(v *errdetails.BadRequest_FieldViolation) bool { return v.GetField() == field })
			}
		}
		if !named {
			t.Fatalf("no BadRequest field violation for %s: %v", field, st.Details())
		}
	}
	_, err = c.CheckPermission(ctx, &sigilv1.CheckPermissionRequest{Token: tok, Permission: "domain:veiw", Resource: "domains/example.com"})
	wantField(err, "permission", "domain:veiw")
	_, err = c.CheckPermissions(ctx, &sigilv1.CheckPermissionsRequest{Token: tok, Checks: []*sigilv1.PermissionCheck{
		{Permission: "domain:view"}, {Permission: "billing:view"}, {Permission: "domain:renew"}, {Permission: "domain:veiw"},
	}})
	wantField(err, "checks[3].permission", "domain:veiw")
	resp, err := c.CheckPermission(ctx, &sigilv1.CheckPermissionRequest{Token: tok, Permission: "domain:view", Resource: "domains/example.com"})
	if err != nil || !resp.GetAllowed() {
		t.Fatalf("a known permission: %v, %v", resp, err)
	}

	pool, err := authz.NewPool(authz.PoolOptions{Addrs: []string{z.addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	err = authz.VerifyPermissions(ctx, pool, []string{"domain:view", "domain:veiw", "billing:view", "domain:renwe"})
	var ue *authz.UnknownPermissionsError
	if !errors.As(err, &ue) || !slices.Equal(ue.Permissions, []string{"domain:renwe", "domain:veiw"}) {
		t.Fatalf("VerifyPermissions = %v, want domain:renwe and domain:veiw unknown", err)
	}
	if err := authz.VerifyPermissions(ctx, pool, []string{"domain:view", "domain:renew"}); err != nil {
		t.Fatalf("VerifyPermissions of known permissions = %v", err)
	}

	p, _, _ := grpcProc(t, "domains", testproc.MustBuild(t, "examples/domains"), "--listen", "127.0.0.1:0", "--authorizers", z.addr)
	if err := p.WaitRecord(10*time.Second, "annotated permissions verified against the authority's catalog", nil); err != nil {
		t.Fatalf("the product did not verify its permissions: %v", err)
	}
}

// A SIGHUP reload of a routes file naming an unknown permission is refused
// like a broken file: ERROR naming the file and the permission, the
// previous policy stays.
func TestRoutesReloadUnknownPermissionRefused(t *testing.T) {
	a := startPairAuthority(t)
	routes := filepath.Join(t.TempDir(), "routes.yaml")
	if err := os.WriteFile(routes, []byte(nginxRoutes), 0o600); err != nil {
		t.Fatal(err)
	}
	z := startPairAuthorizer(t, a, "--routes", routes)
	if err := os.WriteFile(routes, []byte(strings.Replace(nginxRoutes, "permission: domain:renew", "permission: domain:renwe", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := z.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	line, err := z.proc.WaitLine(10*time.Second, func(l string) bool { return strings.Contains(l, "routes file not reloaded") })
	if err != nil {
		t.Fatalf("no refusal after SIGHUP: %v", err)
	}
	for _, want := range []string{"ERROR", routes, `unknown permission \"domain:renwe\"`, `route \"domain-renew\"`} {
		if !strings.Contains(line, want) {
			t.Errorf("the line lacks %s:\n%s", want, line)
		}
	}
	if err := testproc.WaitServing(z.addr, 5*time.Second); err != nil || z.proc.Exited() {
		t.Fatalf("authorizer after the refused reload: exited %v, %v", z.proc.Exited(), err)
	}
}
