package server

import (
	"context"
	"fmt"
	"time"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/pkg/token"
	"github.com/sigil-auth/sigil/services/authority/internal/manage"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// MaxUseSkew is how far in the future, by the authority's clock, a
// reported use may be: an authorizer's clock may run ahead by up to its
// --max-clock-skew (at most 5m) before it stops answering checks.
const MaxUseSkew = 5 * time.Minute

// maxUseViolations bounds the bad fields one answer names.
const maxUseViolations = 10

// ReportTokenUse records when tokens were last used, as an authorizer saw
// them (the watch credential, or the operator). Each use names a token id
// once and a whole minute not in the future (beyond MaxUseSkew). Uses of
// unknown tokens are skipped, as are uses not later than the recorded one;
// the answer counts the others and says nothing of which were which. A use
// takes no revision: it is not an event of the revocation stream.
func (s *Server) ReportTokenUse(ctx context.Context, req *sigilv1.ReportTokenUseRequest) (*sigilv1.ReportTokenUseResponse, error) {
	c, err := s.authenticate(ctx, manage.AccessWatch)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	uses, err := validateUses(req.GetUses(), s.now())
	if err != nil {
		return nil, err
	}
	n, err := s.mgr.ReportTokenUse(ctx, c, uses)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &sigilv1.ReportTokenUseResponse{Recorded: int32(n)}, nil
}

// validateUses checks a batch of uses against now and returns them for
// the store.
func validateUses(in []*sigilv1.TokenUse, now time.Time) ([]store.TokenUse, error) {
	var v violations
	if len(in) > store.MaxTokenUses {
		v.add("uses", "at most %d uses per call", store.MaxTokenUses)
		return nil, v.err()
	}
	latest := now.Add(MaxUseSkew)
	seen := make(map[string]bool, len(in))
	out := make([]store.TokenUse, 0, len(in))
	for i, u := range in {
		if len(v.list) >= maxUseViolations {
			break // enough to fix the caller; the message stays short
		}
		idField, timeField := fmt.Sprintf("uses[%d].token_id", i), fmt.Sprintf("uses[%d].last_use_time", i)
		id := u.GetTokenId()
		switch _, err := token.ParseID(id); {
		case err != nil || len(id) != 32:
			v.add(idField, "must be 32 lower-case hex characters")
		case seen[id]:
			v.add(idField, "names the same token as an earlier use; give one use per token")
		}
		seen[id] = true
		ts := u.GetLastUseTime()
		var at time.Time
		switch {
		case ts == nil:
			v.add(timeField, "required")
		case ts.CheckValid() != nil || ts.GetSeconds() <= 0:
			v.add(timeField, "not a valid time")
		case ts.GetNanos() != 0 || ts.GetSeconds()%60 != 0:
			v.add(timeField, "must be a whole minute (truncated)")
		default:
			if at = ts.AsTime(); at.After(latest) {
				v.add(timeField, "is in the future (more than %s ahead of the authority's clock)", MaxUseSkew)
			}
		}
		out = append(out, store.TokenUse{TokenID: id, Time: at})
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	return out, nil
}
