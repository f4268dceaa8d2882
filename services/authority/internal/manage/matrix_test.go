package manage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/pkg/token"
	"github.com/sigil-auth/sigil/services/authority/internal/keys"
	"github.com/sigil-auth/sigil/services/authority/internal/secrets"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

const (
	opCred    = "sigil_op_test-operator-credential-0123456789"
	watchCred = "sigil_watch_test-watch-credential-0123456789"
	// reporterCred is the reporter credential (ReportLeakedTokens only).
	reporterCred = "sigil_reporter_test-reporter-credential-0123456789"
	day          = 24 * time.Hour
)

// newTestManager returns a Manager on a real bbolt store in t.TempDir().
func newTestManager(t testing.TB) *Manager {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "sigil.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	sealer, err := secrets.NewSealer(bytes.Repeat([]byte{42}, 32))
	if err != nil {
		t.Fatal(err)
	}
	km, err := keys.New(context.Background(), st, sealer, keys.Options{ActivationDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(km.Close)
	codec, err := token.NewCodec("")
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(Options{Store: st, Keys: km, Codec: codec, Catalog: scope.Builtin(),
		Operator: secrets.NewCredential(opCred), Watch: secrets.NewCredential(watchCred),
		Reporter: secrets.NewCredential(reporterCred)})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// outcome is what a call comes to.
type outcome int

const (
	allowed outcome = iota
	denied_
	unauth
)

func (o outcome) String() string { return [...]string{"allowed", "denied", "unauthenticated"}[o] }

func outcomeOf(err error) (outcome, error) {
	switch {
	case err == nil:
		return allowed, nil
	case errors.Is(err, ErrPermissionDenied):
		return denied_, nil
	case errors.Is(err, ErrUnauthenticated):
		return unauth, nil
	}
	return 0, err
}

// The callers of the matrix; every PAT belongs to organization "own".
const (
	operator = iota
	manager  // PAT holding organization:tokens
	plain    // PAT without organization:tokens
	watcher  // the watch credential
	reporter // the reporter credential
	anon     // no credential
	nCallers
)

var callerNames = [nCallers]string{"operator", "org manager PAT", "plain PAT", "watch credential", "reporter credential", "anonymous"}

// TestPermissionMatrix calls every rule as every kind of caller, on a
// target in the caller's own organization and in another one, against a
// real store, and checks each outcome.
func TestPermissionMatrix(t *testing.T) {
	ctx := context.Background()
	m := newTestManager(t)
	opC, err := m.Authenticate(ctx, opCred)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	mint := func(org string, perms ...string) (string, store.Token) {
		n++
		secret, tok, err := m.CreateToken(ctx, opC, NewToken{OrgID: org, Name: fmt.Sprint("t", n), CreatedBy: "alice",
			Grants: []scope.Grant{{Permissions: perms}}, Expire: m.now().Add(30 * day).Truncate(time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		return secret, tok
	}
	mgrSecret, _ := mint("own", TokensPermission, "domain:view")
	plainSecret, _ := mint("own", "domain:view")
	var callers [nCallers]*Caller
	for i, cred := range [nCallers]string{opCred, mgrSecret, plainSecret, watchCred, reporterCred, ""} {
		if callers[i], err = m.Authenticate(ctx, cred); err != nil {
			t.Fatal(err)
		}
	}
	orgOf := map[bool]string{true: "own", false: "other"}
	// Each call gets a fresh target (a token, or a key) where it changes one.
	calls := map[string]func(c *Caller, org string) error{
		"CreateToken": func(c *Caller, org string) error {
			n++
			_, _, err := m.CreateToken(ctx, c, NewToken{OrgID: org, Name: fmt.Sprint("new", n), Grants: []scope.Grant{{Permissions: []string{"domain:view"}}},
				CreatedBy: map[bool]string{true: "alice", false: ""}[c.Kind != PAT], Expire: m.now().Add(10 * day).Truncate(time.Second)})
			return err
		},
		"GetToken": func(c *Caller, org string) error {
			_, tok := mint(org, "domain:view")
			_, err := m.GetToken(ctx, c, Ref{ID: tok.ID})
			return err
		},
		"ListTokens": func(c *Caller, org string) error {
			_, _, err := m.ListTokens(ctx, c, store.ListFilter{OrgID: org, Now: m.now()})
			return err
		},
		"RevokeToken": func(c *Caller, org string) error {
			_, tok := mint(org, "domain:view")
			_, _, _, _, err := m.RevokeToken(ctx, c, Ref{ID: tok.ID}, "r")
			return err
		},
		"RevokeTokens": func(c *Caller, org string) error {
			_, _, err := m.RevokeTokens(ctx, c, org, "nobody", "r")
			return err
		},
		"RotateToken": func(c *Caller, org string) error {
			_, tok := mint(org, "domain:view")
			_, _, _, _, err := m.RotateToken(ctx, c, Ref{ID: tok.ID}, m.now().Add(10*day).Truncate(time.Second))
			return err
		},
		"ListPermissions": func(c *Caller, _ string) error { _, err := m.ListPermissions(c); return err },
		"ListAuditEvents": func(c *Caller, org string) error {
			_, _, err := m.ListAudit(ctx, c, store.AuditFilter{OrgID: org})
			return err
		},
		"WatchRevocations": func(c *Caller, _ string) error { return m.Watch(c) },
		"ConfirmHistory":   func(c *Caller, _ string) error { return m.ConfirmHistory(c) },
		"RotateSigningKey": func(c *Caller, _ string) error { _, _, err := m.RotateSigningKey(ctx, c); return err },
		"RevokeSigningKey": func(c *Caller, _ string) error {
			k, _, err := m.RotateSigningKey(ctx, opC)
			if err != nil {
				return err
			}
			_, err = m.RevokeSigningKey(ctx, c, k.ID)
			return err
		},
		"ListSigningKeys": func(c *Caller, _ string) error { _, err := m.ListSigningKeys(c); return err },
		"ReportLeakedTokens": func(c *Caller, org string) error {
			secret, _ := mint(org, "domain:view")
			_, _, err := m.ReportLeaked(ctx, c, []string{secret}, "scanner", "")
			return err
		},
		"ReportTokenUse": func(c *Caller, org string) error {
			_, tok := mint(org, "domain:view")
			_, err := m.ReportTokenUse(ctx, c, []store.TokenUse{{TokenID: tok.ID, Time: m.now().Truncate(time.Minute)}})
			return err
		},
	}
	// want: operator, org manager PAT, plain PAT, watch credential,
	// reporter credential, anonymous.
	type w = [nCallers]outcome
	tests := []struct {
		rpc  string
		own  bool // the target (organization or token) is the PATs' own organization's
		want w
	}{
		{"CreateToken", true, w{allowed, allowed, denied_, denied_, denied_, unauth}},
		{"CreateToken", false, w{allowed, denied_, denied_, denied_, denied_, unauth}},
		{"GetToken", true, w{allowed, allowed, denied_, denied_, denied_, unauth}},
		{"GetToken", false, w{allowed, denied_, denied_, denied_, denied_, unauth}},
		{"ListTokens", true, w{allowed, allowed, denied_, denied_, denied_, unauth}},
		{"ListTokens", false, w{allowed, denied_, denied_, denied_, denied_, unauth}},
		{"RevokeToken", true, w{allowed, allowed, denied_, denied_, denied_, unauth}},
		{"RevokeToken", false, w{allowed, denied_, denied_, denied_, denied_, unauth}},
		{"RevokeTokens", true, w{allowed, allowed, denied_, denied_, denied_, unauth}},
		{"RevokeTokens", false, w{allowed, denied_, denied_, denied_, denied_, unauth}},
		{"RotateToken", true, w{allowed, allowed, denied_, denied_, denied_, unauth}},
		{"RotateToken", false, w{allowed, denied_, denied_, denied_, denied_, unauth}},
		{"ListAuditEvents", true, w{allowed, allowed, denied_, denied_, denied_, unauth}},
		{"ListAuditEvents", false, w{allowed, denied_, denied_, denied_, denied_, unauth}},
		// Not scoped to an organization: the same either way.
		{"ListPermissions", true, w{allowed, allowed, allowed, denied_, denied_, unauth}},
		{"ListPermissions", false, w{allowed, allowed, allowed, denied_, denied_, unauth}},
		{"WatchRevocations", true, w{allowed, denied_, denied_, allowed, denied_, unauth}},
		{"WatchRevocations", false, w{allowed, denied_, denied_, allowed, denied_, unauth}},
		{"ConfirmHistory", true, w{allowed, denied_, denied_, allowed, denied_, unauth}},
		{"ConfirmHistory", false, w{allowed, denied_, denied_, allowed, denied_, unauth}},
		{"RotateSigningKey", true, w{allowed, denied_, denied_, denied_, denied_, unauth}},
		{"RotateSigningKey", false, w{allowed, denied_, denied_, denied_, denied_, unauth}},
		{"RevokeSigningKey", true, w{allowed, denied_, denied_, denied_, denied_, unauth}},
		{"RevokeSigningKey", false, w{allowed, denied_, denied_, denied_, denied_, unauth}},
		{"ListSigningKeys", true, w{allowed, denied_, denied_, denied_, denied_, unauth}},
		{"ListSigningKeys", false, w{allowed, denied_, denied_, denied_, denied_, unauth}},
		// Not scoped to an organization: a leak is revoked whoever holds it.
		{"ReportLeakedTokens", true, w{allowed, denied_, denied_, denied_, allowed, unauth}},
		{"ReportLeakedTokens", false, w{allowed, denied_, denied_, denied_, allowed, unauth}},
		{"ReportTokenUse", true, w{allowed, denied_, denied_, allowed, denied_, unauth}},
		{"ReportTokenUse", false, w{allowed, denied_, denied_, allowed, denied_, unauth}},
	}
	if len(tests) != 2*len(calls) {
		t.Fatalf("%d rows for %d rules", len(tests), len(calls))
	}
	for _, tc := range tests {
		for who, want := range tc.want {
			t.Run(fmt.Sprintf("%s/%s/%s", tc.rpc, orgOf[tc.own], callerNames[who]), func(t *testing.T) {
				got, err := outcomeOf(calls[tc.rpc](callers[who], orgOf[tc.own]))
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if got != want {
					t.Errorf("%v, want %v", got, want)
				}
			})
		}
	}
}
