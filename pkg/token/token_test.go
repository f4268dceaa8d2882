package token

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"hash/crc32"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	tokenv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/token/v1"
	"github.com/sigil-auth/sigil/pkg/scope"
)

func TestMintVerifyRoundTrip(t *testing.T) {
	base := testClaims()
	tests := []struct {
		name   string
		prefix string
		edit   func(*Claims)
		want   func(*Claims) // expected change of the claims after the trip
	}{
		{name: "default prefix", edit: func(*Claims) {}},
		{name: "custom prefix", prefix: "acme_pat_", edit: func(*Claims) {}},
		{name: "one-character prefix", prefix: "x", edit: func(*Claims) {}},
		{
			name: "one grant on every resource",
			edit: func(c *Claims) { c.Grants = []scope.Grant{{Permissions: []string{"domain:view"}}} },
		},
		{
			name: "several resources and non-ASCII",
			edit: func(c *Claims) {
				c.OrgID = "organisation-été"
				c.Grants = []scope.Grant{{
					Permissions: []string{"domain:renew", "domain:view"},
					Resources:   []string{"domains/example.com", "domains/exämple.org/records/www"},
				}}
			},
		},
		{
			name: "identifiers at the maximum length",
			edit: func(c *Claims) {
				c.OrgID = strings.Repeat("o", MaxIdentLen)
				c.KeyID = strings.Repeat("k", MaxIdentLen)
			},
		},
		{
			name: "sub-second times are truncated to the second",
			edit: func(c *Claims) {
				c.IssuedAt = c.IssuedAt.Add(999 * time.Millisecond).In(time.FixedZone("x", 3600))
				c.ExpiresAt = c.ExpiresAt.Add(time.Nanosecond)
			},
			want: func(c *Claims) {
				c.IssuedAt = c.IssuedAt.Truncate(time.Second)
				c.ExpiresAt = c.ExpiresAt.Truncate(time.Second)
			},
		},
		{
			name: "expiry one second after issue",
			edit: func(c *Claims) { c.ExpiresAt = c.IssuedAt.Add(time.Second) },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			codec, err := NewCodec(tc.prefix)
			if err != nil {
				t.Fatalf("NewCodec: %v", err)
			}
			claims := base
			claims.Grants = append([]scope.Grant(nil), base.Grants...)
			tc.edit(&claims)
			keys := keySet{claims.KeyID: {pub: pub(testKey)}}

			tok := mustMint(t, codec, claims, testKey)
			if !strings.HasPrefix(tok, codec.Prefix()) {
				t.Errorf("token does not start with %q", codec.Prefix())
			}
			if len(tok) > MaxLen {
				t.Errorf("token is %d bytes, more than MaxLen", len(tok))
			}
			got, err := codec.Verify(tok, keys)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			want := claims
			if tc.want != nil {
				tc.want(&want)
			}
			assertClaimsEqual(t, got, &want)
			if got.IssuedAt.Location() != time.UTC || got.ExpiresAt.Location() != time.UTC {
				t.Errorf("times are not in UTC: %v, %v", got.IssuedAt.Location(), got.ExpiresAt.Location())
			}
			if !codec.LooksLike(tok) {
				t.Error("LooksLike is false for a minted token")
			}

			// Minting is deterministic: the same claims give the same token.
			if again := mustMint(t, codec, claims, testKey); again != tok {
				t.Error("minting twice gave two tokens")
			}
		})
	}
}

// TestFormat decodes a token by hand, with nothing from the package, to pin
// format v1: a change here breaks every deployed verifier.
func TestFormat(t *testing.T) {
	tok := mustMint(t, defaultCodec(t), testClaims(), testKey)

	if !strings.HasPrefix(tok, "sigil_pat_") {
		t.Fatalf("token does not start with sigil_pat_")
	}
	if got, want := tok[len(tok)-6:], testChecksum(tok[:len(tok)-6]); got != want {
		t.Errorf("checksum %q, want %q", got, want)
	}
	body := decodeBody(t, tok)
	if body[0] != 0x01 {
		t.Errorf("version byte %#x, want 0x01", body[0])
	}
	claimBytes, sig := body[1:len(body)-64], body[len(body)-64:]
	if want := marshal(t, claimsProto()); !bytes.Equal(claimBytes, want) {
		t.Errorf("claim bytes are not the deterministic encoding of the claims")
	}
	msg := append(append([]byte(testDomain), 0x01), claimBytes...)
	if !ed25519.Verify(pub(testKey), msg, sig) {
		t.Error("signature does not verify over domain ‖ version ‖ claims")
	}
	if ed25519.Verify(pub(testKey), body[:len(body)-64], sig) {
		t.Error("signature verifies without the domain-separation string")
	}
}

