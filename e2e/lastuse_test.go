package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/pkg/token"
)

// TestLastUse: a check allowed by a real authorizer (--usage-interval 1s)
// makes the token's last_use_time appear on the real authority; denied
// checks (a genuine token lacking the permission, a forged token carrying
// a real token's id) never do; ListTokens' unused_since and expire_before
// select what they say.
func TestLastUse(t *testing.T) {
	a := startPairAuthority(t)
	z := startPairAuthorizer(t, a, "--usage-interval", "1s")
	conn, err := grpc.NewClient(z.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	authorizer := sigilv1.NewAuthorizerServiceClient(conn)

	const org = "org-lastuse"
	used, usedID := a.mint(t, org, []string{"domain:view"})
	lacking, lackingID := a.mint(t, org, []string{"domain:view"})
	_, victimID := a.mint(t, org, []string{"domain:view"})
	long, err := a.client.CreateToken(a.operator(t), &sigilv1.CreateTokenRequest{
		OrgId: org, Name: "long-lived", CreatedBy: "alice", Grants: []*sigilv1.Grant{{Permissions: []string{"domain:view"}}},
		Expiry: &sigilv1.CreateTokenRequest_Ttl{Ttl: durationpb.New(30 * 24 * time.Hour)},
	})
	if err != nil {
		t.Fatal(err)
	}
	forged := forge(t, a, victimID)

	check := func(tok, perm string) bool {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r, err := authorizer.CheckPermission(ctx, &sigilv1.CheckPermissionRequest{Token: tok, Permission: perm, OrgId: org})
		if err != nil {
			t.Fatalf("CheckPermission: %v", err)
		}
		return r.GetAllowed()
	}
	// Denials first: had they been recorded, they would be reported with
	// (or before) the allowed use below.
	if check(lacking, "domain:renew") {
		t.Fatal("a token without domain:renew was allowed it")
	}
	if check(forged, "domain:view") {
		t.Fatal("the forged token was allowed")
	}
	before := time.Now().Truncate(time.Minute)
	for range 5 {
		if !check(used, "domain:view") {
			t.Fatal("the genuine token was denied")
		}
	}
	checked := time.Now()

	info := func(id string) *sigilv1.TokenInfo {
		t.Helper()
		r, err := a.client.GetToken(a.operator(t), &sigilv1.GetTokenRequest{TokenId: id})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetInfo()
	}
	var last time.Time
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if lu := info(usedID).GetLastUseTime(); lu != nil {
			last = lu.AsTime()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("last_use_time did not appear within 30s with --usage-interval 1s")
		}
	}
	t.Logf("last_use_time %v appeared %v after the checks", last, time.Since(checked).Round(10*time.Millisecond))
	if last.Before(before) || last.After(checked) || last.Second() != 0 || last.Nanosecond() != 0 {
		t.Fatalf("last_use_time %v: want the whole minute of the checks (%v to %v)", last, before, checked)
	}
	for name, id := range map[string]string{"denied genuine token": lackingID, "forged token's id": victimID, "unchecked token": long.GetInfo().GetTokenId()} {
		if lu := info(id).GetLastUseTime(); lu != nil {
			t.Errorf("%s has last_use_time %v", name, lu.AsTime())
		}
	}

	list := func(req *sigilv1.ListTokensRequest) map[string]bool {
		t.Helper()
		req.OrgId = org
		r, err := a.client.ListTokens(a.operator(t), req)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, x := range r.GetTokens() {
			out[x.GetTokenId()] = true
			if x.GetTokenId() == usedID && !x.GetLastUseTime().AsTime().Equal(last) {
				t.Errorf("ListTokens shows last_use_time %v, GetToken %v", x.GetLastUseTime().AsTime(), last)
			}
		}
		return out
	}
	unused := list(&sigilv1.ListTokensRequest{UnusedSince: timestamppb.New(last)})
	if len(unused) != 3 || unused[usedID] {
		t.Errorf("unused since the use: %v, want the three other tokens", unused)
	}
	if all := list(&sigilv1.ListTokensRequest{UnusedSince: timestamppb.New(last.Add(time.Minute))}); len(all) != 4 {
		t.Errorf("unused since a minute after the use: %v, want all four", all)
	}
	// a.mint's tokens live 7 days, the long-lived one 30.
	week := timestamppb.New(time.Now().Add(8 * 24 * time.Hour))
	soon := list(&sigilv1.ListTokensRequest{ExpireBefore: week})
	if len(soon) != 3 || soon[long.GetInfo().GetTokenId()] {
		t.Errorf("expiring within 8 days: %v, want the three 7-day tokens", soon)
	}
	both := list(&sigilv1.ListTokensRequest{UnusedSince: timestamppb.New(last), ExpireBefore: week})
	if len(both) != 2 || both[usedID] || both[long.GetInfo().GetTokenId()] {
		t.Errorf("unused and expiring within 8 days: %v, want the denied and the forged one's", both)
	}
}

// forge returns a well-formed token carrying the id, organization, key id
// and grants of the real token id, signed by a key the authority never
// had: its checksum holds, its signature does not.
func forge(t *testing.T, a *pairAuthority, id string) string {
	t.Helper()
	r, err := a.client.GetToken(a.operator(t), &sigilv1.GetTokenRequest{TokenId: id})
	if err != nil {
		t.Fatal(err)
	}
	info := r.GetInfo()
	tid, err := token.ParseID(id)
	if err != nil {
		t.Fatal(err)
	}
	var grants []scope.Grant
	for _, g := range info.GetGrants() {
		grants = append(grants, scope.Grant{Permissions: g.GetPermissions(), Resources: g.GetResources()})
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	codec, err := token.NewCodec("")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := codec.Mint(token.Claims{ID: tid, OrgID: info.GetOrgId(), KeyID: info.GetKeyId(),
		IssuedAt: info.GetCreateTime().AsTime(), ExpiresAt: info.GetExpireTime().AsTime(), Grants: grants}, priv)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
