package store

import (
	"context"
	"encoding/base64"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/pkg/scope"
)

func TestCodecRoundTrip(t *testing.T) {
	full := Token{
		ID: "0123", OrgID: "org\x00with\xffbytes", Name: "n", Description: "d",
		Grants:    []scope.Grant{{Permissions: []string{"a:b", ""}, Resources: []string{"r"}}, {Permissions: []string{"c:d"}}},
		CreatedBy: "u", ParentID: "p", KeyID: "k",
		CreateTime: t0, ExpireTime: t0.Add(time.Nanosecond), RevokeTime: time.Unix(-5, 999_999_999).UTC(),
		RevokeReason: "r", RevokeRev: 1 << 60,
	}
	for _, tc := range []struct {
		name string
		tok  Token
	}{{"full", full}, {"zero", Token{}}} {
		t.Run("token/"+tc.name, func(t *testing.T) {
			got, rev, err := decodeToken(encodeToken(&tc.tok, 42))
			if err != nil || rev != 42 || !reflect.DeepEqual(got, tc.tok) {
				t.Errorf("= %+v, %d, %v", got, rev, err)
			}
		})
	}
	t.Run("key", func(t *testing.T) {
		k := Key{ID: "k", State: KeyVerifyOnly, Public: []byte{1, 2}, SealedPrivate: []byte{3}, CreateTime: t0, LastExpiry: t0.Add(time.Hour)}
		got, m, err := decodeKey(encodeKey(&k, keyMeta{addRev: 3, stateRev: 9}))
		if err != nil || m != (keyMeta{3, 9}) || !reflect.DeepEqual(got, k) {
			t.Errorf("= %+v, %+v, %v", got, m, err)
		}
	})
	t.Run("events", func(t *testing.T) {
		for _, ev := range []Event{
			{Revision: 1, Kind: EventTokenCreated, TokenID: "a", ExpiresAt: t0},
			{Revision: 2, Kind: EventTokenRevoked, TokenID: "b", ExpiresAt: t0},
			{Revision: 3, Kind: EventKeyAdded, Key: &Key{ID: "k", State: KeyPending, Public: []byte{1}, ActivateTime: t0}},
			{Revision: 4, Kind: EventKeyRevoked, KeyID: "k"},
		} {
			got, err := decodeEvent(ev.Revision, encodeEvent(&ev))
			if err != nil || !reflect.DeepEqual(got, ev) {
				t.Errorf("kind %d: = %+v, %v", ev.Kind, got, err)
			}
		}
	})
	t.Run("audit", func(t *testing.T) {
		a := AuditRecord{Revision: 7, Time: t0, Actor: "token:x", OrgID: "o", Action: AuditTokensRevoked, Grants: full.Grants, Reason: "r", Count: -1, KeyID: "k"}
		got, err := decodeAudit(7, encodeAudit(&a))
		if err != nil || !reflect.DeepEqual(got, a) {
			t.Errorf("= %+v, %v", got, err)
		}
	})
}

func TestCodecIsStrict(t *testing.T) {
	tokBytes := encodeToken(&Token{ID: "a", Name: "n", CreateTime: t0}, 1)
	for _, tc := range []struct {
		name string
		v    []byte
	}{
		{"empty", nil},
		{"unknown version", append([]byte{2}, tokBytes[1:]...)},
		{"trailing byte", append(append([]byte(nil), tokBytes...), 0)},
		{"truncated", tokBytes[:len(tokBytes)-1]},
		{"length past the end", []byte{recordV1, 0x7f, 'a'}},
		{"huge count", []byte{recordV1, 0xff, 0xff, 0xff, 0xff, 0x0f}},
		{"bad time tag", func() []byte {
			v := encodeToken(&Token{}, 1)
			v[1+8+1] = 9 // id, org, name, desc, grants, creator, parent, key: 8 empty fields; then create time
			return v
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := decodeToken(tc.v); !errors.Is(err, ErrCorrupt) {
				t.Errorf("err = %v, want ErrCorrupt", err)
			}
		})
	}
	for _, tc := range []struct {
		name string
		v    []byte
	}{
		{"unknown event kind", []byte{recordV1, 9}},
		{"event without kind", []byte{recordV1}},
		{"bad key state", func() []byte {
			v := encodeEvent(&Event{Kind: EventKeyAdded, Key: &Key{ID: "k", State: KeyActive}})
			v[4] = 0 // version, kind, len("k"), 'k', state
			return v
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := decodeEvent(1, tc.v); !errors.Is(err, ErrCorrupt) {
				t.Errorf("err = %v, want ErrCorrupt", err)
			}
		})
	}
	for _, action := range []AuditAction{0, AuditTokenExpiring + 1, -1} {
		if _, err := decodeAudit(1, encodeAudit(&AuditRecord{Time: t0, Action: action})); !errors.Is(err, ErrCorrupt) {
			t.Errorf("unknown audit action %d: %v, want ErrCorrupt", action, err)
		}
	}
	if _, err := decodeExpiry([]byte{recordV1, 1, 0, 0x80, 0x94, 0xeb, 0xdc, 0x03}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("nanoseconds ≥ 1e9: %v, want ErrCorrupt", err)
	}
}

