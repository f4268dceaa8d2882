package server

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

func use(id string, at time.Time) *sigilv1.TokenUse {
	return &sigilv1.TokenUse{TokenId: id, LastUseTime: timestamppb.New(at)}
}

// TestReportTokenUse: the watch credential reports uses; GetToken and
// ListTokens show the minute; unknown tokens are skipped; no revision is
// taken.
func TestReportTokenUse(t *testing.T) {
	e := newEnv(t, envOpts{})
	a := e.mint("org-1", "a", "alice").GetInfo().GetTokenId()
	b := e.mint("org-1", "b", "alice").GetInfo().GetTokenId()
	rev := e.st.Revision()
	minute := e.clock.now().Truncate(time.Minute)
	resp, err := e.client.ReportTokenUse(withCred(watchToken), &sigilv1.ReportTokenUseRequest{Uses: []*sigilv1.TokenUse{
		use(a, minute), use(fmt.Sprintf("%032x", 12345), minute),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetRecorded() != 1 {
		t.Fatalf("recorded %d, want 1 (the unknown token skipped)", resp.GetRecorded())
	}
	if e.st.Revision() != rev {
		t.Fatalf("a report moved the revision from %d to %d", rev, e.st.Revision())
	}
	got, err := e.client.GetToken(op(), &sigilv1.GetTokenRequest{TokenId: a})
	if err != nil {
		t.Fatal(err)
	}
	if lu := got.GetInfo().GetLastUseTime(); lu == nil || !lu.AsTime().Equal(minute) {
		t.Fatalf("last_use_time %v, want %v", lu, minute)
	}
	got, err = e.client.GetToken(op(), &sigilv1.GetTokenRequest{TokenId: b})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetInfo().GetLastUseTime() != nil {
		t.Fatalf("token never used has last_use_time %v", got.GetInfo().GetLastUseTime())
	}
	// The operator may report too; a PAT, even a manager, may not.
	if _, err := e.client.ReportTokenUse(op(), &sigilv1.ReportTokenUseRequest{Uses: []*sigilv1.TokenUse{use(b, minute)}}); err != nil {
		t.Fatalf("operator: %v", err)
	}
	mgr := e.manager("org-1", "m", "alice")
	_, err = e.client.ReportTokenUse(withCred(mgr), &sigilv1.ReportTokenUseRequest{Uses: []*sigilv1.TokenUse{use(b, minute)}})
	wantCode(t, err, codes.PermissionDenied, "")
	_, err = e.client.ReportTokenUse(withCred(""), &sigilv1.ReportTokenUseRequest{})
	wantCode(t, err, codes.Unauthenticated, "")

	// ListTokens' filters, through the RPC.
	list := func(req *sigilv1.ListTokensRequest) []string {
		t.Helper()
		req.OrgId = "org-1"
		resp, err := e.client.ListTokens(op(), req)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, x := range resp.GetTokens() {
			ids = append(ids, x.GetTokenId())
		}
		return ids
	}
	// a and b were used at minute; the manager token never.
	if ids := list(&sigilv1.ListTokensRequest{UnusedSince: timestamppb.New(minute)}); len(ids) != 1 || ids[0] == a || ids[0] == b {
		t.Fatalf("unused since the use: %v, want only the manager token", ids)
	}
	if ids := list(&sigilv1.ListTokensRequest{UnusedSince: timestamppb.New(minute.Add(time.Minute))}); len(ids) != 3 {
		t.Fatalf("unused since after the use: %v, want all three", ids)
	}
	if ids := list(&sigilv1.ListTokensRequest{ExpireBefore: timestamppb.New(e.clock.now())}); len(ids) != 0 {
		t.Fatalf("expire before now: %v, want none", ids)
	}
	if ids := list(&sigilv1.ListTokensRequest{ExpireBefore: timestamppb.New(e.clock.now().Add(31 * day))}); len(ids) != 3 {
		t.Fatalf("expire before 31 days: %v, want all three", ids)
	}
	_, err = e.client.ListTokens(op(), &sigilv1.ListTokensRequest{OrgId: "org-1", UnusedSince: &timestamppb.Timestamp{Seconds: 1, Nanos: -1}})
	wantCode(t, err, codes.InvalidArgument, "unused_since")
	_, err = e.client.ListTokens(op(), &sigilv1.ListTokensRequest{OrgId: "org-1", ExpireBefore: &timestamppb.Timestamp{Seconds: -5}})
	wantCode(t, err, codes.InvalidArgument, "expire_before")
}

// TestReportTokenUseValidation: every malformed batch is INVALID_ARGUMENT
// naming the field, and records nothing.
func TestReportTokenUseValidation(t *testing.T) {
	e := newEnv(t, envOpts{})
	a := e.mint("org-1", "a", "alice").GetInfo().GetTokenId()
	minute := e.clock.now().Truncate(time.Minute)
	many := make([]*sigilv1.TokenUse, 1001)
	for i := range many {
		many[i] = use(fmt.Sprintf("%032x", i), minute)
	}
	for _, tc := range []struct {
		name  string
		uses  []*sigilv1.TokenUse
		field string
	}{
		{"too many", many, "uses"},
		{"empty id", []*sigilv1.TokenUse{use("", minute)}, "uses[0].token_id"},
		{"upper-case id", []*sigilv1.TokenUse{use(a, minute), use("ABCDEF0123456789ABCDEF0123456789", minute)}, "uses[1].token_id"},
		{"short id", []*sigilv1.TokenUse{use(a[:30], minute)}, "uses[0].token_id"},
		{"duplicate", []*sigilv1.TokenUse{use(a, minute), use(a, minute.Add(-time.Minute))}, "uses[1].token_id"},
		{"no time", []*sigilv1.TokenUse{{TokenId: a}}, "uses[0].last_use_time"},
		{"not a minute", []*sigilv1.TokenUse{use(a, minute.Add(time.Second))}, "uses[0].last_use_time"},
		{"nanos", []*sigilv1.TokenUse{use(a, minute.Add(time.Millisecond))}, "uses[0].last_use_time"},
		{"future", []*sigilv1.TokenUse{use(a, minute.Add(MaxUseSkew+2*time.Minute))}, "uses[0].last_use_time"},
		{"before 1970", []*sigilv1.TokenUse{{TokenId: a, LastUseTime: &timestamppb.Timestamp{Seconds: -60}}}, "uses[0].last_use_time"},
		{"invalid", []*sigilv1.TokenUse{{TokenId: a, LastUseTime: &timestamppb.Timestamp{Seconds: 60, Nanos: -1}}}, "uses[0].last_use_time"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.client.ReportTokenUse(withCred(watchToken), &sigilv1.ReportTokenUseRequest{Uses: tc.uses})
			wantCode(t, err, codes.InvalidArgument, tc.field)
		})
	}
	got, err := e.client.GetToken(op(), &sigilv1.GetTokenRequest{TokenId: a})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetInfo().GetLastUseTime() != nil {
		t.Fatalf("a rejected batch recorded a use: %v", got.GetInfo().GetLastUseTime())
	}
	// Within the skew is fine.
	resp, err := e.client.ReportTokenUse(withCred(watchToken), &sigilv1.ReportTokenUseRequest{Uses: []*sigilv1.TokenUse{use(a, minute.Add(2*time.Minute))}})
	if err != nil || resp.GetRecorded() != 1 {
		t.Fatalf("use within the skew: %v, %v", resp, err)
	}
}
