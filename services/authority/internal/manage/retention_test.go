package manage

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// TestRevokeTokenStringAfterPurge: revoking by its string a token the
// retention purged writes nothing: an expired one comes back expired, not
// revoked now; a revoked one not yet expired comes back revoked already.
func TestRevokeTokenStringAfterPurge(t *testing.T) {
	ctx := context.Background()
	m := newTestManager(t)
	clock := time.Now().Truncate(time.Second)
	m.now = func() time.Time { return clock }
	op := &Caller{Kind: Operator}
	grants := []scope.Grant{{Permissions: []string{"domain:view"}}}
	mint := func(name string, ttl time.Duration) (string, store.Token) {
		t.Helper()
		secret, tk, err := m.CreateToken(ctx, op, NewToken{OrgID: "own", Name: name, CreatedBy: "alice", Grants: grants, Expire: clock.Add(ttl)})
		if err != nil {
			t.Fatalf("mint %s: %v", name, err)
		}
		return secret, tk
	}
	expiredSecret, expired := mint("expires", 8*day)
	revokedSecret, revoked := mint("revoked", 300*day)
	if _, _, _, _, err := m.RevokeToken(ctx, op, Ref{ID: revoked.ID}, "test"); err != nil {
		t.Fatal(err)
	}

	clock = clock.Add(100 * day)
	res, err := m.store.(store.Retainer).ApplyRetention(ctx, clock, store.Retention{Tokens: 90 * day})
	if err != nil || res.Tokens != 2 {
		t.Fatalf("ApplyRetention: %+v, %v; want both tokens purged", res, err)
	}
	for _, id := range []string{expired.ID, revoked.ID} {
		if _, err := m.store.GetToken(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("token %s not purged: %v", id, err)
		}
	}
	rev := m.store.Revision()

	got, at, n, did, err := m.RevokeTokenString(ctx, op, expiredSecret, "found later")
	if err != nil {
		t.Fatal(err)
	}
	if did || n != 0 || at != rev || got.ID != expired.ID || got.StateAt(clock) != store.StateExpired || got.RevokeRev != 0 {
		t.Errorf("purged expired token: %+v at %d, revoked now %v; want expired, nothing revoked", got, at, did)
	}
	got, _, _, did, err = m.RevokeTokenString(ctx, op, revokedSecret, "found later")
	if err != nil {
		t.Fatal(err)
	}
	if did || got.ID != revoked.ID {
		t.Errorf("purged revoked token: %+v, revoked now %v; want revoked already", got, did)
	}
	if m.store.Revision() != rev {
		t.Errorf("revoking purged tokens by string took revision %d (was %d)", m.store.Revision(), rev)
	}
}
