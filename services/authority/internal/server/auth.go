package server

import (
	"context"
	"errors"
	"strings"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/pkg/token"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// Authentication is a helper every handler calls right after validating its
// request (not an interceptor): each RPC states in its own code which
// callers it admits, and validation errors come first as the handler order
// requires.

// tokensPermission lets a PAT manage its organization's tokens.
const tokensPermission = "organization:tokens"

type callerKind int

const (
	callerAnonymous callerKind = iota
	callerOperator
	callerWatch
	callerPAT
)

// caller is an authenticated caller.
type caller struct {
	kind  callerKind
	token store.Token // callerPAT: the stored row of the presenting token
}

// actor is the audit actor: "operator" or "token:<id>".
func (c *caller) actor() string {
	if c.kind == callerPAT {
		return "token:" + c.token.ID
	}
	return "operator"
}

// canManage reports whether the caller may manage tokens of org.
func (c *caller) canManage(org string) error {
	switch c.kind {
	case callerOperator:
		return nil
	case callerPAT:
		if scope.Match(c.token.Grants, tokensPermission, "") != scope.Allowed {
			return denied("the calling token lacks %s", tokensPermission)
		}
		if c.token.OrgID != org {
			return denied("the calling token belongs to another organization")
		}
		return nil
	}
	return denied("this credential may only watch revocations")
}

// bearer extracts the credential of the authorization metadata. ok is false
// when there is none.
func bearer(ctx context.Context) (string, bool, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) == 0 {
		return "", false, nil
	}
	if len(vals) > 1 {
		return "", true, errors.New("several authorization values")
	}
	v := vals[0]
	const p = "bearer "
	if len(v) <= len(p) || !strings.EqualFold(v[:len(p)], p) {
		return "", true, errors.New("authorization is not a bearer credential")
	}
	return strings.TrimSpace(v[len(p):]), true, nil
}

// authenticate identifies the caller. Every failure is UNAUTHENTICATED
// with a message that never echoes the credential.
func (s *Server) authenticate(ctx context.Context) (*caller, error) {
	cred, present, err := bearer(ctx)
	if !present {
		return nil, errorf(errUnauthenticated, "missing authorization: bearer credential")
	}
	if err != nil {
		return nil, errorf(errUnauthenticated, "%v", err)
	}
	// Both comparisons always run, in constant time each.
	isOp, isWatch := s.operator.Matches(cred), s.watch.Matches(cred)
	switch {
	case isOp:
		return &caller{kind: callerOperator}, nil
	case isWatch:
		return &caller{kind: callerWatch}, nil
	}
	if len(cred) > token.MaxLen {
		return nil, errorf(errUnauthenticated, "unknown credential")
	}
	claims, err := s.codec.Verify(cred, s.keys)
	if err != nil {
		// Only the error class, never the token.
		return nil, errorf(errUnauthenticated, "unknown credential")
	}
	now := s.now()
	if err := claims.CheckTime(now, 0); err != nil {
		if errors.Is(err, token.ErrExpired) {
			return nil, errorf(errUnauthenticated, "token expired")
		}
		return nil, errorf(errUnauthenticated, "token not yet valid")
	}
	row, err := s.store.GetToken(ctx, claims.ID.String())
	if errors.Is(err, store.ErrNotFound) {
		return nil, errorf(errUnauthenticated, "unknown credential")
	}
	if err != nil {
		return nil, err
	}
	if row.OrgID != claims.OrgID {
		return nil, errorf(errUnauthenticated, "unknown credential")
	}
	switch row.StateAt(now) {
	case store.StateRevoked:
		return nil, errorf(errUnauthenticated, "token revoked")
	case store.StateExpired:
		return nil, errorf(errUnauthenticated, "token expired")
	}
	return &caller{kind: callerPAT, token: row}, nil
}

// authenticateManager authenticates a caller of a management RPC: the
// operator or a PAT (what it may do is each handler's business). The watch
// credential is refused.
func (s *Server) authenticateManager(ctx context.Context) (*caller, error) {
	c, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	if c.kind == callerWatch {
		return nil, denied("the watch credential may only call WatchRevocations")
	}
	return c, nil
}

// authenticateOperator admits only the operator.
func (s *Server) authenticateOperator(ctx context.Context) (*caller, error) {
	c, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	if c.kind != callerOperator {
		return nil, denied("only the operator manages signing keys")
	}
	return c, nil
}

// authenticateWatcher admits the watch credential and the operator, and
// anonymous callers in dev mode. A credential that is present but wrong is
// refused even in dev mode.
func (s *Server) authenticateWatcher(ctx context.Context) (*caller, error) {
	if _, present, _ := bearer(ctx); !present && s.dev {
		return &caller{kind: callerAnonymous}, nil
	}
	c, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	if c.kind != callerWatch && c.kind != callerOperator {
		return nil, denied("WatchRevocations needs the watch credential")
	}
	return c, nil
}

// checkNoEscalation refuses a PAT caller handing out grants beyond its own
// or an expiry later than its own.
func (c *caller) checkNoEscalation(grants []scope.Grant, expire time.Time) error {
	if c.kind != callerPAT {
		return nil
	}
	if !scope.Subset(grants, c.token.Grants) {
		return denied("grants exceed the calling token's grants")
	}
	if expire.After(c.token.ExpireTime) {
		return denied("expiry is later than the calling token's expiry (%s)", c.token.ExpireTime.UTC().Format(time.RFC3339))
	}
	return nil
}
