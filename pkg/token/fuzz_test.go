package token

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sigil-auth/sigil/pkg/scope"
)

// fuzzSeeds returns tokens minted with testKey (Ed25519 is deterministic,
// so they are the same on every run), and the key set they verify with.
func fuzzSeeds(t testing.TB) (valid []string, keys keySet) {
	codec := defaultCodec(t)
	keys = testKeys()
	keys["key-revoked"] = keyEntry{pub: pub(testKey), revoked: true}

	base := testClaims()
	oneGrant := base
	oneGrant.Grants = []scope.Grant{{Permissions: []string{"domain:view"}}}
	expired := base
	expired.IssuedAt, expired.ExpiresAt = time.Unix(1_000_000_000, 0), time.Unix(1_000_086_400, 0)
	revoked := base
	revoked.KeyID = "key-revoked"
	for _, c := range []Claims{base, oneGrant, expired, revoked} {
		valid = append(valid, mustMint(t, codec, c, testKey))
	}
	return valid, keys
}

// FuzzVerify checks that Verify never panics, that only tokens minted with
// the test key verify (forging is out of reach, so anything else that
// verifies is a parsing bug), and that no error carries the input.
func FuzzVerify(f *testing.F) {
	valid, keys := fuzzSeeds(f)
	minted := make(map[string]bool)
	for _, tok := range valid {
		minted[tok] = true
		f.Add(tok)
		f.Add(tok[:len(tok)-1])
		f.Add(tok + "A")
		f.Add(rechecksum(tok[:20] + "A" + tok[21:]))
		body := tok[len(DefaultPrefix) : len(tok)-6]
		f.Add(withChecksum(DefaultPrefix + body[:len(body)/2] + "\n" + body[len(body)/2:]))
		f.Add(withChecksum(DefaultPrefix + body + "="))
		f.Add(withChecksum(DefaultPrefix + strings.NewReplacer("-", "+", "_", "/").Replace(body)))
	}
	codec := defaultCodec(f)
	forged := mustMint(f, codec, testClaims(), otherKey)
	for _, s := range []string{
		"", DefaultPrefix, withChecksum(DefaultPrefix), forged,
		"acme_pat_" + valid[0][len(DefaultPrefix):],
		withChecksum(DefaultPrefix + strings.Repeat("A", 88)),
		withChecksum(DefaultPrefix + strings.Repeat("A", MaxLen)),
		signRaw(testKey, 0x02, marshal(f, claimsProto())),
		signRaw(testKey, 0x01, unknownField(marshal(f, claimsProto()), 99)),
	} {
		f.Add(s)
	}

	f.Fuzz(func(t *testing.T, tok string) {
		looks := codec.LooksLike(tok)
		claims, err := codec.Verify(tok, keys)
		if err != nil {
			if claims != nil {
				t.Fatal("claims returned with an error")
			}
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrBadSignature) &&
				!errors.Is(err, ErrUnknownKey) && !errors.Is(err, ErrKeyRevoked) {
				t.Fatalf("error %v wraps no Verify sentinel", err)
			}
			if errors.Is(err, ErrKeyRevoked) && !minted[tok] {
				t.Fatal("ErrKeyRevoked for a token nobody minted")
			}
			if len(tok) >= 100 && strings.Contains(err.Error(), tok) {
				t.Fatal("error contains the token")
			}
			return
		}
		if !minted[tok] {
			t.Fatalf("a token that was never minted verified (%d bytes)", len(tok))
		}
		if !looks {
			t.Fatal("LooksLike is false for a token that verifies")
		}
		_ = claims.CheckTime(time.Now(), time.Minute)
	})
}
