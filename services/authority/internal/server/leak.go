package server

import (
	"context"
	"strings"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/services/authority/internal/manage"
)

// Limits of a leak report.
const (
	maxLeakTokens    = 100
	maxLeakTokenLen  = 1 << 10
	maxLeakSourceLen = 200
	maxLeakURLLen    = 2 << 10
)

// ReportLeakedTokens takes strings found in public, from the operator or
// the reporter credential, and revokes at once every genuine token among
// them (with the tokens minted through it). A string that is not a genuine
// token of this deployment gets LEAK_OUTCOME_NOT_A_TOKEN and no token id.
// The revision covers every revocation of the report's tokens: an
// authorizer asked with it as min_revision denies them.
func (s *Server) ReportLeakedTokens(ctx context.Context, req *sigilv1.ReportLeakedTokensRequest) (*sigilv1.ReportLeakedTokensResponse, error) {
	c, err := s.authenticate(ctx, manage.AccessReport)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	var v violations
	checkLeakTokens(&v, req.GetTokens())
	switch {
	case req.GetSource() == "":
		v.add("source", "required: who found the strings, for example github-secret-scanning")
	case strings.TrimSpace(req.GetSource()) == "":
		v.add("source", "must not be blank")
	default:
		checkText(&v, "source", req.GetSource(), maxLeakSourceLen, false)
	}
	checkText(&v, "url", req.GetUrl(), maxLeakURLLen, false)
	// Both go into the revocation reason and the audit log.
	s.checkNoSecret(&v, "source", req.GetSource())
	s.checkNoSecret(&v, "url", req.GetUrl())
	if err := v.err(); err != nil {
		return nil, err
	}
	results, rev, err := s.mgr.ReportLeaked(ctx, c, req.GetTokens(), req.GetSource(), req.GetUrl())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	resp := &sigilv1.ReportLeakedTokensResponse{Results: make([]*sigilv1.LeakResult, len(results)), Revision: rev}
	for i, r := range results {
		resp.Results[i] = &sigilv1.LeakResult{Outcome: leakOutcomeToProto(r.Outcome), TokenId: r.TokenID}
		s.metrics.revoked.Add(float64(r.Revoked))
	}
	return resp, nil
}

// checkLeakTokens checks the count and sizes of the reported strings
// (never their content: that is the domain's business).
func checkLeakTokens(v *violations, toks []string) {
	switch n := len(toks); {
	case n == 0:
		v.add("tokens", "required: at least one string")
		return
	case n > maxLeakTokens:
		v.add("tokens", "at most %d strings per report", maxLeakTokens)
		return
	}
	for i, t := range toks {
		if len(t) > maxLeakTokenLen {
			v.add("tokens", "string %d is longer than %d bytes", i, maxLeakTokenLen)
			return
		}
	}
}

func leakOutcomeToProto(o manage.LeakOutcome) sigilv1.LeakOutcome {
	switch o {
	case manage.LeakNotAToken:
		return sigilv1.LeakOutcome_LEAK_OUTCOME_NOT_A_TOKEN
	case manage.LeakRevoked:
		return sigilv1.LeakOutcome_LEAK_OUTCOME_REVOKED
	case manage.LeakAlreadyRevoked:
		return sigilv1.LeakOutcome_LEAK_OUTCOME_ALREADY_REVOKED
	case manage.LeakExpired:
		return sigilv1.LeakOutcome_LEAK_OUTCOME_EXPIRED
	}
	return sigilv1.LeakOutcome_LEAK_OUTCOME_UNSPECIFIED
}
