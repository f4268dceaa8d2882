package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

const day = 24 * time.Hour

func ttlOf(d time.Duration) *sigilv1.CreateTokenRequest_Ttl {
	return &sigilv1.CreateTokenRequest_Ttl{Ttl: durationpb.New(d)}
}

func mintReq(org, name, by string, perms ...string) *sigilv1.CreateTokenRequest {
	if len(perms) == 0 {
		perms = []string{"domain:view"}
	}
	return &sigilv1.CreateTokenRequest{OrgId: org, Name: name, CreatedBy: by,
		Grants: []*sigilv1.Grant{{Permissions: perms}}, Expiry: ttlOf(30 * day)}
}

func code(err error) codes.Code { return status.Code(err) }

// TestEndToEnd drives the real binary over TCP through the whole API, then
// stops it with SIGTERM. It also checks that no secret reached the database
// file or the logs.
func TestEndToEnd(t *testing.T) {
	dir := t.TempDir()
	p := startProc(t, dir)
	ctx := p.op()
	c := p.client

	h, err := healthpb.NewHealthClient(p.conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", h, err)
	}
	var secrets []string
	var ids []string
	for i := range 5 {
		by := "alice"
		if i >= 3 {
			by = "bob"
		}
		r, err := c.CreateToken(ctx, mintReq("acme", fmt.Sprint("tok-", i), by))
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, r.GetToken())
		ids = append(ids, r.GetInfo().GetTokenId())
	}
	if _, err := c.CreateToken(ctx, mintReq("acme", "tok-0", "alice")); code(err) != codes.AlreadyExists {
		t.Fatalf("duplicate name: %v", err)
	}
	if _, err := c.CreateToken(ctx, &sigilv1.CreateTokenRequest{OrgId: "acme"}); code(err) != codes.InvalidArgument {
		t.Fatalf("bad request: %v", err)
	}

	// List with paging.
	var listed []string
	page := ""
	for {
		r, err := c.ListTokens(ctx, &sigilv1.ListTokensRequest{OrgId: "acme", PageSize: 2, PageToken: page})
		if err != nil {
			t.Fatal(err)
		}
		for _, tk := range r.GetTokens() {
			listed = append(listed, tk.GetTokenId())
		}
		if page = r.GetNextPageToken(); page == "" {
			break
		}
	}
	if len(listed) != 5 || listed[0] != ids[4] {
		t.Fatalf("listed %v", listed)
	}

	// Revoke, twice.
	r1, err := c.RevokeToken(ctx, &sigilv1.RevokeTokenRequest{TokenId: ids[0], Reason: "test"})
	if err != nil {
		t.Fatal(err)
	}
	r2, err := c.RevokeToken(ctx, &sigilv1.RevokeTokenRequest{TokenId: ids[0]})
	if err != nil || r2.GetRevision() != r1.GetRevision() {
		t.Fatalf("idempotent revoke: %v %v", r2, err)
	}
	// Bulk by creator: bob's two.
	b, err := c.RevokeTokens(ctx, &sigilv1.RevokeTokensRequest{OrgId: "acme", CreatedBy: "bob", Reason: "left"})
	if err != nil || b.GetRevokedCount() != 2 {
		t.Fatalf("bulk: %v %v", b, err)
	}
	// Rotate tok-1.
	rot, err := c.RotateToken(ctx, &sigilv1.RotateTokenRequest{TokenId: ids[1], Expiry: &sigilv1.RotateTokenRequest_Ttl{Ttl: durationpb.New(10 * day)}})
	if err != nil || rot.GetInfo().GetName() != "tok-1" {
		t.Fatalf("rotate: %v %v", rot, err)
	}
	secrets = append(secrets, rot.GetToken())
	if g, err := c.GetToken(ctx, &sigilv1.GetTokenRequest{TokenId: ids[1]}); err != nil || g.GetInfo().GetState() != sigilv1.TokenState_TOKEN_STATE_REVOKED {
		t.Fatalf("rotated-away token: %v %v", g, err)
	}
	// Audit.
	a, err := c.ListAuditEvents(ctx, &sigilv1.ListAuditEventsRequest{OrgId: "acme", PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(a.GetEvents()); n != 8 { // 5 created, 1 revoked, 1 bulk, 1 rotated
		t.Fatalf("%d audit events: %v", n, a.GetEvents())
	}
	// Keys: rotate, wait for activation, revoke the old one.
	ks, err := c.ListSigningKeys(ctx, &sigilv1.ListSigningKeysRequest{})
	if err != nil || len(ks.GetKeys()) != 1 {
		t.Fatalf("keys: %v %v", ks, err)
	}
	oldKey := ks.GetKeys()[0].GetKeyId()
	nk, err := c.RotateSigningKey(ctx, &sigilv1.RotateSigningKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := c.CreateToken(ctx, mintReq("acme", fmt.Sprint("k-", time.Now().UnixNano()), "carol"))
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, r.GetToken())
		if r.GetInfo().GetKeyId() == nk.GetKeyId() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("new key never signed")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := c.RevokeSigningKey(ctx, &sigilv1.RevokeSigningKeyRequest{KeyId: oldKey}); err != nil {
		t.Fatal(err)
	}
	old := p.withToken(secrets[2])
	if _, err := c.GetToken(old, &sigilv1.GetTokenRequest{Self: true}); code(err) != codes.Unauthenticated {
		t.Fatalf("token of revoked key: %v", err)
	}
	// Metrics.
	resp, err := http.Get("http://" + p.metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{"sigil_tokens_minted_total", "sigil_tokens_revoked_total", "sigil_watch_subscribers", "sigil_revision", "grpc_server_handled_total"} {
		if !strings.Contains(string(body), m) {
			t.Errorf("metrics lack %s", m)
		}
	}
	minted := len(secrets) // created, rotated and key-test tokens
	if v := metricValue(string(body), "sigil_tokens_minted_total"); v != float64(minted) {
		t.Errorf("sigil_tokens_minted_total = %v, want %d", v, minted)
	}
	if v := metricValue(string(body), "sigil_tokens_revoked_total"); v != 4 { // one, two in bulk, one rotated
		t.Errorf("sigil_tokens_revoked_total = %v, want 4", v)
	}
	if !strings.Contains(string(body), `grpc_server_handled_total{grpc_code="AlreadyExists",grpc_method="CreateToken"`) {
		t.Error("per-method, per-code RPC counts missing")
	}

	// A second process on the same data dir exits (after --lock-timeout,
	// 1s here) with a clear error instead of waiting for the lock.
	if _, err := tryStart(t, dir); err == nil || !strings.Contains(err.Error(), "in use by another process") {
		t.Fatalf("second process: %v", err)
	}

	// An open revocation stream ends with UNAVAILABLE on SIGTERM, and the
	// process exits cleanly (--shutdown-timeout is 5s; the 30s bound only
	// catches a hang).
	ws, err := c.WatchRevocations(p.watchCtx(), &sigilv1.WatchRevocationsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		m, err := ws.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if m.GetSnapshotEnd() != nil {
			break
		}
	}
	streamErr := make(chan error, 1)
	go func() {
		for {
			if _, err := ws.Recv(); err != nil {
				streamErr <- err
				return
			}
		}
	}()
	p.term(t, 30*time.Second)
	// The process has exited: the stream has ended by now, or never will.
	select {
	case err := <-streamErr:
		if code(err) != codes.Unavailable {
			t.Fatalf("stream ended with %v, want UNAVAILABLE", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("stream not ended by SIGTERM")
	}

	// No token string and no credential in the database file or the logs.
	db, err := os.ReadFile(filepath.Join(dir, "sigil.db"))
	if err != nil {
		t.Fatal(err)
	}
	logs := p.Logs.String()
	forbidden := append([]string{p.secret("operator.token"), p.secret("watch.token"), p.secret("kek")}, secrets...)
	for _, s := range forbidden {
		body := s
		for _, prefix := range []string{"sigil_pat_", "sigil_op_", "sigil_watch_"} {
			body = strings.TrimPrefix(body, prefix)
		}
		if len(body) > 24 {
			body = body[:24] // a fragment of the secret part is already a leak
		}
		if strings.Contains(string(db), body) || strings.Contains(logs, body) {
			t.Fatalf("a secret appears in the database file or the logs")
		}
	}
	if !strings.Contains(logs, "operator.token") {
		t.Fatal("the operator token file's path is not logged")
	}
}

func (p *proc) withToken(tok string) context.Context {
	return metadataCtx("authorization", "Bearer "+tok)
}

// metricValue returns the value of an unlabelled metric in a Prometheus
// text exposition, or -1.
func metricValue(body, name string) float64 {
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			var v float64
			if _, err := fmt.Sscan(rest, &v); err == nil {
				return v
			}
		}
	}
	return -1
}
