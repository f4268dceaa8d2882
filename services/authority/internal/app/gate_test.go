package app

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// TestGatedStoreRefusesWritesWhileStalled: on a real bbolt file, while
// stalled reports true a management write is refused at once with
// ErrWritesStalled (and ErrUnavailable) and writes nothing; reads go
// through; once writes commit again the same write succeeds.
func TestGatedStoreRefusesWritesWhileStalled(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), DBFile), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	stalled := true
	g := gatedStore{Store: st, stalled: func() bool { return stalled }}
	ctx := context.Background()
	now := time.Now()
	tok := store.Token{ID: "0123456789abcdef0123456789abcdef", OrgID: "o", Name: "n", CreatedBy: "u",
		KeyID: "k", CreateTime: now, ExpireTime: now.Add(time.Hour)}
	audit := store.AuditRecord{Time: now, Actor: "operator", OrgID: "o", Action: store.AuditTokenCreated}
	if _, err := st.AddKey(ctx, store.Key{
		ID: "k", State: store.KeyActive, Public: bytes.Repeat([]byte{7}, 32), SealedPrivate: []byte("sealed"),
		CreateTime: now.Add(-time.Hour), ActivateTime: now.Add(-time.Hour),
	}, store.AuditRecord{Time: now, Actor: "operator", Action: store.AuditKeyRotated}); err != nil {
		t.Fatal(err)
	}
	before := st.Revision()

	calls := map[string]func() error{
		"CreateToken":      func() error { _, err := g.CreateToken(ctx, tok, audit); return err },
		"RevokeToken":      func() error { _, _, _, err := g.RevokeToken(ctx, tok.ID, audit); return err },
		"RevokeTokens":     func() error { _, _, err := g.RevokeTokens(ctx, "o", "", audit); return err },
		"RevokeUnrecorded": func() error { _, _, err := g.RevokeUnrecorded(ctx, tok, audit); return err },
		"RotateToken":      func() error { _, _, err := g.RotateToken(ctx, tok.ID, tok, audit); return err },
		"RevokeKey":        func() error { _, err := g.RevokeKey(ctx, "k", audit); return err },
		"CutKey":           func() error { _, err := g.CutKey(ctx, "k", now, audit); return err },
		"RecordTokenUse": func() error {
			_, err := g.RecordTokenUse(ctx, []store.TokenUse{{TokenID: tok.ID, Time: now.Truncate(time.Minute)}})
			return err
		},
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, store.ErrWritesStalled) || !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s while stalled: %v, want ErrWritesStalled and ErrUnavailable", name, err)
		}
	}
	if st.Revision() != before {
		t.Fatalf("revision moved from %d to %d while writes were refused", before, st.Revision())
	}
	if _, err := g.GetToken(ctx, tok.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetToken through the gate while stalled: %v, want ErrNotFound (a read, unaffected)", err)
	}
	stalled = false
	if _, err := g.CreateToken(ctx, tok, audit); err != nil {
		t.Fatalf("CreateToken once writes commit: %v", err)
	}
	if _, err := g.GetToken(ctx, tok.ID); err != nil {
		t.Fatalf("GetToken after the write: %v", err)
	}
}