func TestChecksumKnownAnswers(t *testing.T) {
	tests := []struct {
		name string
		sum  uint32
		want string
	}{
		{name: "zero", sum: 0, want: "000000"},
		{name: "one", sum: 1, want: "000001"},
		{name: "62", sum: 62, want: "000010"},
		{name: "max", sum: 0xffffffff, want: "4gfFC3"},
		{name: "crc of sigil_pat_abc", sum: crc32.ChecksumIEEE([]byte("sigil_pat_abc")), want: "31n0sv"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(appendChecksum(nil, tc.sum)); got != tc.want {
				t.Errorf("appendChecksum(%d) = %q, want %q", tc.sum, got, tc.want)
			}
			got, ok := parseChecksum(tc.want)
			if !ok || got != tc.sum {
				t.Errorf("parseChecksum(%q) = %d, %v; want %d, true", tc.want, got, ok, tc.sum)
			}
		})
	}
	for _, bad := range []string{"", "00000", "0000000", "4gfFC4", "zzzzzz", "00000-", "00000_", "00000 "} {
		if _, ok := parseChecksum(bad); ok {
			t.Errorf("parseChecksum(%q) accepted", bad)
		}
	}
}

// replacements are the bytes written over each position of a token.
var replacements = []byte{'A', 'z', '0', '9', '_', '-', '+', '/', '=', '.', ' ', '\n', '\r', 0x00, 0x7f, 0x80, 0xff}

func TestVerifyRejectsEveryByteChange(t *testing.T) {
	codec := defaultCodec(t)
	tok := mustMint(t, codec, testClaims(), testKey)
	keys := testKeys()
	if _, err := codec.Verify(tok, keys); err != nil {
		t.Fatalf("the unchanged token does not verify: %v", err)
	}
	bodyEnd := len(tok) - 6
	tests := []struct {
		name string
		// rechecksum recomputes the checksum after the change, so that the
		// change reaches the decoder, the claims and the signature.
		rechecksum bool
		from, to   int
	}{
		{name: "as is", from: 0, to: len(tok)},
		{name: "with a recomputed checksum", rechecksum: true, from: len(DefaultPrefix), to: bodyEnd},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for i := tc.from; i < tc.to; i++ {
				for _, r := range append(replacements, tok[i]^0x01, tok[i]^0x20) {
					if r == tok[i] {
						continue
					}
					b := []byte(tok)
					b[i] = r
					bad := string(b)
					if tc.rechecksum {
						bad = rechecksum(bad)
					}
					assertIs(t, verifyErr(t, codec, bad, keys), rejectErrs...)
				}
			}
		})
	}
}

func TestVerifyRejectsEveryBitFlipOfTheBody(t *testing.T) {
	codec := defaultCodec(t)
	keys := testKeys()
	body := decodeBody(t, mustMint(t, codec, testClaims(), testKey))
	sigStart := len(body) - ed25519.SignatureSize
	for i := range body {
		for _, mask := range []byte{0x01, 0x02, 0x10, 0x80, 0xff} {
			b := bytes.Clone(body)
			b[i] ^= mask
			err := verifyErr(t, codec, encodeBody(b), keys)
			switch {
			case i == 0:
				assertIs(t, err, ErrMalformed)
			case i >= sigStart:
				assertIs(t, err, ErrBadSignature)
			default:
				assertIs(t, err, rejectErrs...)
			}
		}
	}
}

func TestVerifyRejectsTruncationAndExtension(t *testing.T) {
	codec := defaultCodec(t)
	tok := mustMint(t, codec, testClaims(), testKey)
	keys := testKeys()
	t.Run("every truncation", func(t *testing.T) {
		for n := range len(tok) {
			assertIs(t, verifyErr(t, codec, tok[:n], keys), ErrMalformed)
			assertIs(t, verifyErr(t, codec, tok[len(tok)-n:], keys), ErrMalformed)
		}
	})
	t.Run("every truncation of the body with a recomputed checksum", func(t *testing.T) {
		signed := tok[:len(tok)-6]
		for n := len(DefaultPrefix); n < len(signed); n++ {
			assertIs(t, verifyErr(t, codec, withChecksum(signed[:n]), keys), rejectErrs...)
		}
	})
	t.Run("every insertion", func(t *testing.T) {
		for i := 0; i <= len(tok); i++ {
			for _, r := range []string{"A", "_", "=", "\n"} {
				assertIs(t, verifyErr(t, codec, tok[:i]+r+tok[i:], keys), rejectErrs...)
			}
		}
	})
	t.Run("every insertion into the body with a recomputed checksum", func(t *testing.T) {
		signed := tok[:len(tok)-6]
		for i := len(DefaultPrefix); i <= len(signed); i++ {
			for _, r := range []string{"A", "-", "\n"} {
				assertIs(t, verifyErr(t, codec, withChecksum(signed[:i]+r+signed[i:]), keys), rejectErrs...)
			}
		}
	})
	t.Run("extension of the decoded body", func(t *testing.T) {
		body := decodeBody(t, tok)
		for _, extra := range [][]byte{{0}, {0, 0}, {0, 0, 0}, bytes.Repeat([]byte{0xff}, 64)} {
			assertIs(t, verifyErr(t, codec, encodeBody(append(bytes.Clone(body), extra...)), keys), rejectErrs...)
		}
	})
	t.Run("whitespace around", func(t *testing.T) {
		for _, bad := range []string{" " + tok, tok + " ", tok + "\n", "\t" + tok, tok + "\x00"} {
			assertIs(t, verifyErr(t, codec, bad, keys), ErrMalformed)
		}
	})
}

