// Package token implements the Sigil personal access token format, version 1:
// minting (signing) and strict, bounded parsing and verification. It knows
// nothing of gRPC or storage.
//
// A token is `<prefix><body><checksum>`. The body is base64url without
// padding of version(1 byte) ‖ claims ‖ signature, where claims is a
// deterministic protobuf encoding of sigil.token.v1.Claims and signature is
// Ed25519 over a fixed domain-separation string, the version byte and the
// claim bytes exactly as carried. The checksum is the CRC32 (IEEE) of prefix
// and body as 6 fixed-width base62 characters, so that a scanner rejects
// look-alikes without keys.
package token

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"github.com/sigil-auth/sigil/pkg/scope"
)

// DefaultPrefix is the token prefix used unless a deployment sets its own.
const DefaultPrefix = "sigil_pat_"

// MaxLen is the largest token string accepted, checked before any decoding.
const MaxLen = 4096

// MaxPrefixLen is the longest prefix NewCodec accepts.
const MaxPrefixLen = 32

// MaxIdentLen is the largest organization id and key id, in bytes, that a
// token may carry.
const MaxIdentLen = 128

// Errors returned by Verify and Claims.CheckTime. Each maps one to one onto
// a DenyReason.
var (
	// ErrMalformed means the string is not a well-formed token of this
	// codec: length, prefix, checksum, encoding, version or claims.
	ErrMalformed = errors.New("token: malformed")
	// ErrBadSignature means the signature does not verify with the key the
	// token names.
	ErrBadSignature = errors.New("token: bad signature")
	// ErrUnknownKey means the key set has no usable key with the id the
	// token names.
	ErrUnknownKey = errors.New("token: unknown signing key")
	// ErrKeyRevoked means the token is valid but its signing key is revoked.
	ErrKeyRevoked = errors.New("token: signing key revoked")
	// ErrNotYetValid means the token's issue time is still to come.
	ErrNotYetValid = errors.New("token: not yet valid")
	// ErrExpired means the token's expiry has passed.
	ErrExpired = errors.New("token: expired")
)

// Errors returned by Mint and ParseID. Mint's other errors (a key that is
// not an Ed25519 private key) are internal faults and wrap no sentinel.
var (
	// ErrInvalidClaims means the claims given to Mint break a rule of the
	// format (see Mint).
	ErrInvalidClaims = errors.New("token: invalid claims")
	// ErrTooLong means the token Mint would produce is longer than MaxLen,
	// usually because the grants are too many or too long.
	ErrTooLong = errors.New("token: longer than the maximum length")
	// ErrInvalidID means the text given to ParseID is not 32 lower-case
	// hexadecimal characters.
	ErrInvalidID = errors.New("token: invalid token id")
)

// Claims is what a token asserts.
type Claims struct {
	ID        ID
	OrgID     string
	KeyID     string
	IssuedAt  time.Time // second precision
	ExpiresAt time.Time // second precision
	Grants    []scope.Grant
}

// CheckTime reports ErrNotYetValid or ErrExpired when now, with leeway, is
// outside the claims' validity.
//
// The rule: the claims are not yet valid when now+leeway is before IssuedAt,
// and expired when now-leeway is at or after ExpiresAt. So with no leeway a
// token is valid on [IssuedAt, ExpiresAt). A negative leeway counts as zero.
// Call it only on claims returned by Verify: their signature was verified.
// Nil claims give ErrMalformed.
func (c *Claims) CheckTime(now time.Time, leeway time.Duration) error {
	if c == nil {
		return errNilClaims
	}
	leeway = max(leeway, 0)
	if now.Add(leeway).Before(c.IssuedAt) {
		return ErrNotYetValid
	}
	if !now.Add(-leeway).Before(c.ExpiresAt) {
		return ErrExpired
	}
	return nil
}

// KeySet gives the verification keys a verifier trusts.
type KeySet interface {
	// Lookup returns the public key with that id and whether it is revoked;
	// ok is false when the key is unknown.
	Lookup(keyID string) (pub ed25519.PublicKey, revoked bool, ok bool)
}

// Codec mints and verifies tokens with one prefix. The zero Codec (and a
// nil *Codec) uses DefaultPrefix. A Codec is safe for concurrent use.
type Codec struct {
	prefix string
}

// NewCodec returns a codec for prefix (DefaultPrefix when empty). A prefix
// is 1 to MaxPrefixLen characters among a-z, 0-9 and '_'.
func NewCodec(prefix string) (*Codec, error) {
	if prefix == "" {
		return &Codec{prefix: DefaultPrefix}, nil
	}
	if len(prefix) > MaxPrefixLen {
		return nil, fmt.Errorf("token: prefix longer than %d characters", MaxPrefixLen)
	}
	for i := 0; i < len(prefix); i++ {
		c := prefix[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_') {
			return nil, fmt.Errorf("token: prefix %q: only a-z, 0-9 and '_' are allowed", prefix)
		}
	}
	return &Codec{prefix: prefix}, nil
}

// Prefix returns the prefix of the codec's tokens.
func (c *Codec) Prefix() string {
	if c == nil || c.prefix == "" {
		return DefaultPrefix
	}
	return c.prefix
}

// Mint signs claims with key and returns the token string. claims.KeyID names key.
//
// IssuedAt and ExpiresAt are truncated to the second (towards the past). The
// claims must have a non-zero ID, an OrgID and a KeyID of 1 to MaxIdentLen
// bytes of valid UTF-8, an IssuedAt after the Unix epoch, an ExpiresAt at
// least one second after IssuedAt, and at least one grant; every grant needs
// at least one permission, and no permission or resource may be empty.
// Breaking one of these gives ErrInvalidClaims; a token longer than MaxLen
// gives ErrTooLong.
func (c *Codec) Mint(claims Claims, key ed25519.PrivateKey) (string, error) {
	return mint(c.Prefix(), &claims, key)
}

// Verify parses tok and verifies it against keys: size, prefix, checksum,
// encoding, version, key lookup, signature, claims, key state. It does not
// check time (see Claims.CheckTime). Errors wrap one of the Err values and
// never contain the token.
//
// The key id is read from the claim bytes before the signature is checked
// (it says which key to check it with); every other claim rule is checked
// only once the signature verified. A key id that no key could have (empty
// or longer than MaxIdentLen), a nil keys, and a key whose public key is not
// ed25519.PublicKeySize bytes long all give ErrUnknownKey. ErrKeyRevoked is
// reported only for a token whose signature and claims are valid.
func (c *Codec) Verify(tok string, keys KeySet) (*Claims, error) {
	return verify(c.Prefix(), tok, keys)
}

// LooksLike reports whether s has the prefix and a valid checksum, without
// keys: what a secret scanner does.
func (c *Codec) LooksLike(s string) bool {
	sc := getScratch()
	defer putScratch(sc)
	return checkFrame(c.Prefix(), s, sc) == nil
}
