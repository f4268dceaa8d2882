// Package secrets loads and creates the authority's own secrets: the operator
// and watch credentials and the key-encryption key that seals signing keys.
package secrets

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// Credential prefixes, so that a leaked credential is recognisable.
const (
	OperatorPrefix = "sigil_op_"
	WatchPrefix    = "sigil_watch_"
	// ReporterPrefix starts the reporter credential (ReportLeakedTokens).
	ReporterPrefix = "sigil_reporter_"
)

// KEKSize is the size of the key-encryption key: AES-256.
const KEKSize = 32

// minCredentialLen rejects credential files too short to be secrets.
const minCredentialLen = 16

// Errors returned by this package.
var (
	ErrInsecureFile = errors.New("secrets: file is writable by group or others")
	ErrBadKEK       = errors.New("secrets: key-encryption key must be 32 bytes, base64 encoded")
	ErrOpen         = errors.New("secrets: cannot open sealed key (wrong key-encryption key or corrupted data)")
	ErrShort        = errors.New("secrets: credential is too short")
	// ErrKEKMissing is returned by LoadKEK when the KEK file is missing
	// and creating one is not allowed (the store holds sealed keys).
	ErrKEKMissing = errors.New("KEK file missing")
)

// Credential is a bearer credential known only by its SHA-256 digest, so
// that comparing a presented value takes constant time and the value itself
// is not kept in memory longer than needed.
type Credential struct {
	digest [sha256.Size]byte
	set    bool
}

// NewCredential returns the credential whose value is v.
func NewCredential(v string) Credential {
	return Credential{digest: sha256.Sum256([]byte(v)), set: true}
}

// Matches reports, in constant time, whether presented is the credential.
// A zero Credential matches nothing.
func (c Credential) Matches(presented string) bool {
	d := sha256.Sum256([]byte(presented))
	return subtle.ConstantTimeCompare(d[:], c.digest[:]) == 1 && c.set
}

// Equal reports whether c and o are the same set credential (both zero
// Credentials are not equal: a zero one matches nothing).
func (c Credential) Equal(o Credential) bool {
	return c.set && o.set && subtle.ConstantTimeCompare(c.digest[:], o.digest[:]) == 1
}

// LoadOrCreateCredential reads the credential in path or, when the file does
// not exist, creates it with mode 0600 holding prefix and 32 random bytes
// (base64url). It refuses a file writable by group or others and warns about
// one readable by them. Only the path is logged, never the content.
func LoadOrCreateCredential(path, prefix string, logger *slog.Logger) (Credential, error) {
	data, err := readSecretFile(path, logger)
	if errors.Is(err, fs.ErrNotExist) {
		var b [32]byte
		if _, err := rand.Read(b[:]); err != nil {
			return Credential{}, fmt.Errorf("secrets: %w", err)
		}
		v := prefix + base64.RawURLEncoding.EncodeToString(b[:])
		if err := writeSecretFile(path, []byte(v+"\n")); err != nil {
			return Credential{}, err
		}
		logger.Info("created credential file", "path", path)
		return NewCredential(v), nil
	}
	if err != nil {
		return Credential{}, err
	}
	v := strings.TrimSpace(string(data))
	if len(v) < minCredentialLen {
		return Credential{}, fmt.Errorf("%w: %s", ErrShort, path)
	}
	logger.Info("loaded credential file", "path", path)
	return NewCredential(v), nil
}

// LoadOrCreateKEK returns the key-encryption key: from envValue (base64) when
// envSet, else from path (base64 text), created there with mode 0600 when
// missing, with a warning that production keeps it away from the data.
func LoadOrCreateKEK(envValue string, envSet bool, path string, logger *slog.Logger) ([]byte, error) {
	return LoadKEK(envValue, envSet, path, true, logger)
}

// LoadKEK is LoadOrCreateKEK that creates the file only when mayCreate: a
// store that already holds sealed keys needs the key they were sealed
// with, and a new one would only fail to open them (and stay behind as a
// useless file). Without mayCreate a missing file is ErrKEKMissing and
// nothing is written.
func LoadKEK(envValue string, envSet bool, path string, mayCreate bool, logger *slog.Logger) ([]byte, error) {
	if envSet {
		k, err := decodeKEK(envValue)
		if err != nil {
			return nil, fmt.Errorf("%w (from the environment)", err)
		}
		logger.Info("using key-encryption key from the environment")
		return k, nil
	}
	data, err := readSecretFile(path, logger)
	if errors.Is(err, fs.ErrNotExist) && !mayCreate {
		return nil, fmt.Errorf("%w: %s; the store holds keys sealed with a key-encryption key: restore the file or set SIGIL_AUTHORITY_KEK", ErrKEKMissing, path)
	}
	if errors.Is(err, fs.ErrNotExist) {
		k := make([]byte, KEKSize)
		if _, err := rand.Read(k); err != nil {
			return nil, fmt.Errorf("secrets: %w", err)
		}
		if err := writeSecretFile(path, []byte(base64.StdEncoding.EncodeToString(k)+"\n")); err != nil {
			return nil, err
		}
		logger.Warn("created key-encryption key file; production keeps the key away from the data directory (secret store, or the environment variable)", "path", path)
		return k, nil
	}
	if err != nil {
		return nil, err
	}
	k, err := decodeKEK(string(data))
	if err != nil {
		return nil, fmt.Errorf("%w: %s", err, path)
	}
	logger.Info("loaded key-encryption key file", "path", path)
	return k, nil
}

func decodeKEK(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if k, err := enc.DecodeString(s); err == nil && len(k) == KEKSize {
			return k, nil
		}
	}
	return nil, ErrBadKEK
}

func readSecretFile(path string, logger *slog.Logger) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("secrets: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("secrets: %s is not a regular file", path)
	}
	if st.Mode().Perm()&0o022 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o; chmod 600 it", ErrInsecureFile, path, st.Mode().Perm())
	}
	if st.Mode().Perm()&0o044 != 0 {
		logger.Warn("secret file is readable by group or others; chmod 600 it", "path", path, "mode", fmt.Sprintf("%04o", st.Mode().Perm()))
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	return data, nil
}

// writeSecretFile creates path exclusively with mode 0600 and syncs it, so a
// crash never leaves a half-written secret that a restart would trust.
func writeSecretFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("secrets: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("secrets: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("secrets: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	// Link fails if another process created the file meanwhile: never
	// overwrite an existing secret.
	if err := os.Link(tmp.Name(), path); err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// Sealer encrypts signing keys at rest with AES-256-GCM under the
// key-encryption key, binding each sealed key to its key id.
type Sealer struct {
	aead cipher.AEAD
}

// NewSealer returns a sealer for a 32-byte key-encryption key.
func NewSealer(kek []byte) (*Sealer, error) {
	if len(kek) != KEKSize {
		return nil, ErrBadKEK
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	return &Sealer{aead: aead}, nil
}

// Seal encrypts plaintext for keyID; the result is nonce ‖ ciphertext.
func (s *Sealer) Seal(keyID string, plaintext []byte) ([]byte, error) {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plaintext)+s.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	return s.aead.Seal(nonce, nonce, plaintext, []byte(keyID)), nil
}

// Open decrypts what Seal returned for the same keyID.
func (s *Sealer) Open(keyID string, sealed []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n+s.aead.Overhead() {
		return nil, ErrOpen
	}
	out, err := s.aead.Open(nil, sealed[:n], sealed[n:], []byte(keyID))
	if err != nil {
		return nil, ErrOpen
	}
	return out, nil
}