// FuzzDecodeRecords feeds arbitrary bytes to every record decoder: none may
// panic, and what decodes must encode back to the same bytes (one encoding
// per value).
func FuzzDecodeRecords(f *testing.F) {
	f.Add(encodeToken(&Token{ID: "a", Grants: []scope.Grant{{Permissions: []string{"x"}}}, CreateTime: t0}, 3))
	f.Add(encodeKey(&Key{ID: "k", State: KeyActive, Public: []byte{1}}, keyMeta{1, 2}))
	f.Add(encodeEvent(&Event{Kind: EventTokenRevoked, TokenID: "t", ExpiresAt: t0}))
	f.Add(encodeEvent(&Event{Kind: EventKeyAdded, Key: &Key{ID: "k", State: KeyPending}}))
	f.Add(encodeAudit(&AuditRecord{Time: t0, Action: AuditTokenCreated, Count: 3}))
	f.Add(encodeExpiry(t0))
	f.Fuzz(func(t *testing.T, v []byte) {
		if tk, rev, err := decodeToken(v); err == nil {
			if got := encodeToken(&tk, rev); string(got) != string(v) {
				t.Errorf("token re-encodes differently")
			}
		}
		if k, m, err := decodeKey(v); err == nil {
			if got := encodeKey(&k, m); string(got) != string(v) {
				t.Errorf("key re-encodes differently")
			}
		}
		if ev, err := decodeEvent(1, v); err == nil {
			if got := encodeEvent(&ev); string(got) != string(v) {
				t.Errorf("event re-encodes differently")
			}
		}
		if a, err := decodeAudit(1, v); err == nil {
			if got := encodeAudit(&a); string(got) != string(v) {
				t.Errorf("audit re-encodes differently")
			}
		}
		if e, err := decodeExpiry(v); err == nil {
			if got := encodeExpiry(e); string(got) != string(v) {
				t.Errorf("expiry re-encodes differently")
			}
		}
	})
}

// FuzzListTokensPageToken feeds arbitrary page tokens to ListTokens: it
// must answer ErrBadPageToken or a page, never panic.
func FuzzListTokensPageToken(f *testing.F) {
	s := openTest(f)
	for i := range 5 {
		mustCreate(f, s, tok("o", string(rune('a'+i)), "u", time.Hour))
	}
	_, page, err := s.ListTokens(context.Background(), ListFilter{OrgID: "o", PageSize: 2})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(page, "")
	f.Add(page, "u")
	f.Add(base64.RawURLEncoding.EncodeToString([]byte{pageTagCreator, 1, 'o', 1, 'u'}), "u")
	f.Add("", "")
	f.Fuzz(func(t *testing.T, page, createdBy string) {
		_, _, err := s.ListTokens(context.Background(), ListFilter{OrgID: "o", CreatedBy: createdBy, PageToken: page, PageSize: 2})
		if err != nil && !errors.Is(err, ErrBadPageToken) {
			t.Errorf("err = %v", err)
		}
	})
}
