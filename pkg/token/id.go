package token

import (
	"crypto/rand"
	"encoding/hex"
)

// ID is a token identifier: 128 random bits. Its text form is lower-case hex.
type ID [16]byte

// NewID returns a random ID.
func NewID() (ID, error) {
	var id ID
	if _, err := rand.Read(id[:]); err != nil {
		return ID{}, err
	}
	return id, nil
}

// ParseID parses the text form of an ID: exactly 32 lower-case hexadecimal
// characters. Other text gives an error wrapping ErrInvalidID that does not
// contain the text (a caller may have pasted a token by mistake).
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 2*len(id) {
		return ID{}, errIDLength
	}
	// Table lookups rather than range tests: random ids make range tests
	// mispredict, which made this 5–10 times slower (a follower parses a
	// million ids when it loads a snapshot). A character that is not a
	// lower-case hex digit reads as 0xff and is caught once, at the end.
	var bad byte
	for i := range id {
		hi, lo := lowerHex[s[2*i]], lowerHex[s[2*i+1]]
		bad |= hi | lo
		id[i] = hi<<4 | lo
	}
	if bad > 0xf {
		return ID{}, errIDChars
	}
	return id, nil
}

// String returns the lower-case hex form of the ID.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether the ID is all zeros, which no valid token carries.
func (id ID) IsZero() bool { return id == ID{} }

// lowerHex maps each lower-case hex digit to its value and every other
// byte to 0xff.
var lowerHex = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for c := byte('0'); c <= '9'; c++ {
		t[c] = c - '0'
	}
	for c := byte('a'); c <= 'f'; c++ {
		t[c] = c - 'a' + 10
	}
	return t
}()
