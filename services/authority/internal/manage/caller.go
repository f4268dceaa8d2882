package manage

import (
	"context"
	"errors"
	"time"

	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/pkg/token"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// Kind is the kind of a caller.
type Kind int

// Caller kinds.
const (
	Anonymous Kind = iota // no credential
	Operator              // the operator credential
	Watch                 // the watch credential
	PAT                   // a personal access token
	Reporter              // the reporter credential: ReportLeakedTokens only
)

// Caller is an authenticated caller.
type Caller struct {
	Kind  Kind
	Token store.Token // PAT: the stored row of the presenting token
}

// Actor is the audit actor: "operator", "reporter" or "token:<id>".
func (c *Caller) Actor() string {
	switch c.Kind {
	case PAT:
		return "token:" + c.Token.ID
	case Reporter:
		return "reporter"
	}
	return "operator"
}

// Authenticate identifies the caller presenting cred ("" when there is
// none: Anonymous). A credential that is present but not valid is
// ErrUnauthenticated, with a message that never repeats it.
func (m *Manager) Authenticate(ctx context.Context, cred string) (*Caller, error) {
	if cred == "" {
		return &Caller{Kind: Anonymous}, nil
	}
	// Every comparison always runs, in constant time each.
	isOp, isWatch, isReporter := m.operator.Matches(cred), m.watch.Matches(cred), m.reporter.Matches(cred)
	switch {
	case isOp:
		return &Caller{Kind: Operator}, nil
	case isWatch:
		return &Caller{Kind: Watch}, nil
	case isReporter:
		return &Caller{Kind: Reporter}, nil
	}
	if len(cred) > token.MaxLen {
		return nil, unauthenticated("unknown credential")
	}
	claims, err := m.codec.Verify(cred, m.keys)
	if err != nil {
		return nil, unauthenticated("unknown credential")
	}
	if cut := m.keys.CutOf(claims.KeyID); !cut.IsZero() && !claims.IssuedAt.Before(cut) {
		return nil, unauthenticated("token revoked")
	}
	now := m.now()
	if err := claims.CheckTime(now, 0); err != nil {
		if errors.Is(err, token.ErrExpired) {
			return nil, unauthenticated("token expired")
		}
		return nil, unauthenticated("token not yet valid")
	}
	row, err := m.store.GetToken(ctx, claims.ID.String())
	if errors.Is(err, store.ErrNotFound) || (err == nil && row.OrgID != claims.OrgID) {
		return nil, unauthenticated("unknown credential")
	}
	if err != nil {
		return nil, err
	}
	switch row.StateAt(now) {
	case store.StateRevoked:
		return nil, unauthenticated("token revoked")
	case store.StateExpired:
		return nil, unauthenticated("token expired")
	}
	return &Caller{Kind: PAT, Token: row}, nil
}

// Access is what an RPC needs of its caller before anything else.
type Access int

// Accesses.
const (
	// AccessManage admits the operator and PATs (what a PAT may do is
	// each rule's business).
	AccessManage Access = iota
	// AccessOperator admits only the operator.
	AccessOperator
	// AccessWatch admits the watch credential and the operator, and
	// anonymous callers in dev mode: WatchRevocations and ConfirmHistory.
	AccessWatch
	// AccessReport admits the reporter credential and the operator:
	// ReportLeakedTokens.
	AccessReport
)

// Admit checks the caller's kind against the access an RPC needs: an
// anonymous caller is ErrUnauthenticated (unless admitted), any other
// mismatch ErrPermissionDenied.
func (m *Manager) Admit(c *Caller, a Access) error {
	if a == AccessReport {
		switch c.Kind {
		case Reporter, Operator:
			return nil
		case Anonymous:
			return unauthenticated("missing authorization: bearer credential")
		}
		return denied("ReportLeakedTokens needs the reporter credential or the operator's")
	}
	if a == AccessWatch {
		switch c.Kind {
		case Watch, Operator:
			return nil
		case Anonymous:
			if m.dev {
				return nil
			}
			return unauthenticated("missing authorization: bearer credential")
		}
		return denied("WatchRevocations and ConfirmHistory need the watch credential")
	}
	switch {
	case c.Kind == Anonymous:
		return unauthenticated("missing authorization: bearer credential")
	case c.Kind == Watch:
		return denied("the watch credential may only call WatchRevocations and ConfirmHistory")
	case c.Kind == Reporter:
		return denied(reporterOnly)
	case a == AccessOperator && c.Kind != Operator:
		return denied("only the operator manages signing keys")
	}
	return nil
}

// CanManage reports whether the caller may manage the tokens of org: the
// operator any organization's, a PAT holding TokensPermission its own.
func (c *Caller) CanManage(org string) error {
	switch c.Kind {
	case Operator:
		return nil
	case PAT:
		if scope.Match(c.Token.Grants, TokensPermission, "") != scope.Allowed {
			return denied("the calling token lacks " + TokensPermission)
		}
		if c.Token.OrgID != org {
			return denied("the calling token belongs to another organization")
		}
		return nil
	case Watch:
		return denied("the watch credential may only call WatchRevocations and ConfirmHistory")
	case Reporter:
		return denied(reporterOnly)
	}
	return unauthenticated("missing authorization: bearer credential")
}

// CheckNoEscalation refuses a PAT caller handing out grants beyond its own
// or an expiry later than its own.
func (c *Caller) CheckNoEscalation(grants []scope.Grant, expire time.Time) error {
	if c.Kind != PAT {
		return nil
	}
	if !scope.Subset(grants, c.Token.Grants) {
		return denied("grants exceed the calling token's grants")
	}
	if expire.After(c.Token.ExpireTime) {
		return denied("expiry is later than the calling token's expiry")
	}
	return nil
}

// Ref names the token a request acts on: its id, or the calling token
// itself (Self).
type Ref struct {
	ID   string
	Self bool
}

// target resolves ref and checks the caller may act on it: the operator
// any token, a PAT itself, a PAT holding TokensPermission those of its
// organization.
func (m *Manager) target(ctx context.Context, c *Caller, ref Ref) (store.Token, error) {
	if err := m.Admit(c, AccessManage); err != nil {
		return store.Token{}, err
	}
	if ref.Self {
		if c.Kind != PAT {
			return store.Token{}, denied("self needs a personal access token as credential")
		}
		return c.Token, nil
	}
	if c.Kind == PAT && ref.ID == c.Token.ID {
		return c.Token, nil
	}
	if c.Kind == PAT {
		// Check before the lookup, so that a token without the right
		// learns nothing about other tokens.
		if err := c.CanManage(c.Token.OrgID); err != nil {
			return store.Token{}, err
		}
	}
	t, err := m.store.GetToken(ctx, ref.ID)
	if err != nil {
		return store.Token{}, err
	}
	if err := c.CanManage(t.OrgID); err != nil {
		return store.Token{}, err
	}
	return t, nil
}

// reporterOnly is the refusal of any RPC but ReportLeakedTokens to the
// reporter credential.
const reporterOnly = "the reporter credential may only call ReportLeakedTokens"
