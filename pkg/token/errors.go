package token

import "fmt"

// Verify's failures, made once: a rejected token costs no allocation, and
// no message can contain any part of a token because none is formatted.
var (
	errTooLong       = fmt.Errorf("%w: longer than %d bytes", ErrMalformed, MaxLen)
	errTooShort      = fmt.Errorf("%w: too short", ErrMalformed)
	errPrefix        = fmt.Errorf("%w: wrong prefix", ErrMalformed)
	errChecksum      = fmt.Errorf("%w: bad checksum", ErrMalformed)
	errEncoding      = fmt.Errorf("%w: body is not canonical unpadded base64url", ErrMalformed)
	errVersion       = fmt.Errorf("%w: unknown format version", ErrMalformed)
	errClaimsDecode  = fmt.Errorf("%w: claims do not decode", ErrMalformed)
	errUnusableKey   = fmt.Errorf("%w: key set holds no usable Ed25519 public key for it", ErrUnknownKey)
	errUnknownFields = fmt.Errorf("%w: claims carry fields this version does not know", ErrMalformed)
	errNilClaims     = fmt.Errorf("%w: no claims", ErrMalformed)

	errIDLength = fmt.Errorf("%w: want 32 characters", ErrInvalidID)
	errIDChars  = fmt.Errorf("%w: want lower-case hexadecimal characters", ErrInvalidID)
)
