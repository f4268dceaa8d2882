// Package token implements the Sigil personal access token format, version 1:
// minting (signing) and strict, bounded parsing and verification. It knows
// nothing of gRPC or storage.
package token

import (
	"crypto/ed25519"
	"errors"
	"time"

	"github.com/sigil-auth/sigil/pkg/scope"
)

// DefaultPrefix is the token prefix used unless a deployment sets its own.
const DefaultPrefix = "sigil_pat_"

// MaxLen is the largest token string accepted, checked before any decoding.
const MaxLen = 4096

// Errors returned by Verify. Each maps one to one onto a DenyReason.
var (
	ErrMalformed    = errors.New("token: malformed")
	ErrBadSignature = errors.New("token: bad signature")
	ErrUnknownKey   = errors.New("token: unknown signing key")
	ErrKeyRevoked   = errors.New("token: signing key revoked")
	ErrNotYetValid  = errors.New("token: not yet valid")
	ErrExpired      = errors.New("token: expired")
)

// ID is a token identifier: 128 random bits. Its text form is lower-case hex.
type ID [16]byte

// NewID returns a random ID.
func NewID() (ID, error) { panic("token: unimplemented") }

// ParseID parses the text form of an ID.
func ParseID(s string) (ID, error) { panic("token: unimplemented") }

// String returns the lower-case hex form of the ID.
func (id ID) String() string { panic("token: unimplemented") }

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
func (c *Claims) CheckTime(now time.Time, leeway time.Duration) error {
	panic("token: unimplemented")
}

// KeySet gives the verification keys a verifier trusts.
type KeySet interface {
	// Lookup returns the public key with that id and whether it is revoked;
	// ok is false when the key is unknown.
	Lookup(keyID string) (pub ed25519.PublicKey, revoked bool, ok bool)
}

// Codec mints and verifies tokens with one prefix.
type Codec struct {
	prefix string
}

// NewCodec returns a codec for prefix (DefaultPrefix when empty).
func NewCodec(prefix string) (*Codec, error) { panic("token: unimplemented") }

// Mint signs claims with key and returns the token string. claims.KeyID names key.
func (c *Codec) Mint(claims Claims, key ed25519.PrivateKey) (string, error) {
	panic("token: unimplemented")
}

// Verify parses tok and verifies it against keys: size, prefix, checksum,
// encoding, version, key lookup, signature, claims, key state. It does not
// check time (see Claims.CheckTime). Errors wrap one of the Err values and
// never contain the token.
func (c *Codec) Verify(tok string, keys KeySet) (*Claims, error) { panic("token: unimplemented") }

// LooksLike reports whether s has the prefix and a valid checksum, without
// keys: what a secret scanner does.
func (c *Codec) LooksLike(s string) bool { panic("token: unimplemented") }