func TestVerifyKeys(t *testing.T) {
	codec := defaultCodec(t)
	tok := mustMint(t, codec, testClaims(), testKey)
	forged := mustMint(t, codec, testClaims(), otherKey) // same key id, other key
	tests := []struct {
		name string
		tok  string
		keys KeySet
		want error
	}{
		{name: "wrong public key for the key id", tok: tok, keys: keySet{testKeyID: {pub: pub(otherKey)}}, want: ErrBadSignature},
		{name: "forged with another key", tok: forged, keys: testKeys(), want: ErrBadSignature},
		{name: "unknown key id", tok: tok, keys: keySet{"key-2": {pub: pub(testKey)}}, want: ErrUnknownKey},
		{name: "empty key set", tok: tok, keys: keySet{}, want: ErrUnknownKey},
		{name: "nil key set", tok: tok, keys: nil, want: ErrUnknownKey},
		{name: "short public key", tok: tok, keys: keySet{testKeyID: {pub: pub(testKey)[:31]}}, want: ErrUnknownKey},
		{name: "long public key", tok: tok, keys: keySet{testKeyID: {pub: append(bytes.Clone(pub(testKey)), 0)}}, want: ErrUnknownKey},
		{name: "nil public key", tok: tok, keys: keySet{testKeyID: {}}, want: ErrUnknownKey},
		{name: "private key given as public key", tok: tok, keys: keySet{testKeyID: {pub: ed25519.PublicKey(testKey)}}, want: ErrUnknownKey},
		{name: "revoked key", tok: tok, keys: keySet{testKeyID: {pub: pub(testKey), revoked: true}}, want: ErrKeyRevoked},
		{name: "revoked key, forged token", tok: forged, keys: keySet{testKeyID: {pub: pub(testKey), revoked: true}}, want: ErrBadSignature},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := verifyErr(t, codec, tc.tok, tc.keys)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestVerifyDoesNotCheckTime(t *testing.T) {
	codec := defaultCodec(t)
	keys := testKeys()
	now := time.Now()
	tests := []struct {
		name     string
		iat, exp time.Time
		want     error
	}{
		{name: "expired", iat: now.Add(-48 * time.Hour), exp: now.Add(-24 * time.Hour), want: ErrExpired},
		{name: "not yet valid", iat: now.Add(24 * time.Hour), exp: now.Add(48 * time.Hour), want: ErrNotYetValid},
		{name: "valid", iat: now.Add(-time.Hour), exp: now.Add(time.Hour), want: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			claims := testClaims()
			claims.IssuedAt, claims.ExpiresAt = tc.iat, tc.exp

			got, err := codec.Verify(mustMint(t, codec, claims, testKey), keys)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if err := got.CheckTime(now, 0); !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Errorf("CheckTime: %v, want %v", err, tc.want)
			}

			// The same claims signed by someone else are only a bad signature.
			forged := mustMint(t, codec, claims, otherKey)
			if err := verifyErr(t, codec, forged, keys); !errors.Is(err, ErrBadSignature) {
				t.Errorf("forged token: %v, want %v", err, ErrBadSignature)
			}
		})
	}
}

func TestCheckTime(t *testing.T) {
	iat := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	exp := iat.Add(24 * time.Hour)
	c := &Claims{IssuedAt: iat, ExpiresAt: exp}
	tests := []struct {
		name   string
		now    time.Time
		leeway time.Duration
		want   error
	}{
		{name: "at issue", now: iat, want: nil},
		{name: "a nanosecond before issue", now: iat.Add(-time.Nanosecond), want: ErrNotYetValid},
		{name: "a second before issue, within leeway", now: iat.Add(-time.Second), leeway: time.Second, want: nil},
		{name: "two seconds before issue, beyond leeway", now: iat.Add(-2 * time.Second), leeway: time.Second, want: ErrNotYetValid},
		{name: "a nanosecond before expiry", now: exp.Add(-time.Nanosecond), want: nil},
		{name: "at expiry", now: exp, want: ErrExpired},
		{name: "at expiry, within leeway", now: exp, leeway: time.Second, want: nil},
		{name: "at expiry plus leeway", now: exp.Add(time.Second), leeway: time.Second, want: ErrExpired},
		{name: "long after expiry", now: exp.Add(365 * 24 * time.Hour), leeway: time.Minute, want: ErrExpired},
		{name: "negative leeway counts as zero, inside", now: exp.Add(-time.Nanosecond), leeway: -time.Hour, want: nil},
		{name: "negative leeway counts as zero, expired", now: exp, leeway: -time.Hour, want: ErrExpired},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := c.CheckTime(tc.now, tc.leeway)
			if tc.want == nil && err != nil || !errors.Is(err, tc.want) {
				t.Errorf("CheckTime(%v, %v) = %v, want %v", tc.now, tc.leeway, err, tc.want)
			}
		})
	}
	t.Run("nil claims", func(t *testing.T) {
		var nilClaims *Claims
		if err := nilClaims.CheckTime(iat, 0); !errors.Is(err, ErrMalformed) {
			t.Errorf("CheckTime on nil claims = %v, want %v", err, ErrMalformed)
		}
	})
}

