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
	for i := range id {
		hi, ok1 := lowerHexValue(s[2*i])
		lo, ok2 := lowerHexValue(s[2*i+1])
		if !ok1 || !ok2 {
			return ID{}, errIDChars
		}
		id[i] = hi<<4 | lo
	}
	return id, nil
}

// String returns the lower-case hex form of the ID.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether the ID is all zeros, which no valid token carries.
func (id ID) IsZero() bool { return id == ID{} }

func lowerHexValue(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}
