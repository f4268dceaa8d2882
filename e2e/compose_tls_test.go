package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sigil-auth/sigil/internal/testproc"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

// TestComposeTLS brings up the compose profile "tls": certificates from
// deploy/tlsgen, an authority requiring client certificates and an
// authorizer reaching it with its own. Both containers become healthy,
// which their health checks (the `healthcheck` subcommand with --tls-*
// flags) decide over TLS. From the host, an administrator with a client
// certificate mints a token; the authorizer, over TLS, allows it; a client
// without a certificate, and a plaintext client, are refused.
func TestComposeTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("builds images and runs containers")
	}
	needDocker(t)
	start := time.Now()
	c := newCompose(t)
	c.env = append(c.env, "COMPOSE_PROFILES=tls")
	t.Cleanup(func() {
		// Before newCompose's cleanup (LIFO): down with the profile, so
		// that its containers and volume go too.
		if out, err := c.cmd("scripts/compose.sh", "down", "-v", "--timeout", "20").CombinedOutput(); err != nil {
			t.Errorf("compose down: %v\n%s", err, out)
		}
	})
	for _, v := range []string{"SIGIL_TLS_AUTHORITY_PORT", "SIGIL_TLS_AUTHORIZER_PORT"} {
		addr := testproc.FreeAddr(t)
		c.port[v] = addr[strings.LastIndex(addr, ":")+1:]
		c.env = append(c.env, v+"="+c.port[v])
	}
	secrets := strings.TrimPrefix(c.env[2], "SIGIL_SECRETS_DIR=")
	certs := filepath.Join(secrets, "tls")
	c.run("go", "run", "./deploy/tlsgen", "-dir", certs)
	c.run("scripts/compose-up.sh", "authority-tls", "authorizer-tls")
	t.Logf("profile tls built and healthy in %s", time.Since(start).Round(time.Second))

	caPEM, err := os.ReadFile(filepath.Join(certs, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.pem holds no certificate")
	}
	admin, err := tls.LoadX509KeyPair(filepath.Join(certs, "admin.pem"), filepath.Join(certs, "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	dialTLS := func(addr string, cfg *tls.Config) *grpc.ClientConn {
		t.Helper()
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	authorityAddr, authorizerAddr := c.addr("SIGIL_TLS_AUTHORITY_PORT"), c.addr("SIGIL_TLS_AUTHORIZER_PORT")
	operator, err := os.ReadFile(filepath.Join(secrets, "operator.token"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	opCtx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+strings.TrimSpace(string(operator)))

	authority := sigilv1.NewTokenAuthorityServiceClient(dialTLS(authorityAddr, &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{admin}}))
	minted, err := authority.CreateToken(opCtx, &sigilv1.CreateTokenRequest{
		OrgId: "acme", Name: "over-tls", CreatedBy: "alice", Expiry: &sigilv1.CreateTokenRequest_Ttl{Ttl: durationpb.New(7 * 24 * time.Hour)},
		Grants: []*sigilv1.Grant{{Permissions: []string{"domain:view"}}},
	})
	if err != nil {
		t.Fatalf("mint over mTLS: %v", err)
	}
	authorizer := sigilv1.NewAuthorizerServiceClient(dialTLS(authorizerAddr, &tls.Config{RootCAs: pool}))
	got, err := authorizer.CheckPermission(ctx, &sigilv1.CheckPermissionRequest{Token: minted.GetToken(), Permission: "domain:view"})
	if err != nil {
		t.Fatalf("check over TLS: %v", err)
	}
	if !got.GetAllowed() {
		t.Fatalf("check over TLS: denied %v, want allowed", got.GetReason())
	}

	refused := func(what string, conn *grpc.ClientConn) {
		t.Helper()
		hctx, hcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer hcancel()
		if _, err := healthpb.NewHealthClient(conn).Check(hctx, &healthpb.HealthCheckRequest{}); err == nil {
			t.Errorf("%s: served, want refused", what)
		}
	}
	refused("authority without a client certificate", dialTLS(authorityAddr, &tls.Config{RootCAs: pool}))
	plain, err := grpc.NewClient(authorityAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	refused("authority over plaintext", plain)
	t.Logf("compose tls in %s", time.Since(start).Round(time.Second))
}