func TestVerifyRejectsNonCanonicalBase64(t *testing.T) {
	codec := defaultCodec(t)
	keys := testKeys()
	bodyOf := func(tok string) string { return split(t, tok, DefaultPrefix) }
	// Tokens whose decoded length leaves 4 and 2 unused bits in the last
	// character, and one whose body holds '-' or '_'.
	rem1 := mintWhere(t, codec, "decoded length ≡ 1 mod 3", func(tok string) bool { return len(bodyOf(tok))%4 == 2 })
	rem2 := mintWhere(t, codec, "decoded length ≡ 2 mod 3", func(tok string) bool { return len(bodyOf(tok))%4 == 3 })
	urlChars := mintWhere(t, codec, "'-' and '_' in the body", func(tok string) bool {
		return strings.ContainsAny(bodyOf(tok), "-") && strings.ContainsAny(bodyOf(tok), "_")
	})

	flipLastBit := func(tok string) string {
		body := bodyOf(tok)
		last := strings.IndexByte(base64URLAlphabet, body[len(body)-1])
		return DefaultPrefix + body[:len(body)-1] + string(base64URLAlphabet[last^1])
	}
	insert := func(tok string, s string) string {
		body := bodyOf(tok)
		return DefaultPrefix + body[:len(body)/2] + s + body[len(body)/2:]
	}
	tests := []struct {
		name string
		tok  string
		// body is prefix‖body before the checksum is recomputed.
		body string
		// sameBytes reports that a lenient decoder reads the body as the
		// original bytes: the case is a re-encoding, not a change.
		sameBytes bool
	}{
		{name: "unused bits set, 4 unused", tok: rem1, body: flipLastBit(rem1), sameBytes: true},
		{name: "unused bits set, 2 unused", tok: rem2, body: flipLastBit(rem2), sameBytes: true},
		{name: "padding added", tok: rem1, body: DefaultPrefix + base64.URLEncoding.EncodeToString(decodeBody(t, rem1))},
		{name: "one padding character", tok: rem2, body: DefaultPrefix + bodyOf(rem2) + "="},
		{name: "standard alphabet", tok: urlChars, body: DefaultPrefix + base64.RawStdEncoding.EncodeToString(decodeBody(t, urlChars))},
		{name: "standard alphabet with padding", tok: rem1, body: DefaultPrefix + base64.StdEncoding.EncodeToString(decodeBody(t, rem1))},
		{name: "line feed inside", tok: rem1, body: insert(rem1, "\n"), sameBytes: true},
		{name: "CR LF inside", tok: rem1, body: insert(rem1, "\r\n"), sameBytes: true},
		{name: "line feed at the end", tok: rem2, body: DefaultPrefix + bodyOf(rem2) + "\n", sameBytes: true},
		{name: "space inside", tok: rem1, body: insert(rem1, " ")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := codec.Verify(tc.tok, keys); err != nil {
				t.Fatalf("the original token does not verify: %v", err)
			}
			if tc.body == tc.tok[:len(tc.tok)-6] {
				t.Fatal("the case does not change the token")
			}
			if tc.sameBytes {
				got, err := base64.RawURLEncoding.DecodeString(tc.body[len(DefaultPrefix):])
				if err != nil || !bytes.Equal(got, decodeBody(t, tc.tok)) {
					t.Fatalf("a lenient decoder does not read the original bytes (%v)", err)
				}
			}
			bad := withChecksum(tc.body)
			if !codec.LooksLike(bad) {
				t.Fatal("the recomputed checksum is not valid")
			}
			err := verifyErr(t, codec, bad, keys)
			if !errors.Is(err, errEncoding) {
				t.Errorf("Verify: %v, want %v", err, errEncoding)
			}
			assertIs(t, err, ErrMalformed)
		})
	}
}

const base64URLAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// unknownField appends field num, with a varint, to b.
func unknownField(b []byte, num protowire.Number) []byte {
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, 1)
}

