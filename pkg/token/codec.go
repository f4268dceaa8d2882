package token

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	tokenv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/token/v1"
	"github.com/sigil-auth/sigil/pkg/scope"
)

const (
	// version1 is the only format version. It alone fixes every algorithm
	// (Ed25519, CRC32, base64url, the claims message): nothing in a token
	// chooses one.
	version1 byte = 0x01

	// signingDomain is signed before the version byte and the claim bytes,
	// so that a signature over a token can never be taken for a signature
	// over anything else the same key might sign.
	signingDomain = "sigil-pat-v1\x00"

	// checksumLen is the width of the base62 CRC32: 62^6 > 2^32.
	checksumLen = 6

	// minDecodedLen is the smallest body: version, one claim byte, signature.
	minDecodedLen = 1 + 1 + ed25519.SignatureSize
	// minBodyLen is the unpadded base64 length of minDecodedLen bytes.
	minBodyLen = (minDecodedLen*8 + 5) / 6
	// maxDecodedLen bounds the decoded body of any token of at most MaxLen
	// characters.
	maxDecodedLen = MaxLen * 3 / 4

	base62Digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

// b64 decodes with strict trailing bits; it still skips CR and LF, which is
// why verify also checks the length and compares the re-encoding with the
// input.
var b64 = base64.RawURLEncoding.Strict()

// scratch holds the buffers of one verification, so that a verification
// allocates nothing but its result. Sizes follow from MaxLen, which is
// checked before a scratch is used.
type scratch struct {
	// text holds prefix‖body for the checksum and the base64 decoder, then
	// the re-encoded body.
	text [MaxLen]byte
	// dec holds signingDomain‖version‖claims‖signature: the signed message
	// and the signature, contiguous, with no copy.
	dec [len(signingDomain) + maxDecodedLen]byte
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

func getScratch() *scratch   { return scratchPool.Get().(*scratch) }
func putScratch(sc *scratch) { scratchPool.Put(sc) }

// checkFrame checks what a scanner can check without keys: length, prefix
// and checksum. It leaves prefix‖body in sc.text.
func checkFrame(prefix, tok string, sc *scratch) error {
	if len(tok) > MaxLen {
		return errTooLong
	}
	if len(tok) < len(prefix)+minBodyLen+checksumLen {
		return errTooShort
	}
	if tok[:len(prefix)] != prefix {
		return errPrefix
	}
	signed := sc.text[:copy(sc.text[:], tok[:len(tok)-checksumLen])]
	want, ok := parseChecksum(tok[len(tok)-checksumLen:])
	if !ok || crc32.ChecksumIEEE(signed) != want {
		return errChecksum
	}
	return nil
}

func verify(prefix, tok string, keys KeySet) (*Claims, error) {
	if len(tok) > MaxLen {
		return nil, errTooLong
	}
	sc := getScratch()
	defer putScratch(sc)
	if err := checkFrame(prefix, tok, sc); err != nil {
		return nil, err
	}

	body := tok[len(prefix) : len(tok)-checksumLen]
	dec := sc.dec[len(signingDomain):]
	n, err := b64.Decode(dec, sc.text[len(prefix):len(prefix)+len(body)])
	if err != nil || b64.EncodedLen(n) != len(body) {
		return nil, errEncoding
	}
	dec = dec[:n]
	// One spelling per body. Strict refuses non-zero trailing bits; Decode
	// skips CR and LF, which the length check above catches; comparing the
	// re-encoding with the input guards against any other leniency of the
	// decoder, now or in a later Go release.
	b64.Encode(sc.text[:], dec)
	if string(sc.text[:len(body)]) != body {
		return nil, errEncoding
	}

	if n < minDecodedLen {
		return nil, errTooShort
	}
	if dec[0] != version1 {
		return nil, errVersion
	}
	claimBytes := dec[1 : n-ed25519.SignatureSize]
	sig := dec[n-ed25519.SignatureSize:]

	// The claims are decoded before the signature is checked only to learn
	// the key id; nothing else of them is trusted or reported until then.
	var pb tokenv1.Claims
	if err := proto.Unmarshal(claimBytes, &pb); err != nil {
		return nil, errClaimsDecode
	}
	keyID := pb.GetKeyId()
	if keyID == "" || len(keyID) > MaxIdentLen || keys == nil {
		return nil, ErrUnknownKey
	}
	pub, revoked, ok := keys.Lookup(keyID)
	if !ok {
		return nil, ErrUnknownKey
	}
	if len(pub) != ed25519.PublicKeySize {
		return nil, errUnusableKey
	}
	signed := sc.dec[:len(signingDomain)+1+len(claimBytes)]
	copy(signed, signingDomain)
	if !ed25519.Verify(pub, signed, sig) {
		return nil, ErrBadSignature
	}

	claims, err := fromProto(&pb)
	if err != nil {
		return nil, err
	}
	if revoked {
		return nil, ErrKeyRevoked
	}
	return claims, nil
}

func mint(prefix string, claims *Claims, key ed25519.PrivateKey) (string, error) {
	if p := claims.problem(); p != "" {
		return "", fmt.Errorf("%w: %s", ErrInvalidClaims, p)
	}
	if err := checkPrivateKey(key); err != nil {
		return "", err
	}
	pb := toProto(claims)
	opts := proto.MarshalOptions{Deterministic: true}
	size := opts.Size(pb)
	total := len(prefix) + b64.EncodedLen(1+size+ed25519.SignatureSize) + checksumLen
	if total > MaxLen {
		return "", fmt.Errorf("%w: %d bytes, at most %d", ErrTooLong, total, MaxLen)
	}

	msg := make([]byte, 0, len(signingDomain)+1+size+ed25519.SignatureSize)
	msg = append(msg, signingDomain...)
	msg = append(msg, version1)
	msg, err := opts.MarshalAppend(msg, pb)
	if err != nil {
		return "", fmt.Errorf("%w: claims do not encode", ErrInvalidClaims)
	}
	payload := append(msg[len(signingDomain):], ed25519.Sign(key, msg)...)

	out := make([]byte, 0, total)
	out = append(out, prefix...)
	out = b64.AppendEncode(out, payload)
	out = appendChecksum(out, crc32.ChecksumIEEE(out))
	if len(out) != total {
		return "", errors.New("token: internal error: unexpected token length")
	}
	return string(out), nil
}

// checkPrivateKey refuses a key that ed25519.Sign would panic on, and one
// whose public half does not match its seed: signing with a wrong public
// half makes bad signatures and can leak the private key.
func checkPrivateKey(key ed25519.PrivateKey) error {
	if len(key) != ed25519.PrivateKeySize {
		return fmt.Errorf("token: signing key is %d bytes, want a %d-byte Ed25519 private key", len(key), ed25519.PrivateKeySize)
	}
	derived := ed25519.NewKeyFromSeed(key.Seed())
	if !bytes.Equal(derived[ed25519.SeedSize:], key[ed25519.SeedSize:]) {
		return errors.New("token: signing key's public half does not match its seed")
	}
	return nil
}

// problem returns what breaks the format's rules in c, or "" when nothing
// does. Mint refuses such claims; Verify refuses a token carrying them even
// with a valid signature.
func (c *Claims) problem() string {
	switch {
	case c.ID.IsZero():
		return "token id is zero"
	case !validIdent(c.OrgID):
		return "org id is empty, too long or not UTF-8"
	case !validIdent(c.KeyID):
		return "key id is empty, too long or not UTF-8"
	case c.IssuedAt.Unix() <= 0:
		return "issue time must be after the Unix epoch"
	case c.ExpiresAt.Unix() <= c.IssuedAt.Unix():
		return "expiry must be at least a second after the issue time"
	case len(c.Grants) == 0:
		return "no grants"
	}
	for _, g := range c.Grants {
		if len(g.Permissions) == 0 {
			return "a grant has no permission"
		}
		if !nonEmptyUTF8(g.Permissions) {
			return "a permission is empty or not UTF-8"
		}
		if !nonEmptyUTF8(g.Resources) {
			return "a resource is empty or not UTF-8"
		}
	}
	return ""
}

func validIdent(s string) bool {
	return s != "" && len(s) <= MaxIdentLen && utf8.ValidString(s)
}

func nonEmptyUTF8(ss []string) bool {
	for _, s := range ss {
		if s == "" || !utf8.ValidString(s) {
			return false
		}
	}
	return true
}

func toProto(c *Claims) *tokenv1.Claims {
	grants := make([]*tokenv1.Grant, len(c.Grants))
	for i, g := range c.Grants {
		grants[i] = &tokenv1.Grant{Permissions: g.Permissions, Resources: g.Resources}
	}
	return &tokenv1.Claims{
		TokenId:   c.ID[:],
		OrgId:     c.OrgID,
		KeyId:     c.KeyID,
		IssuedAt:  c.IssuedAt.Unix(),
		ExpiresAt: c.ExpiresAt.Unix(),
		Grants:    grants,
	}
}

// fromProto converts verified claim bytes, decoded into pb, into Claims and
// applies every rule of the format: a field this version does not know,
// anywhere, fails closed (it may be a restriction we would not enforce).
func fromProto(pb *tokenv1.Claims) (*Claims, error) {
	if len(pb.ProtoReflect().GetUnknown()) != 0 {
		return nil, errUnknownFields
	}
	c := &Claims{
		OrgID:     pb.OrgId,
		KeyID:     pb.KeyId,
		IssuedAt:  time.Unix(pb.IssuedAt, 0).UTC(),
		ExpiresAt: time.Unix(pb.ExpiresAt, 0).UTC(),
	}
	if len(pb.TokenId) != len(c.ID) {
		return nil, fmt.Errorf("%w: token id is not %d bytes", ErrMalformed, len(c.ID))
	}
	copy(c.ID[:], pb.TokenId)
	if len(pb.Grants) > 0 {
		c.Grants = make([]scope.Grant, len(pb.Grants))
	}
	for i, g := range pb.Grants {
		if len(g.ProtoReflect().GetUnknown()) != 0 {
			return nil, errUnknownFields
		}
		// The decoded message is dropped: its slices can be kept.
		c.Grants[i] = scope.Grant{Permissions: g.Permissions, Resources: g.Resources}
	}
	if p := c.problem(); p != "" {
		return nil, fmt.Errorf("%w: %s", ErrMalformed, p)
	}
	return c, nil
}

// appendChecksum appends sum as checksumLen base62 digits, most significant
// first, zero-padded.
func appendChecksum(dst []byte, sum uint32) []byte {
	var b [checksumLen]byte
	v := uint64(sum)
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = base62Digits[v%62]
		v /= 62
	}
	return append(dst, b[:]...)
}

// parseChecksum is the inverse of appendChecksum. It refuses anything
// appendChecksum cannot produce, so each checksum has one spelling.
func parseChecksum[T string | []byte](s T) (uint32, bool) {
	if len(s) != checksumLen {
		return 0, false
	}
	var v uint64
	for i := 0; i < len(s); i++ {
		d, ok := base62Value(s[i])
		if !ok {
			return 0, false
		}
		v = v*62 + uint64(d)
	}
	if v > math.MaxUint32 {
		return 0, false
	}
	return uint32(v), true
}

func base62Value(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'A' <= c && c <= 'Z':
		return c - 'A' + 10, true
	case 'a' <= c && c <= 'z':
		return c - 'a' + 36, true
	}
	return 0, false
}
