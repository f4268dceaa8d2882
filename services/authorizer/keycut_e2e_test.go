package main

// RevokeSigningKey with issued_after and RevokeToken by token string, end
// to end with the real binaries: the two steps of the restore procedure
// (docs/operations.md).

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sigil-auth/sigil/internal/testproc"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

func TestE2EKeyCut(t *testing.T) {
	a := startAuthority(t, t.TempDir(), "127.0.0.1:0")
	z := startAuthorizer(t, a)
	old, _ := a.mint(t)
	// Issue times are whole seconds; the cut voids its own second.
	time.Sleep(1100 * time.Millisecond)
	cut := time.Now()
	time.Sleep(1100 * time.Millisecond)
	newer, _ := a.mint(t)
	wantDecision(t, z, newer, 0, allowed)

	ks, err := a.client.ListSigningKeys(a.op(t), &sigilv1.ListSigningKeysRequest{})
	if err != nil || len(ks.GetKeys()) != 1 {
		t.Fatalf("ListSigningKeys: %v %v", ks, err)
	}
	keyID := ks.GetKeys()[0].GetKeyId()
	resp, err := a.client.RevokeSigningKey(a.op(t), &sigilv1.RevokeSigningKeyRequest{KeyId: keyID, IssuedAfter: timestamppb.New(cut)})
	if err != nil {
		t.Fatalf("RevokeSigningKey issued_after: %v", err)
	}
	wantDecision(t, z, newer, resp.GetRevision(), sigilv1.DenyReason_DENY_REASON_KEY_REVOKED)
	wantDecision(t, z, old, resp.GetRevision(), allowed)

	// The key stopped signing and announces its cut.
	ks, err = a.client.ListSigningKeys(a.op(t), &sigilv1.ListSigningKeysRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var k *sigilv1.SigningKey
	for _, x := range ks.GetKeys() {
		if x.GetKeyId() == keyID {
			k = x
		}
	}
	if k.GetState() != sigilv1.SigningKeyState_SIGNING_KEY_STATE_VERIFY_ONLY || !k.GetRevokedIssuedAfter().AsTime().Equal(cut.Truncate(time.Second)) {
		t.Fatalf("cut key: %v", k)
	}
	// A later cut does not widen it; an invalid one is refused naming the field.
	if _, err := a.client.RevokeSigningKey(a.op(t), &sigilv1.RevokeSigningKeyRequest{KeyId: keyID, IssuedAfter: timestamppb.New(cut.Add(time.Hour))}); err != nil {
		t.Fatal(err)
	}
	wantDecision(t, z, newer, 0, sigilv1.DenyReason_DENY_REASON_KEY_REVOKED)
	_, err = a.client.RevokeSigningKey(a.op(t), &sigilv1.RevokeSigningKeyRequest{KeyId: keyID, IssuedAfter: &timestamppb.Timestamp{Seconds: -5}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "issued_after") {
		t.Fatalf("bad issued_after: %v", err)
	}

	// A replacement key activates after the activation delay and signs.
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := a.client.CreateToken(a.op(t), &sigilv1.CreateTokenRequest{
			OrgId: "org-a", Name: "after-cut", CreatedBy: "alice",
			Grants: []*sigilv1.Grant{{Permissions: []string{"domain:view"}, Resources: []string{"domains/example.com"}}},
			Expiry: &sigilv1.CreateTokenRequest_Ttl{Ttl: durationpbDays(10)},
		})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no token minted after the cut: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	fresh, _ := a.mint(t)
	wantDecision(t, z, fresh, 0, allowed)
}

func TestE2ERevokeByTokenString(t *testing.T) {
	dataDir := t.TempDir()
	addr := testproc.FreeAddr(t)
	a := startAuthority(t, dataDir, addr)
	z := startAuthorizer(t, a)
	backup := filepath.Join(t.TempDir(), "backup.db")
	copyFile(t, filepath.Join(dataDir, dbFile), backup)
	// Minted after the backup: the restored store has no record of it.
	ghost, ghostID := a.mint(t)
	a.term(t, 10*time.Second)
	copyFile(t, backup, filepath.Join(dataDir, dbFile))
	// Below the revision it acknowledged: a restore starts with --restored.
	a = startAuthority(t, dataDir, addr, "--restored")
	wantDecision(t, z, ghost, 0, allowed) // still works: the bug this fixes

	_, err := a.client.RevokeToken(a.op(t), &sigilv1.RevokeTokenRequest{TokenId: ghostID})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("RevokeToken by id of an unrecorded token: %v, want NOT_FOUND", err)
	}
	for _, bad := range []*sigilv1.RevokeTokenRequest{
		{Token: ghost, TokenId: ghostID},
		{Token: ghost, Self: true},
		{Token: ghost[:len(ghost)-3] + "AAA"},
		{Token: "not-a-token"},
	} {
		_, err := a.client.RevokeToken(a.op(t), bad)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "token") || strings.Contains(err.Error(), ghost) {
			t.Fatalf("bad request: %v, want INVALID_ARGUMENT naming token without echoing it", err)
		}
	}
	// A PAT of another organization may not; nothing learned.
	other := mintIn(t, a, "org-b", "organization:tokens")
	ctx := metadataBearer(t, other)
	if _, err := a.client.RevokeToken(ctx, &sigilv1.RevokeTokenRequest{Token: ghost}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("other organization's manager: %v, want PERMISSION_DENIED", err)
	}

	resp, err := a.client.RevokeToken(a.op(t), &sigilv1.RevokeTokenRequest{Token: ghost, Reason: "leaked after restore"})
	if err != nil {
		t.Fatalf("RevokeToken by string: %v", err)
	}
	if resp.GetInfo().GetTokenId() != ghostID || resp.GetInfo().GetState() != sigilv1.TokenState_TOKEN_STATE_REVOKED {
		t.Fatalf("response: %v", resp)
	}
	wantDecision(t, z, ghost, resp.GetRevision(), sigilv1.DenyReason_DENY_REASON_REVOKED)
	// Again: OK, nothing new.
	again, err := a.client.RevokeToken(a.op(t), &sigilv1.RevokeTokenRequest{Token: ghost})
	if err != nil || again.GetRevision() < resp.GetRevision() {
		t.Fatalf("second revocation: %v %v", again, err)
	}
	// Audited, and a restarted authority still sends it (snapshot).
	audit, err := a.client.ListAuditEvents(a.op(t), &sigilv1.ListAuditEventsRequest{OrgId: "org-a"})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range audit.GetEvents() {
		if e.GetTokenId() == ghostID && e.GetAction() == sigilv1.AuditAction_AUDIT_ACTION_TOKEN_REVOKED && e.GetActor() == "operator" {
			found = true
		}
	}
	if !found {
		t.Fatalf("no audit record of the revocation: %v", audit.GetEvents())
	}
	z2 := startAuthorizer(t, a)
	wantDecision(t, z2, ghost, 0, sigilv1.DenyReason_DENY_REASON_REVOKED)
	// The string is never logged.
	a.term(t, 10*time.Second)
	if strings.Contains(a.Logs.String(), ghost) {
		t.Fatal("the authority logged the token string")
	}
	if db, err := os.ReadFile(filepath.Join(dataDir, dbFile)); err != nil || strings.Contains(string(db), ghost) {
		t.Fatalf("the database file holds the token string (or cannot be read: %v)", err)
	}
}

func durationpbDays(n int) *durationpb.Duration {
	return durationpb.New(time.Duration(n) * 24 * time.Hour)
}

// mintIn mints, as the operator, a token of org holding perm.
func mintIn(t *testing.T, a *authority, org, perm string) string {
	t.Helper()
	resp, err := a.client.CreateToken(a.op(t), &sigilv1.CreateTokenRequest{
		OrgId: org, Name: "manager", CreatedBy: "bob",
		Grants: []*sigilv1.Grant{{Permissions: []string{perm}}},
		Expiry: &sigilv1.CreateTokenRequest_Ttl{Ttl: durationpbDays(10)},
	})
	if err != nil {
		t.Fatalf("CreateToken: %v", err)
	}
	return resp.GetToken()
}

func metadataBearer(t *testing.T, cred string) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+cred)
}
