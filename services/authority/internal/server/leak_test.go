package server

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

func TestReportLeakedTokensValidation(t *testing.T) {
	e := newEnv(t, envOpts{})
	tok := e.mint("org-1", "victim", "alice").GetToken()
	many := make([]string, maxLeakTokens+1)
	for i := range many {
		many[i] = "x"
	}
	tests := []struct {
		name  string
		req   *sigilv1.ReportLeakedTokensRequest
		field string
	}{
		{"no tokens", &sigilv1.ReportLeakedTokensRequest{Source: "s"}, "tokens"},
		{"too many tokens", &sigilv1.ReportLeakedTokensRequest{Tokens: many, Source: "s"}, "tokens"},
		{"token too long", &sigilv1.ReportLeakedTokensRequest{Tokens: []string{tok, strings.Repeat("a", maxLeakTokenLen+1)}, Source: "s"}, "tokens"},
		{"no source", &sigilv1.ReportLeakedTokensRequest{Tokens: []string{tok}}, "source"},
		{"blank source", &sigilv1.ReportLeakedTokensRequest{Tokens: []string{tok}, Source: "   "}, "source"},
		{"source too long", &sigilv1.ReportLeakedTokensRequest{Tokens: []string{tok}, Source: strings.Repeat("s", maxLeakSourceLen+1)}, "source"},
		{"source with newline", &sigilv1.ReportLeakedTokensRequest{Tokens: []string{tok}, Source: "a\nb"}, "source"},
		{"url too long", &sigilv1.ReportLeakedTokensRequest{Tokens: []string{tok}, Source: "s", Url: "https://x/" + strings.Repeat("u", maxLeakURLLen)}, "url"},
		{"url holding the token", &sigilv1.ReportLeakedTokensRequest{Tokens: []string{tok}, Source: "s", Url: "https://x/?t=" + tok}, "url"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.client.ReportLeakedTokens(withCred(reporterToken), tc.req)
			wantCode(t, err, codes.InvalidArgument, tc.field)
		})
	}
	got, err := e.client.GetToken(op(), &sigilv1.GetTokenRequest{TokenId: e.mint("org-1", "other", "alice").GetInfo().GetTokenId()})
	if err != nil || got.GetInfo().GetState() != sigilv1.TokenState_TOKEN_STATE_ACTIVE {
		t.Fatalf("state after bad requests: %v %v", got, err)
	}
	info, err := e.client.ListTokens(op(), &sigilv1.ListTokensRequest{OrgId: "org-1", State: sigilv1.TokenState_TOKEN_STATE_REVOKED})
	if err != nil || len(info.GetTokens()) != 0 {
		t.Fatalf("bad requests revoked something: %v %v", info, err)
	}
}

func TestReportLeakedTokensCallers(t *testing.T) {
	e := newEnv(t, envOpts{})
	admin := e.mint("org-1", "admin", "alice", grant([]string{"organization:tokens", "domain:view"})).GetToken()
	req := func() *sigilv1.ReportLeakedTokensRequest {
		return &sigilv1.ReportLeakedTokensRequest{Tokens: []string{"not a token"}, Source: "scanner"}
	}
	for _, tc := range []struct {
		name string
		cred string
		code codes.Code
	}{
		{"anonymous", "", codes.Unauthenticated},
		{"watch credential", watchToken, codes.PermissionDenied},
		{"PAT holding organization:tokens", admin, codes.PermissionDenied},
		{"reporter credential", reporterToken, codes.OK},
		{"operator", opToken, codes.OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			if tc.cred != "" {
				ctx = withCred(tc.cred)
			}
			_, err := e.client.ReportLeakedTokens(ctx, req())
			if tc.code == codes.OK {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantCode(t, err, tc.code, "")
		})
	}
	_, err := e.client.ListTokens(withCred(reporterToken), &sigilv1.ListTokensRequest{OrgId: "org-1"})
	wantCode(t, err, codes.PermissionDenied, "")
}

func TestReportLeakedTokensRevokes(t *testing.T) {
	e := newEnv(t, envOpts{})
	victim := e.mint("org-1", "victim", "alice")
	resp, err := e.client.ReportLeakedTokens(withCred(reporterToken), &sigilv1.ReportLeakedTokensRequest{
		Tokens: []string{victim.GetToken(), "sigil_pat_nope", victim.GetToken()},
		Source: "github-secret-scanning", Url: "https://github.com/acme/app/blob/main/.env",
	})
	if err != nil {
		t.Fatal(err)
	}
	id := victim.GetInfo().GetTokenId()
	want := []struct {
		outcome sigilv1.LeakOutcome
		id      string
	}{
		{sigilv1.LeakOutcome_LEAK_OUTCOME_REVOKED, id},
		{sigilv1.LeakOutcome_LEAK_OUTCOME_NOT_A_TOKEN, ""},
		{sigilv1.LeakOutcome_LEAK_OUTCOME_REVOKED, id},
	}
	if len(resp.GetResults()) != len(want) {
		t.Fatalf("%d results, want %d", len(resp.GetResults()), len(want))
	}
	for i, w := range want {
		if r := resp.GetResults()[i]; r.GetOutcome() != w.outcome || r.GetTokenId() != w.id {
			t.Errorf("result %d: %v %q, want %v %q", i, r.GetOutcome(), r.GetTokenId(), w.outcome, w.id)
		}
	}
	got, err := e.client.GetToken(op(), &sigilv1.GetTokenRequest{TokenId: id})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetInfo().GetState() != sigilv1.TokenState_TOKEN_STATE_REVOKED || !strings.Contains(got.GetInfo().GetRevokeReason(), "github-secret-scanning") {
		t.Fatalf("token state %v reason %q, want revoked naming the source", got.GetInfo().GetState(), got.GetInfo().GetRevokeReason())
	}
	audit, err := e.client.ListAuditEvents(op(), &sigilv1.ListAuditEventsRequest{OrgId: "org-1"})
	if err != nil {
		t.Fatal(err)
	}
	leaks := 0
	for _, a := range audit.GetEvents() {
		if a.GetAction() == sigilv1.AuditAction_AUDIT_ACTION_TOKEN_LEAKED {
			leaks++
			if a.GetTokenId() != id || a.GetActor() != "reporter" || a.GetRevision() != resp.GetRevision() {
				t.Errorf("leak audit event %v: want token %s, actor reporter, revision %d", a, id, resp.GetRevision())
			}
		}
	}
	if leaks != 1 {
		t.Fatalf("%d leak audit events, want 1", leaks)
	}
	if strings.Contains(e.logs.String(), victim.GetToken()) {
		t.Fatal("the leaked token is in the logs")
	}
	again, err := e.client.ReportLeakedTokens(op(), &sigilv1.ReportLeakedTokensRequest{Tokens: []string{victim.GetToken()}, Source: "again"})
	if err != nil {
		t.Fatal(err)
	}
	if r := again.GetResults()[0]; r.GetOutcome() != sigilv1.LeakOutcome_LEAK_OUTCOME_ALREADY_REVOKED || again.GetRevision() != resp.GetRevision() {
		t.Fatalf("second report %v at %d, want ALREADY_REVOKED at %d", r.GetOutcome(), again.GetRevision(), resp.GetRevision())
	}
}
