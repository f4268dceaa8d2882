package token

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"hash/crc32"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	tokenv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/token/v1"
	"github.com/sigil-auth/sigil/pkg/scope"
)

// Fixed keys, so that minted tokens (Ed25519 is deterministic) and fuzz
// corpora are the same on every run.
var (
	testKey  = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x11}, ed25519.SeedSize))
	otherKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x22}, ed25519.SeedSize))
)

const (
	testKeyID = "key-1"
	// testDomain pins the signing domain of format v1, independently of
	// the package's constant.
	testDomain = "sigil-pat-v1\x00"
	// testBase62 pins the checksum alphabet and digit order.
	testBase62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

func pub(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

// keySet is a KeySet backed by a map.
type keySet map[string]keyEntry

type keyEntry struct {
	pub     ed25519.PublicKey
	revoked bool
}

func (k keySet) Lookup(id string) (ed25519.PublicKey, bool, bool) {
	e, ok := k[id]
	return e.pub, e.revoked, ok
}

func testKeys() keySet { return keySet{testKeyID: {pub: pub(testKey)}} }

func testClaims() Claims {
	iat := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	return Claims{
		ID:        ID{0x0f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x69, 0x78, 0x87, 0x96, 0xa5, 0xb4, 0xc3, 0xd2, 0xe1, 0xf0},
		OrgID:     "org-example",
		KeyID:     testKeyID,
		IssuedAt:  iat,
		ExpiresAt: iat.Add(30 * 24 * time.Hour),
		Grants: []scope.Grant{
			{Permissions: []string{"domain:renew", "domain:view"}, Resources: []string{"domains/example.com"}},
			{Permissions: []string{"organization:view"}},
		},
	}
}

func defaultCodec(t testing.TB) *Codec {
	t.Helper()
	c, err := NewCodec("")
	if err != nil {
		t.Fatalf("NewCodec: %v", err)
	}
	return c
}

func mustMint(t testing.TB, c *Codec, claims Claims, key ed25519.PrivateKey) string {
	t.Helper()
	tok, err := c.Mint(claims, key)
	if err != nil {
		t.Fatalf("Mint: %v", err)
	}
	return tok
}

// testChecksum is an independent implementation of the v1 checksum: CRC32
// (IEEE) of s as 6 base62 digits, most significant first.
func testChecksum(s string) string {
	v := uint64(crc32.ChecksumIEEE([]byte(s)))
	var b [6]byte
	for i := 5; i >= 0; i-- {
		b[i] = testBase62[v%62]
		v /= 62
	}
	return string(b[:])
}

// withChecksum appends a valid checksum to prefix‖body, so that a test
// gets past the checksum stage.
func withChecksum(prefixAndBody string) string { return prefixAndBody + testChecksum(prefixAndBody) }

// rechecksum replaces the checksum of tok with a valid one.
func rechecksum(tok string) string { return withChecksum(tok[:len(tok)-6]) }

// split returns the body (base64 text) of a token of prefix.
func split(t testing.TB, tok, prefix string) string {
	t.Helper()
	if !strings.HasPrefix(tok, prefix) || len(tok) < len(prefix)+6 {
		t.Fatalf("token does not have the prefix %q", prefix)
	}
	return tok[len(prefix) : len(tok)-6]
}

// decodeBody decodes the body of a token minted with DefaultPrefix.
func decodeBody(t testing.TB, tok string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(split(t, tok, DefaultPrefix))
	if err != nil {
		t.Fatalf("decode body: %v", err)
	}
	return b
}

// encodeBody builds a DefaultPrefix token around a decoded body, with a
// valid checksum.
func encodeBody(body []byte) string {
	return withChecksum(DefaultPrefix + base64.RawURLEncoding.EncodeToString(body))
}

// signRaw builds a DefaultPrefix token carrying claimBytes exactly, signed
// properly by key: what only the holder of a signing key can make.
func signRaw(key ed25519.PrivateKey, version byte, claimBytes []byte) string {
	msg := append([]byte(testDomain), version)
	msg = append(msg, claimBytes...)
	sig := ed25519.Sign(key, msg)
	body := append([]byte{version}, claimBytes...)
	return encodeBody(append(body, sig...))
}

// claimsProto is the message testClaims encodes to.
func claimsProto() *tokenv1.Claims {
	c := testClaims()
	pb := &tokenv1.Claims{
		TokenId:   append([]byte(nil), c.ID[:]...),
		OrgId:     c.OrgID,
		KeyId:     c.KeyID,
		IssuedAt:  c.IssuedAt.Unix(),
		ExpiresAt: c.ExpiresAt.Unix(),
	}
	for _, g := range c.Grants {
		pb.Grants = append(pb.Grants, &tokenv1.Grant{Permissions: g.Permissions, Resources: g.Resources})
	}
	return pb
}

func marshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	return b
}

// verifyErr verifies tok, asserts that it fails with no claims and an error
// that contains no part of tok, and returns the error.
func verifyErr(t testing.TB, c *Codec, tok string, keys KeySet) error {
	t.Helper()
	claims, err := c.Verify(tok, keys)
	if err == nil {
		t.Fatalf("Verify succeeded, want an error")
	}
	if claims != nil {
		t.Errorf("Verify returned claims with error %v", err)
	}
	assertNoLeak(t, err, tok)
	return err
}

// assertNoLeak fails when the error message contains any 12 consecutive
// characters of tok.
func assertNoLeak(t testing.TB, err error, tok string) {
	t.Helper()
	const window = 12
	msg := err.Error()
	for i := 0; i+window <= len(tok); i++ {
		if strings.Contains(msg, tok[i:i+window]) {
			t.Fatalf("error %q contains token characters %d..%d", msg, i, i+window)
		}
	}
}

// assertIs fails unless err wraps one of targets.
func assertIs(t testing.TB, err error, targets ...error) {
	t.Helper()
	for _, target := range targets {
		if errors.Is(err, target) {
			return
		}
	}
	t.Fatalf("error %v, want one of %v", err, targets)
}

// rejectErrs are the errors a token that nobody minted may get.
var rejectErrs = []error{ErrMalformed, ErrBadSignature, ErrUnknownKey}

func assertClaimsEqual(t testing.TB, got, want *Claims) {
	t.Helper()
	if got == nil {
		t.Fatal("claims are nil")
	}
	if got.ID != want.ID || got.OrgID != want.OrgID || got.KeyID != want.KeyID {
		t.Errorf("identity: got (%s, %q, %q), want (%s, %q, %q)", got.ID, got.OrgID, got.KeyID, want.ID, want.OrgID, want.KeyID)
	}
	if !got.IssuedAt.Equal(want.IssuedAt) || !got.ExpiresAt.Equal(want.ExpiresAt) {
		t.Errorf("times: got [%v, %v], want [%v, %v]", got.IssuedAt, got.ExpiresAt, want.IssuedAt, want.ExpiresAt)
	}
	if !reflect.DeepEqual(got.Grants, want.Grants) {
		t.Errorf("grants: got %#v, want %#v", got.Grants, want.Grants)
	}
}

// mintWhere mints variants of testClaims (differing in OrgID) until one
// gives a token for which ok holds.
func mintWhere(t testing.TB, c *Codec, what string, ok func(tok string) bool) string {
	t.Helper()
	for i := range 1000 {
		claims := testClaims()
		claims.OrgID = fmt.Sprintf("org-%d", i)
		if tok := mustMint(t, c, claims, testKey); ok(tok) {
			return tok
		}
	}
	t.Fatalf("no token found with %s", what)
	return ""
}