func TestVerifyRejectsUnknownFields(t *testing.T) {
	codec := defaultCodec(t)
	keys := testKeys()
	tests := []struct {
		name   string
		claims func(t *testing.T) []byte
		want   error // nil: verifies
	}{
		{
			name:   "control: the same path without an unknown field",
			claims: func(t *testing.T) []byte { return marshal(t, claimsProto()) },
		},
		{
			name:   "claims field 99, varint",
			claims: func(t *testing.T) []byte { return unknownField(marshal(t, claimsProto()), 99) },
			want:   ErrMalformed,
		},
		{
			name: "claims field 7, bytes",
			claims: func(t *testing.T) []byte {
				b := protowire.AppendTag(marshal(t, claimsProto()), 7, protowire.BytesType)
				return protowire.AppendBytes(b, []byte("not-before-ip=10.0.0.0/8"))
			},
			want: ErrMalformed,
		},
		{
			name:   "claims field 99 first",
			claims: func(t *testing.T) []byte { return append(unknownField(nil, 99), marshal(t, claimsProto())...) },
			want:   ErrMalformed,
		},
		{
			name: "known field number with another wire type",
			claims: func(t *testing.T) []byte {
				b := protowire.AppendTag(marshal(t, claimsProto()), 5, protowire.BytesType)
				return protowire.AppendBytes(b, []byte{1})
			},
			want: ErrMalformed,
		},
		{
			name: "grant field 99",
			claims: func(t *testing.T) []byte {
				pb := claimsProto()
				g := pb.Grants[1].ProtoReflect()
				g.SetUnknown(unknownField(g.GetUnknown(), 99))
				return marshal(t, pb)
			},
			want: ErrMalformed,
		},
		{
			name: "grant field 3, bytes, in the first grant",
			claims: func(t *testing.T) []byte {
				pb := claimsProto()
				g := pb.Grants[0].ProtoReflect()
				b := protowire.AppendTag(nil, 3, protowire.BytesType)
				g.SetUnknown(protowire.AppendBytes(b, []byte("deny:domain:delete")))
				return marshal(t, pb)
			},
			want: ErrMalformed,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok := signRaw(testKey, 0x01, tc.claims(t))
			if tc.want == nil {
				got, err := codec.Verify(tok, keys)
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				want := testClaims()
				assertClaimsEqual(t, got, &want)
				return
			}
			err := verifyErr(t, codec, tok, keys)
			if !errors.Is(err, tc.want) {
				t.Errorf("Verify: %v, want %v", err, tc.want)
			}
			// The unknown field is reported as such, after the signature.
			if !errors.Is(err, errUnknownFields) {
				t.Errorf("Verify: %v, want %v", err, errUnknownFields)
			}
		})
	}
}

