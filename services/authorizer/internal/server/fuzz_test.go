package server

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"testing"
	"time"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/pkg/token"
	"github.com/sigil-auth/sigil/services/authorizer/internal/decision"
)

// staticState is a synced, fresh state at revision 10 holding one key.
type staticState struct{ pub ed25519.PublicKey }

func (s staticState) Lookup(id string) (ed25519.PublicKey, bool, bool) {
	if id == "k1" {
		return s.pub, false, true
	}
	return nil, false, false
}

func (s staticState) Inspect(keyID string, _ token.ID) (ed25519.PublicKey, bool, bool, bool, uint64) {
	pub, _, ok := s.Lookup(keyID)
	return pub, ok, false, false, 10
}
func (staticState) Revision() uint64 { return 10 }
func (staticState) Ready() bool      { return true }
func (staticState) Synced() bool     { return true }
func (staticState) WaitFor(ctx context.Context, rev uint64) error {
	if rev <= 10 {
		return nil
	}
	<-ctx.Done()
	return ctx.Err()
}

// FuzzCheckPermission drives the CheckPermission and CheckPermissions
// handlers with arbitrary requests. It must never panic, never allow a
// token the test did not mint, and both RPCs must agree.
func FuzzCheckPermission(f *testing.F) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	codec, _ := token.NewCodec("")
	now := time.Now()
	minted := map[string]bool{}
	mint := func(org string, grants ...scope.Grant) string {
		id, _ := token.NewID()
		tok, err := codec.Mint(token.Claims{ID: id, OrgID: org, KeyID: "k1", IssuedAt: now.Add(-time.Hour), ExpiresAt: now.Add(time.Hour), Grants: grants}, priv)
		if err != nil {
			f.Fatal(err)
		}
		minted[tok] = true
		return tok
	}
	_, foreign, _ := ed25519.GenerateKey(rand.Reader)
	forgedID, _ := token.NewID()
	forged, _ := codec.Mint(token.Claims{ID: forgedID, OrgID: "org-a", KeyID: "k1", IssuedAt: now.Add(-time.Hour), ExpiresAt: now.Add(time.Hour), Grants: []scope.Grant{{Permissions: []string{"domain:view"}}}}, foreign)

	seeds := []string{
		mint("org-a", scope.Grant{Permissions: []string{"domain:view", "domain:renew"}, Resources: []string{"domains/example.com"}}),
		mint("org-b", scope.Grant{Permissions: []string{"billing:view"}}),
		forged, "", "sigil_pat_", "sigil_pat_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
	}
	for _, tok := range seeds {
		for _, pr := range [][2]string{{"domain:view", "domains/example.com"}, {"domain:renew", "domains/example.com/records/www"}, {"billing:view", ""}, {"x", "y"}, {"", ""}} {
			f.Add(tok, pr[0], pr[1], "org-a", uint64(0))
			f.Add(tok, pr[0], pr[1], "", uint64(11))
		}
	}

	st := staticState{pub: pub}
	dec, err := decision.New(decision.Options{Codec: codec, State: st, Leeway: 30 * time.Second, CacheSize: 16})
	if err != nil {
		f.Fatal(err)
	}
	srv := New(Options{Decider: dec, Follower: st, MaxWait: time.Millisecond})

	f.Fuzz(func(t *testing.T, tok, perm, res, org string, minRev uint64) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		defer cancel()
		one, err1 := srv.CheckPermission(ctx, &sigilv1.CheckPermissionRequest{Token: tok, Permission: perm, Resource: res, OrgId: org, MinRevision: minRev})
		many, err2 := srv.CheckPermissions(ctx, &sigilv1.CheckPermissionsRequest{Token: tok, OrgId: org, MinRevision: minRev, Checks: []*sigilv1.PermissionCheck{{Permission: perm, Resource: res}}})
		if err1 != nil {
			if one != nil {
				t.Fatal("a response came with an error")
			}
			return
		}
		if one.GetAllowed() && !minted[tok] {
			t.Fatalf("allowed a token the test did not mint")
		}
		if one.GetAllowed() != (one.GetReason() == sigilv1.DenyReason_DENY_REASON_UNSPECIFIED) {
			t.Fatalf("allowed %v with reason %v", one.GetAllowed(), one.GetReason())
		}
		if one.GetTokenId() != "" && !minted[tok] {
			t.Fatalf("reported the id of a token whose signature cannot have verified")
		}
		if err2 != nil {
			t.Fatalf("CheckPermissions failed where CheckPermission answered: %v", err2)
		}
		if r := many.GetResults()[0]; r.GetAllowed() != one.GetAllowed() || r.GetReason() != one.GetReason() {
			t.Fatalf("CheckPermissions %v disagrees with CheckPermission %v", r, one)
		}
	})
}
