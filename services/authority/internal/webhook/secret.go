// Package webhook delivers the authority's webhook events (Standard
// Webhooks: https://www.standardwebhooks.com) from the store's outbox, and
// runs the expiry notice job that puts token.expiring events there.
package webhook

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// SecretPrefix starts a Standard Webhooks signing secret.
const SecretPrefix = "whsec_"

// Bounds of a signing secret: the Standard Webhooks specification asks for
// 24 to 64 bytes of key.
const (
	MinSecretBytes = 24
	MaxSecretBytes = 64
	// maxSecretFile bounds the secret file read.
	maxSecretFile = 1024
)

// ErrBadSecret is returned for a secret that is not whsec_ followed by
// the standard base64 of 24 to 64 bytes. Its messages never hold the
// secret.
var ErrBadSecret = errors.New("webhook secret must be " + SecretPrefix + " followed by the base64 of 24 to 64 bytes")

// ParseSecret parses a signing secret, whsec_<base64>, strictly (standard
// base64 with padding, nothing around it) and returns the signer.
func ParseSecret(s string) (*standardwebhooks.Webhook, error) {
	key, err := parseKey(s)
	if err != nil {
		return nil, err
	}
	return standardwebhooks.NewWebhookRaw(key)
}

func parseKey(s string) ([]byte, error) {
	rest, ok := strings.CutPrefix(s, SecretPrefix)
	if !ok || len(rest) > base64.StdEncoding.EncodedLen(MaxSecretBytes) {
		return nil, ErrBadSecret
	}
	// The decoder skips line endings even in strict mode: refuse any byte
	// outside the alphabet first.
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '/' || c == '=') {
			return nil, ErrBadSecret
		}
	}
	key, err := base64.StdEncoding.Strict().DecodeString(rest)
	if err != nil || len(key) < MinSecretBytes || len(key) > MaxSecretBytes {
		return nil, ErrBadSecret
	}
	return key, nil
}

// LoadSecretFile reads the signing secret from path: a regular file, not
// writable by group or others, at most 1 KiB, holding the secret and at
// most one line ending. Errors name the file, never its content.
func LoadSecretFile(path string) (*standardwebhooks.Webhook, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("webhook secret file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("webhook secret file: %w", err)
	}
	switch {
	case !st.Mode().IsRegular():
		return nil, fmt.Errorf("webhook secret file %s is not a regular file", path)
	case st.Mode().Perm()&0o022 != 0:
		return nil, fmt.Errorf("webhook secret file %s has mode %04o, writable by group or others; chmod 600 it", path, st.Mode().Perm())
	}
	data, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return nil, fmt.Errorf("webhook secret file %s: %w", path, err)
	}
	if len(data) > maxSecretFile {
		return nil, fmt.Errorf("webhook secret file %s is larger than %d bytes", path, maxSecretFile)
	}
	s := strings.TrimSuffix(strings.TrimSuffix(string(data), "\n"), "\r")
	wh, err := ParseSecret(s)
	if err != nil {
		return nil, fmt.Errorf("webhook secret file %s: %w", path, err)
	}
	return wh, nil
}