func TestVerifyRejectsInvalidSignedClaims(t *testing.T) {
	codec := defaultCodec(t)
	long := strings.Repeat("x", MaxIdentLen+1)
	tests := []struct {
		name string
		edit func(*tokenv1.Claims)
		keys KeySet
		want error
	}{
		{name: "token id of 15 bytes", edit: func(c *tokenv1.Claims) { c.TokenId = c.TokenId[:15] }, want: ErrMalformed},
		{name: "token id of 17 bytes", edit: func(c *tokenv1.Claims) { c.TokenId = append(c.TokenId, 0) }, want: ErrMalformed},
		{name: "no token id", edit: func(c *tokenv1.Claims) { c.TokenId = nil }, want: ErrMalformed},
		{name: "zero token id", edit: func(c *tokenv1.Claims) { c.TokenId = make([]byte, 16) }, want: ErrMalformed},
		{name: "no org id", edit: func(c *tokenv1.Claims) { c.OrgId = "" }, want: ErrMalformed},
		{name: "org id too long", edit: func(c *tokenv1.Claims) { c.OrgId = long }, want: ErrMalformed},
		{name: "no issue time", edit: func(c *tokenv1.Claims) { c.IssuedAt = 0 }, want: ErrMalformed},
		{name: "issue time before the epoch", edit: func(c *tokenv1.Claims) { c.IssuedAt = -10 }, want: ErrMalformed},
		{name: "expiry at issue", edit: func(c *tokenv1.Claims) { c.ExpiresAt = c.IssuedAt }, want: ErrMalformed},
		{name: "expiry before issue", edit: func(c *tokenv1.Claims) { c.ExpiresAt = c.IssuedAt - 1 }, want: ErrMalformed},
		{name: "no expiry", edit: func(c *tokenv1.Claims) { c.ExpiresAt = 0 }, want: ErrMalformed},
		{name: "no grants", edit: func(c *tokenv1.Claims) { c.Grants = nil }, want: ErrMalformed},
		{name: "grant without permissions", edit: func(c *tokenv1.Claims) { c.Grants[1].Permissions = nil }, want: ErrMalformed},
		{name: "empty grant", edit: func(c *tokenv1.Claims) { c.Grants = append(c.Grants, &tokenv1.Grant{}) }, want: ErrMalformed},
		{name: "empty permission", edit: func(c *tokenv1.Claims) { c.Grants[0].Permissions = []string{""} }, want: ErrMalformed},
		{name: "empty resource", edit: func(c *tokenv1.Claims) { c.Grants[0].Resources = []string{"domains/a", ""} }, want: ErrMalformed},
		{
			name: "invalid claims under a revoked key",
			edit: func(c *tokenv1.Claims) { c.Grants = nil },
			keys: keySet{testKeyID: {pub: pub(testKey), revoked: true}},
			want: ErrMalformed,
		},
		{name: "no key id", edit: func(c *tokenv1.Claims) { c.KeyId = "" }, keys: keySet{"": {pub: pub(testKey)}}, want: ErrUnknownKey},
		{name: "key id too long", edit: func(c *tokenv1.Claims) { c.KeyId = long }, keys: keySet{long: {pub: pub(testKey)}}, want: ErrUnknownKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pb := claimsProto()
			tc.edit(pb)
			keys := tc.keys
			if keys == nil {
				keys = testKeys()
			}
			err := verifyErr(t, codec, signRaw(testKey, 0x01, marshal(t, pb)), keys)
			if !errors.Is(err, tc.want) {
				t.Errorf("Verify: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestVerifyRejectsOtherVersions(t *testing.T) {
	codec := defaultCodec(t)
	claimBytes := marshal(t, claimsProto())
	if _, err := codec.Verify(signRaw(testKey, 0x01, claimBytes), testKeys()); err != nil {
		t.Fatalf("version 1 does not verify: %v", err)
	}
	for _, v := range []byte{0x00, 0x02, 0x7f, 0x81, 0xff} {
		err := verifyErr(t, codec, signRaw(testKey, v, claimBytes), testKeys())
		if !errors.Is(err, errVersion) {
			t.Errorf("version %#x: %v, want %v", v, err, errVersion)
		}
	}
}

func TestVerifyRejectsForeignPrefix(t *testing.T) {
	codec := defaultCodec(t)
	acme, err := NewCodec("acme_pat_")
	if err != nil {
		t.Fatal(err)
	}
	tok := mustMint(t, codec, testClaims(), testKey)
	body := tok[len(DefaultPrefix):]
	tests := []struct {
		name string
		tok  string
	}{
		{name: "other deployment", tok: mustMint(t, acme, testClaims(), testKey)},
		{name: "other deployment, checksum recomputed", tok: withChecksum("acme_pat_" + body[:len(body)-6])},
		{name: "no prefix, checksum recomputed", tok: withChecksum(body[:len(body)-6])},
		{name: "upper-case prefix, checksum recomputed", tok: withChecksum("SIGIL_PAT_" + body[:len(body)-6])},
		{name: "prefix of the prefix", tok: withChecksum("sigil_" + body[:len(body)-6])},
		{name: "GitHub-style", tok: "ghp_" + body},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := verifyErr(t, codec, tc.tok, testKeys())
			if !errors.Is(err, errPrefix) && !errors.Is(err, errTooShort) {
				t.Errorf("Verify: %v, want %v", err, errPrefix)
			}
			assertIs(t, err, ErrMalformed)
			if codec.LooksLike(tc.tok) {
				t.Error("LooksLike is true")
			}
		})
	}
	t.Run("a codec rejects the default prefix", func(t *testing.T) {
		if err := verifyErr(t, acme, tok, testKeys()); !errors.Is(err, errPrefix) {
			t.Errorf("Verify: %v, want %v", err, errPrefix)
		}
	})
}

func TestVerifyLengthCap(t *testing.T) {
	codec := defaultCodec(t)
	keys := testKeys()
	// Prefix, valid base64 and a valid checksum: only the length is wrong.
	justTooLong := withChecksum(DefaultPrefix + strings.Repeat("A", MaxLen+1-len(DefaultPrefix)-6))
	if len(justTooLong) != MaxLen+1 {
		t.Fatalf("test token is %d bytes", len(justTooLong))
	}
	tests := []struct {
		name string
		tok  string
	}{
		{name: "MaxLen+1", tok: justTooLong},
		{name: "1 MiB", tok: withChecksum(DefaultPrefix + strings.Repeat("A", 1<<20))},
		{name: "1 MiB of garbage", tok: strings.Repeat("\xff", 1<<20)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := verifyErr(t, codec, tc.tok, keys)
			if !errors.Is(err, errTooLong) {
				t.Errorf("Verify: %v, want %v", err, errTooLong)
			}
			assertIs(t, err, ErrMalformed)
			if codec.LooksLike(tc.tok) {
				t.Error("LooksLike is true")
			}
			// Rejected before any decoding: not even a buffer is taken.
			if n := testing.AllocsPerRun(20, func() { _, _ = codec.Verify(tc.tok, keys) }); n != 0 {
				t.Errorf("Verify allocates %v times", n)
			}
		})
	}
}

// TestLongestTokens mints the largest tokens that fit MaxLen, for short and
// long prefixes, and checks that they verify and that one more grant gives
// ErrTooLong.
func TestLongestTokens(t *testing.T) {
	for _, prefix := range []string{"x", DefaultPrefix, strings.Repeat("p", MaxPrefixLen)} {
		t.Run(prefix, func(t *testing.T) {
			codec, err := NewCodec(prefix)
			if err != nil {
				t.Fatal(err)
			}
			claims := testClaims()
			var last string
			for i := 0; ; i++ {
				if i > MaxLen {
					t.Fatal("Mint never refused a token")
				}
				g := scope.Grant{Permissions: []string{"product:action" + strings.Repeat("n", i%17)}, Resources: []string{"r"}}
				claims.Grants = append(claims.Grants, g)
				tok, err := codec.Mint(claims, testKey)
				if err != nil {
					if !errors.Is(err, ErrTooLong) {
						t.Fatalf("Mint: %v, want %v", err, ErrTooLong)
					}
					break
				}
				last = tok
			}
			// Then grow the last permission a byte at a time.
			claims.Grants = claims.Grants[:len(claims.Grants)-1]
			g := &claims.Grants[len(claims.Grants)-1]
			for {
				g.Permissions = []string{g.Permissions[0] + "n"}
				tok, err := codec.Mint(claims, testKey)
				if err != nil {
					if !errors.Is(err, ErrTooLong) {
						t.Fatalf("Mint: %v, want %v", err, ErrTooLong)
					}
					break
				}
				last = tok
			}
			g.Permissions = []string{g.Permissions[0][:len(g.Permissions[0])-1]}
			if len(last) > MaxLen || len(last) < MaxLen-2 {
				t.Fatalf("longest token is %d bytes, want MaxLen or just under", len(last))
			}
			got, err := codec.Verify(last, testKeys())
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			assertClaimsEqual(t, got, &claims)
		})
	}
}

func TestMintRejects(t *testing.T) {
	codec := defaultCodec(t)
	mismatched := bytes.Clone(testKey)
	copy(mismatched[32:], pub(otherKey))
	tests := []struct {
		name string
		edit func(*Claims)
		key  ed25519.PrivateKey
		want error // nil: any error
	}{
		{name: "zero id", edit: func(c *Claims) { c.ID = ID{} }, want: ErrInvalidClaims},
		{name: "no org id", edit: func(c *Claims) { c.OrgID = "" }, want: ErrInvalidClaims},
		{name: "org id too long", edit: func(c *Claims) { c.OrgID = strings.Repeat("o", MaxIdentLen+1) }, want: ErrInvalidClaims},
		{name: "org id not UTF-8", edit: func(c *Claims) { c.OrgID = "org-\xff" }, want: ErrInvalidClaims},
		{name: "no key id", edit: func(c *Claims) { c.KeyID = "" }, want: ErrInvalidClaims},
		{name: "key id too long", edit: func(c *Claims) { c.KeyID = strings.Repeat("k", MaxIdentLen+1) }, want: ErrInvalidClaims},
		{name: "no issue time", edit: func(c *Claims) { c.IssuedAt = time.Time{} }, want: ErrInvalidClaims},
		{name: "no expiry", edit: func(c *Claims) { c.ExpiresAt = time.Time{} }, want: ErrInvalidClaims},
		{name: "expiry at issue", edit: func(c *Claims) { c.ExpiresAt = c.IssuedAt }, want: ErrInvalidClaims},
		{name: "expiry in the same second", edit: func(c *Claims) { c.ExpiresAt = c.IssuedAt.Add(999 * time.Millisecond) }, want: ErrInvalidClaims},
		{name: "expiry before issue", edit: func(c *Claims) { c.ExpiresAt = c.IssuedAt.Add(-time.Hour) }, want: ErrInvalidClaims},
		{name: "no grants", edit: func(c *Claims) { c.Grants = nil }, want: ErrInvalidClaims},
		{name: "grant without permission", edit: func(c *Claims) { c.Grants = []scope.Grant{{Resources: []string{"domains/a"}}} }, want: ErrInvalidClaims},
		{name: "empty permission", edit: func(c *Claims) { c.Grants = []scope.Grant{{Permissions: []string{"a:b", ""}}} }, want: ErrInvalidClaims},
		{name: "empty resource", edit: func(c *Claims) { c.Grants = []scope.Grant{{Permissions: []string{"a:b"}, Resources: []string{""}}} }, want: ErrInvalidClaims},
		{name: "permission not UTF-8", edit: func(c *Claims) { c.Grants = []scope.Grant{{Permissions: []string{"a:\xc3"}}} }, want: ErrInvalidClaims},
		{
			name: "too many grants",
			edit: func(c *Claims) {
				c.Grants = []scope.Grant{{Permissions: []string{strings.Repeat("p", MaxLen)}}}
			},
			want: ErrTooLong,
		},
		{name: "nil key", edit: func(*Claims) {}, key: ed25519.PrivateKey{}},
		{name: "seed only", edit: func(*Claims) {}, key: testKey.Seed()},
		{name: "public key", edit: func(*Claims) {}, key: ed25519.PrivateKey(pub(testKey))},
		{name: "public half does not match the seed", edit: func(*Claims) {}, key: mismatched},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			claims := testClaims()
			tc.edit(&claims)
			key := testKey
			if tc.key != nil {
				key = tc.key
			}
			tok, err := codec.Mint(claims, key)
			if err == nil {
				t.Fatal("Mint succeeded")
			}
			if tok != "" {
				t.Error("Mint returned a token with an error")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("Mint: %v, want %v", err, tc.want)
			}
		})
	}
	t.Run("nil private key", func(t *testing.T) {
		if _, err := codec.Mint(testClaims(), nil); err == nil {
			t.Fatal("Mint succeeded")
		}
	})
}

