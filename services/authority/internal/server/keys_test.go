package server

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

func TestSigningKeys(t *testing.T) {
	e := newEnv(t, envOpts{activationDelay: 300 * time.Millisecond})
	list := func() []*sigilv1.SigningKey {
		t.Helper()
		resp, err := e.client.ListSigningKeys(op(), &sigilv1.ListSigningKeysRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetKeys()
	}
	ks := list()
	if len(ks) != 1 || ks[0].GetState() != sigilv1.SigningKeyState_SIGNING_KEY_STATE_ACTIVE || len(ks[0].GetPublicKey()) != 32 {
		t.Fatalf("initial keys %v", ks)
	}
	first := ks[0].GetKeyId()
	oldTok := e.mint("org-1", "old", "alice")
	if oldTok.GetInfo().GetKeyId() != first {
		t.Fatal("token not signed by the active key")
	}
	mgr := e.manager("org-1", "mgr", "alice")

	t.Run("operator only", func(t *testing.T) {
		for name, ctx := range map[string]context.Context{"pat": withCred(mgr), "watch": withCred(watchToken)} {
			_, err := e.client.RotateSigningKey(ctx, &sigilv1.RotateSigningKeyRequest{})
			wantCode(t, err, codes.PermissionDenied, "")
			_, err = e.client.ListSigningKeys(ctx, &sigilv1.ListSigningKeysRequest{})
			wantCode(t, err, codes.PermissionDenied, "")
			_, err = e.client.RevokeSigningKey(ctx, &sigilv1.RevokeSigningKeyRequest{KeyId: first})
			wantCode(t, err, codes.PermissionDenied, "")
			_ = name
		}
		_, err := e.client.ListSigningKeys(context.Background(), &sigilv1.ListSigningKeysRequest{})
		wantCode(t, err, codes.Unauthenticated, "")
	})

	rot, err := e.client.RotateSigningKey(op(), &sigilv1.RotateSigningKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if rot.GetKeyId() == "" || rot.GetRevision() == 0 || !rot.GetActivateTime().AsTime().After(time.Now().Add(-time.Second)) {
		t.Fatalf("rotate: %v", rot)
	}
	if st := stateOf(list(), rot.GetKeyId()); st != sigilv1.SigningKeyState_SIGNING_KEY_STATE_PENDING {
		t.Fatalf("new key %v, want pending", st)
	}
	// Before activation, mints still use the old key.
	if k := e.mint("org-1", "before", "alice").GetInfo().GetKeyId(); k != first {
		t.Fatalf("minted with %s before activation", k)
	}
	deadline := time.Now().Add(10 * time.Second)
	for ks := list(); stateOf(ks, rot.GetKeyId()) != sigilv1.SigningKeyState_SIGNING_KEY_STATE_ACTIVE ||
		stateOf(ks, first) != sigilv1.SigningKeyState_SIGNING_KEY_STATE_VERIFY_ONLY; ks = list() {
		if time.Now().After(deadline) {
			t.Fatal("key never activated")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if k := e.mint("org-1", "after", "alice").GetInfo().GetKeyId(); k != rot.GetKeyId() {
		t.Fatalf("minted with %s after activation", k)
	}
	// Tokens of a verify-only key still work.
	if _, err := e.client.GetToken(withCred(oldTok.GetToken()), &sigilv1.GetTokenRequest{Self: true}); err != nil {
		t.Fatalf("verify-only key's token refused: %v", err)
	}

	rev, err := e.client.RevokeSigningKey(op(), &sigilv1.RevokeSigningKeyRequest{KeyId: first})
	if err != nil || rev.GetRevision() == 0 {
		t.Fatalf("revoke key: %v %v", rev, err)
	}
	if st := stateOf(list(), first); st != sigilv1.SigningKeyState_SIGNING_KEY_STATE_REVOKED {
		t.Fatalf("revoked key %v", st)
	}
	// Every token the revoked key signed stops working.
	_, err = e.client.GetToken(withCred(oldTok.GetToken()), &sigilv1.GetTokenRequest{Self: true})
	wantCode(t, err, codes.Unauthenticated, "")
	_, err = e.client.ListTokens(withCred(mgr), &sigilv1.ListTokensRequest{OrgId: "org-1"})
	wantCode(t, err, codes.Unauthenticated, "")

	_, err = e.client.RevokeSigningKey(op(), &sigilv1.RevokeSigningKeyRequest{KeyId: "nope"})
	wantCode(t, err, codes.NotFound, "")
	_, err = e.client.RevokeSigningKey(op(), &sigilv1.RevokeSigningKeyRequest{})
	wantCode(t, err, codes.InvalidArgument, "key_id")

	// Revoking the active key: minting waits for the replacement.
	if _, err := e.client.RevokeSigningKey(op(), &sigilv1.RevokeSigningKeyRequest{KeyId: rot.GetKeyId()}); err != nil {
		t.Fatal(err)
	}
	_, err = e.client.CreateToken(op(), &sigilv1.CreateTokenRequest{OrgId: "org-1", Name: "nokey", CreatedBy: "a",
		Grants: []*sigilv1.Grant{grant([]string{"domain:view"})}, Expiry: ttl(8 * day)})
	wantCode(t, err, codes.Unavailable, "")
	deadline = time.Now().Add(10 * time.Second)
	for {
		_, err = e.client.CreateToken(op(), &sigilv1.CreateTokenRequest{OrgId: "org-1", Name: "nokey", CreatedBy: "a",
			Grants: []*sigilv1.Grant{grant([]string{"domain:view"})}, Expiry: ttl(8 * day)})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no replacement key: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func stateOf(ks []*sigilv1.SigningKey, id string) sigilv1.SigningKeyState {
	for _, k := range ks {
		if k.GetKeyId() == id {
			return k.GetState()
		}
	}
	return sigilv1.SigningKeyState_SIGNING_KEY_STATE_UNSPECIFIED
}
