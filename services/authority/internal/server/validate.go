package server

import (
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/pkg/token"
	"github.com/sigil-auth/sigil/services/authority/internal/secrets"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// Field limits.
const (
	maxIdentLen       = 128 // org_id, name, created_by, key_id
	maxDescriptionLen = 1024
	maxReasonLen      = 512
	// expirySlack accepts an expires_at a few seconds outside the bounds:
	// the client computed it from its own clock a moment ago.
	expirySlack = 10 * time.Second
)

// checkIdent checks a required identifier-like field: 1..128 printable
// characters, no control characters.
func checkIdent(v *violations, field, s string, required bool) {
	if s == "" {
		if required {
			v.add(field, "required")
		}
		return
	}
	if strings.TrimSpace(s) == "" {
		v.add(field, "must not be blank")
		return
	}
	checkText(v, field, s, maxIdentLen, false)
}

// checkText checks free text: valid UTF-8, at most max bytes, printable
// (newlines and tabs allowed when multiline).
func checkText(v *violations, field, s string, max int, multiline bool) {
	if s == "" {
		return
	}
	if len(s) > max {
		v.add(field, "at most %d bytes", max)
		return
	}
	if !utf8.ValidString(s) {
		v.add(field, "not valid UTF-8")
		return
	}
	for _, r := range s {
		if multiline && (r == '\n' || r == '\t') {
			continue
		}
		if !unicode.IsPrint(r) && r != ' ' {
			v.add(field, "contains a control or non-printable character")
			return
		}
	}
}

// checkNoSecret refuses stored text (names, descriptions, reasons) that
// holds a token or a credential: an administrator pasting a secret into a
// description would otherwise put it in the database file and the audit
// log, which must never hold a secret. The message never repeats the text.
func (s *Server) checkNoSecret(v *violations, field, text string) {
	if text == "" {
		return
	}
	lower := strings.ToLower(text)
	for _, marker := range [...]string{s.codec.Prefix(), secrets.OperatorPrefix, secrets.WatchPrefix, secrets.ReporterPrefix} {
		if marker != "" && strings.Contains(lower, marker) {
			v.add(field, "looks like it holds a token or credential; never paste a secret here")
			return
		}
	}
}

// checkTokenRef checks token_id/self: exactly one.
func checkTokenRef(v *violations, id string, self bool) {
	switch {
	case id != "" && self:
		v.add("token_id", "give either token_id or self, not both")
	case id == "" && !self:
		v.add("token_id", "required unless self is set")
	case id != "":
		if _, err := token.ParseID(id); err != nil || len(id) != 32 || strings.ToLower(id) != id {
			v.add("token_id", "must be 32 lower-case hex characters")
		}
	}
}

// checkTokenString checks RevokeTokenRequest.token: exclusive with
// token_id and self, and no longer than any token. Whether it is a token of
// ours is the domain's business (it verifies the signature).
func checkTokenString(v *violations, tok, id string, self bool) {
	switch {
	case id != "" || self:
		v.add("token", "give only one of token, token_id and self")
	case len(tok) > token.MaxLen:
		v.add("token", "at most %d bytes", token.MaxLen)
	}
}

// checkPageSize returns the page size to use.
func checkPageSize(v *violations, n int32) int {
	switch {
	case n < 0:
		v.add("page_size", "must not be negative")
	case n > store.MaxPageSize:
		v.add("page_size", "at most %d", store.MaxPageSize)
	case n == 0:
		return store.DefaultPageSize
	}
	return int(n)
}

// expiry computes the expiry from expires_at or ttl and checks it against
// the bounds. It returns the expiry truncated to the second, as tokens carry.
func (s *Server) expiry(v *violations, now time.Time, at *timestamppb.Timestamp, ttl *durationpb.Duration) time.Time {
	switch {
	case at == nil && ttl == nil:
		v.add("ttl", "give the expiry as expires_at or ttl")
		return time.Time{}
	case at != nil:
		if err := at.CheckValid(); err != nil {
			v.add("expires_at", "invalid timestamp")
			return time.Time{}
		}
		exp := at.AsTime().Truncate(time.Second)
		d := exp.Sub(now)
		if d < s.minTTL-expirySlack || d > s.maxTTL+expirySlack {
			v.add("expires_at", "must be between %s and %s from now", s.minTTL, s.maxTTL)
			return time.Time{}
		}
		return exp
	default:
		if err := ttl.CheckValid(); err != nil {
			v.add("ttl", "invalid duration")
			return time.Time{}
		}
		d := ttl.AsDuration()
		if d < s.minTTL || d > s.maxTTL {
			v.add("ttl", "must be between %s and %s", s.minTTL, s.maxTTL)
			return time.Time{}
		}
		return now.Add(d).Truncate(time.Second)
	}
}

// grants validates and expands the requested grants with the catalog.
func (s *Server) grants(v *violations, in []*sigilv1.Grant) []scope.Grant {
	if len(in) == 0 {
		v.add("grants", "at least one grant is required")
		return nil
	}
	if len(in) > scope.MaxGrants {
		v.add("grants", "at most %d grants", scope.MaxGrants)
		return nil
	}
	gs := make([]scope.Grant, len(in))
	for i, g := range in {
		gs[i] = scope.Grant{Permissions: g.GetPermissions(), Resources: g.GetResources()}
	}
	out, err := s.catalog.Expand(gs)
	if err != nil {
		field, desc := grantViolation(err)
		v.add(field, "%s", desc)
		return nil
	}
	return out
}

// checkPageToken checks the length of a page token; the store decodes it.
func checkPageToken(v *violations, token string) {
	if len(token) > store.MaxPageTokenLen {
		v.add("page_token", "not a page token from a previous response")
	}
}