func TestNewCodec(t *testing.T) {
	tests := []struct {
		name   string
		prefix string
		want   string // "" : error
	}{
		{name: "empty means default", prefix: "", want: DefaultPrefix},
		{name: "default", prefix: DefaultPrefix, want: DefaultPrefix},
		{name: "custom", prefix: "acme_pat_", want: "acme_pat_"},
		{name: "one character", prefix: "a", want: "a"},
		{name: "digits", prefix: "x9_", want: "x9_"},
		{name: "longest", prefix: strings.Repeat("a", MaxPrefixLen), want: strings.Repeat("a", MaxPrefixLen)},
		{name: "too long", prefix: strings.Repeat("a", MaxPrefixLen+1)},
		{name: "upper case", prefix: "Sigil_"},
		{name: "hyphen", prefix: "sigil-pat-"},
		{name: "space", prefix: "sigil pat"},
		{name: "non-ASCII", prefix: "sigil_été_"},
		{name: "NUL", prefix: "sigil\x00"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := NewCodec(tc.prefix)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("NewCodec(%q) succeeded", tc.prefix)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewCodec(%q): %v", tc.prefix, err)
			}
			if got := c.Prefix(); got != tc.want {
				t.Errorf("Prefix() = %q, want %q", got, tc.want)
			}
		})
	}
	t.Run("zero and nil codecs use the default prefix", func(t *testing.T) {
		var nilCodec *Codec
		for _, c := range []*Codec{{}, nilCodec} {
			if got := c.Prefix(); got != DefaultPrefix {
				t.Errorf("Prefix() = %q, want %q", got, DefaultPrefix)
			}
			tok := mustMint(t, c, testClaims(), testKey)
			if _, err := defaultCodec(t).Verify(tok, testKeys()); err != nil {
				t.Errorf("Verify: %v", err)
			}
		}
	})
}

