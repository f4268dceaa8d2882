package main

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/sigil-auth/sigil/internal/testproc"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// startAuthorizer runs the real authorizer binary following p (with the
// watch credential p wrote) and waits until it serves.
func startAuthorizer(t *testing.T, p *proc) sigilv1.AuthorizerServiceClient {
	t.Helper()
	tp := testproc.StartWith(t, testproc.Options{Name: "authorizer"}, testproc.MustBuild(t, "services/authorizer"),
		"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--authority", p.addr,
		"--authority-token-file", filepath.Join(p.dataDir, "watch.token"), "--max-staleness", "2s", "--shutdown-timeout", "5s")
	t.Cleanup(func() {
		if err := tp.Stop(10 * time.Second); err != nil {
			t.Errorf("authorizer: %v", err)
		}
	})
	_, conn := tp.Listening(t, 30*time.Second)
	health := healthpb.NewHealthClient(conn)
	// The limit only guards against an authorizer that never gets ready.
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		resp, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{})
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("authorizer not serving: %v, %v\n%s", resp, err, tp.Logs.String())
		}
	}
	return sigilv1.NewAuthorizerServiceClient(conn)
}

// TestRevocationCascadeEndToEnd drives the real authority and authorizer
// binaries: the operator mints an admin PAT, the admin mints a child, the
// child a grandchild; the operator revokes the admin, and the authorizer,
// asked at the revocation's revision, denies all three as REVOKED. The audit
// log shows the cascade, and the file's invariants hold afterwards.
func TestRevocationCascadeEndToEnd(t *testing.T) {
	dir := t.TempDir()
	p := startProc(t, dir)
	z := startAuthorizer(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bearer := func(cred string) context.Context {
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+cred)
	}
	opCtx := bearer(p.secret("operator.token"))

	admin, err := p.client.CreateToken(opCtx, mintReq("acme", "admin", "alice", "organization:tokens", "domain:view"))
	if err != nil {
		t.Fatal(err)
	}
	childReq := mintReq("acme", "child", "", "organization:tokens", "domain:view")
	childReq.Expiry = ttlOf(20 * day)
	child, err := p.client.CreateToken(bearer(admin.GetToken()), childReq)
	if err != nil {
		t.Fatal(err)
	}
	grandReq := mintReq("acme", "grandchild", "", "domain:view")
	grandReq.Expiry = ttlOf(10 * day)
	grand, err := p.client.CreateToken(bearer(child.GetToken()), grandReq)
	if err != nil {
		t.Fatal(err)
	}
	if child.GetInfo().GetParentTokenId() != admin.GetInfo().GetTokenId() || grand.GetInfo().GetParentTokenId() != child.GetInfo().GetTokenId() {
		t.Fatalf("parents: child %q, grandchild %q", child.GetInfo().GetParentTokenId(), grand.GetInfo().GetParentTokenId())
	}
	toks := []*sigilv1.CreateTokenResponse{admin, child, grand}
	check := func(tk *sigilv1.CreateTokenResponse, minRev uint64) *sigilv1.CheckPermissionResponse {
		t.Helper()
		resp, err := z.CheckPermission(ctx, &sigilv1.CheckPermissionRequest{
			Token: tk.GetToken(), Permission: "domain:view", Resource: "domains/example.com", OrgId: "acme", MinRevision: minRev,
		})
		if err != nil {
			t.Fatalf("CheckPermission(%s): %v", tk.GetInfo().GetName(), err)
		}
		return resp
	}
	for _, tk := range toks {
		if r := check(tk, 0); !r.GetAllowed() {
			t.Fatalf("%s denied before the revocation: %v", tk.GetInfo().GetName(), r.GetReason())
		}
	}

	rev, err := p.client.RevokeToken(opCtx, &sigilv1.RevokeTokenRequest{TokenId: admin.GetInfo().GetTokenId(), Reason: "leaked"})
	if err != nil {
		t.Fatal(err)
	}
	if rev.GetDescendantsRevoked() != 2 {
		t.Fatalf("descendants_revoked = %d, want 2", rev.GetDescendantsRevoked())
	}
	for _, tk := range toks {
		r := check(tk, rev.GetRevision())
		if r.GetAllowed() || r.GetReason() != sigilv1.DenyReason_DENY_REASON_REVOKED || r.GetRevision() < rev.GetRevision() {
			t.Errorf("%s at revision %d: allowed %v, %v at %d; want REVOKED", tk.GetInfo().GetName(), rev.GetRevision(), r.GetAllowed(), r.GetReason(), r.GetRevision())
		}
	}

	log, err := p.client.ListAuditEvents(opCtx, &sigilv1.ListAuditEventsRequest{OrgId: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	want := store.CascadeReason(admin.GetInfo().GetTokenId(), "leaked")
	cascaded := map[string]uint64{}
	var adminRev uint64
	for _, ev := range log.GetEvents() {
		if ev.GetAction() != sigilv1.AuditAction_AUDIT_ACTION_TOKEN_REVOKED {
			continue
		}
		switch {
		case ev.GetTokenId() == admin.GetInfo().GetTokenId() && ev.GetReason() == "leaked":
			adminRev = ev.GetRevision()
		case ev.GetReason() == want && ev.GetActor() == "operator":
			cascaded[ev.GetTokenId()] = ev.GetRevision()
		}
	}
	c, g := cascaded[child.GetInfo().GetTokenId()], cascaded[grand.GetInfo().GetTokenId()]
	if len(cascaded) != 2 || g == 0 || c == 0 || !(g < c && c < adminRev) || adminRev != rev.GetRevision() {
		t.Fatalf("audit: cascade records %v (grandchild %d, child %d), admin at %d; want grandchild < child < admin = %d",
			cascaded, g, c, adminRev, rev.GetRevision())
	}

	p.term(t, 30*time.Second)
	if err := store.CheckFile(filepath.Join(dir, "sigil.db"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
}