func TestLooksLike(t *testing.T) {
	codec := defaultCodec(t)
	tok := mustMint(t, codec, testClaims(), testKey)
	last := tok[len(tok)-1]
	other := byte('0')
	if last == other {
		other = '1'
	}
	tests := []struct {
		name string
		s    string
		want bool
	}{
		{name: "valid", s: tok, want: true},
		{name: "forged but well-formed", s: mustMint(t, codec, testClaims(), otherKey), want: true},
		{name: "checksum broken", s: tok[:len(tok)-1] + string(other), want: false},
		{name: "body changed", s: tok[:20] + string(tok[20]^1) + tok[21:], want: false},
		{name: "checksum missing", s: tok[:len(tok)-6], want: false},
		{name: "foreign prefix", s: "acme" + tok[5:], want: false},
		{name: "empty", s: "", want: false},
		{name: "prefix only", s: DefaultPrefix, want: false},
		{name: "too long", s: withChecksum(DefaultPrefix + strings.Repeat("A", MaxLen)), want: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := codec.LooksLike(tc.s); got != tc.want {
				t.Errorf("LooksLike = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestVerifyRejectsNonTokens(t *testing.T) {
	codec := defaultCodec(t)
	tests := []struct {
		name string
		tok  string
	}{
		{name: "empty", tok: ""},
		{name: "prefix only", tok: DefaultPrefix},
		{name: "prefix and checksum", tok: withChecksum(DefaultPrefix)},
		{name: "short body with checksum", tok: withChecksum(DefaultPrefix + strings.Repeat("A", 87))},
		{name: "minimal body of zeros", tok: withChecksum(DefaultPrefix + strings.Repeat("A", 88))},
		{name: "version 1 and zeros", tok: encodeBody(append([]byte{1}, make([]byte, 100)...))},
		{name: "operator-like secret", tok: "sigil_op_" + strings.Repeat("a", 64)},
		{name: "JWT", tok: "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			assertIs(t, verifyErr(t, codec, tc.tok, testKeys()), ErrMalformed)
		})
	}
}

func TestVerifyRejectionsDoNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	codec := defaultCodec(t)
	keys := testKeys()
	tok := mustMint(t, codec, testClaims(), testKey)
	tests := []struct {
		name string
		tok  string
	}{
		{name: "bad checksum", tok: tok[:len(tok)-1] + "!"},
		{name: "bad encoding", tok: withChecksum(tok[:30] + "\n" + tok[30:len(tok)-6])},
		{name: "foreign prefix", tok: "acme" + tok[4:]},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			verifyErr(t, codec, tc.tok, keys)
			if n := testing.AllocsPerRun(100, func() { _, _ = codec.Verify(tc.tok, keys) }); n != 0 {
				t.Errorf("Verify allocates %v times", n)
			}
		})
	}
}

func TestVerifyIsSafeForConcurrentUse(t *testing.T) {
	codec := defaultCodec(t)
	keys := testKeys()
	want := testClaims()
	tok := mustMint(t, codec, want, testKey)
	bad := rechecksum(tok[:40] + "A" + tok[41:])
	done := make(chan error)
	for range 4 {
		go func() {
			for range 50 {
				got, err := codec.Verify(tok, keys)
				if err != nil || got.ID != want.ID || got.OrgID != want.OrgID {
					done <- errors.New("valid token failed")
					return
				}
				if _, err := codec.Verify(bad, keys); err == nil {
					done <- errors.New("changed token verified")
					return
				}
			}
			done <- nil
		}()
	}
	for range 4 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

// Guard against an accidental change of the claims message: the test
// helpers build claim bytes independently.
var _ proto.Message = (*tokenv1.Claims)(nil)
