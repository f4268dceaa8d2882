package secrets

import (
	"bytes"
	"encoding/base64"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func testLogger(buf *bytes.Buffer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func TestCredentialCreatedAndReloaded(t *testing.T) {
	var logs bytes.Buffer
	path := filepath.Join(t.TempDir(), "sub", "operator.token")
	c1, err := LoadOrCreateCredential(path, OperatorPrefix, testLogger(&logs))
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode = %04o, want 0600", st.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	v := strings.TrimSpace(string(data))
	if !strings.HasPrefix(v, OperatorPrefix) || len(v) < len(OperatorPrefix)+40 {
		t.Fatalf("credential %q lacks prefix or entropy", v)
	}
	if !c1.Matches(v) || c1.Matches(v+"x") || c1.Matches("") {
		t.Fatal("Matches wrong")
	}
	c2, err := LoadOrCreateCredential(path, OperatorPrefix, testLogger(&logs))
	if err != nil {
		t.Fatal(err)
	}
	if !c2.Matches(v) {
		t.Fatal("reloaded credential differs")
	}
	if strings.Contains(logs.String(), v) {
		t.Fatal("log contains the credential")
	}
	if !strings.Contains(logs.String(), path) {
		t.Fatal("log lacks the path")
	}
}

func TestZeroCredentialMatchesNothing(t *testing.T) {
	var c Credential
	if c.Matches("") || c.Matches("x") {
		t.Fatal("zero credential matched")
	}
}

func TestCredentialFileChecks(t *testing.T) {
	tests := []struct {
		name    string
		content string
		mode    os.FileMode
		wantErr error
		warn    bool
	}{
		{name: "ok", content: "sigil_op_0123456789abcdef\n", mode: 0o600},
		{name: "group writable refused", content: "sigil_op_0123456789abcdef", mode: 0o620, wantErr: ErrInsecureFile},
		{name: "world writable refused", content: "sigil_op_0123456789abcdef", mode: 0o602, wantErr: ErrInsecureFile},
		{name: "world readable warned", content: "sigil_op_0123456789abcdef", mode: 0o644, warn: true},
		{name: "too short", content: "short\n", mode: 0o600, wantErr: ErrShort},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			path := filepath.Join(t.TempDir(), "cred")
			if err := os.WriteFile(path, []byte(tc.content), tc.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatal(err)
			}
			c, err := LoadOrCreateCredential(path, OperatorPrefix, testLogger(&logs))
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !c.Matches(strings.TrimSpace(tc.content)) {
				t.Fatal("credential does not match file content")
			}
			if got := strings.Contains(logs.String(), "readable by group or others"); got != tc.warn {
				t.Fatalf("warned = %v, want %v", got, tc.warn)
			}
		})
	}
}

func TestKEK(t *testing.T) {
	key := bytes.Repeat([]byte{7}, KEKSize)
	enc := base64.StdEncoding.EncodeToString(key)
	tests := []struct {
		name    string
		env     string
		envSet  bool
		file    string // written before, "" means absent
		want    []byte // nil: any 32 bytes (created)
		wantErr bool
	}{
		{name: "env wins", env: enc, envSet: true, file: base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32)), want: key},
		{name: "env raw url", env: base64.RawURLEncoding.EncodeToString(key), envSet: true, want: key},
		{name: "env bad", env: "c2hvcnQ=", envSet: true, wantErr: true},
		{name: "file", file: enc + "\n", want: key},
		{name: "file bad", file: "not base64!", wantErr: true},
		{name: "created"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			path := filepath.Join(t.TempDir(), "kek")
			if tc.file != "" {
				if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, err := LoadOrCreateKEK(tc.env, tc.envSet, path, testLogger(&logs))
			if tc.wantErr {
				if !errors.Is(err, ErrBadKEK) {
					t.Fatalf("err = %v, want ErrBadKEK", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != KEKSize {
				t.Fatalf("len = %d", len(got))
			}
			if tc.want != nil && !bytes.Equal(got, tc.want) {
				t.Fatal("wrong key")
			}
			if tc.want == nil {
				st, err := os.Stat(path)
				if err != nil || st.Mode().Perm() != 0o600 {
					t.Fatalf("created file: %v %v", st, err)
				}
				if !strings.Contains(logs.String(), "production") {
					t.Fatal("no warning about production")
				}
				again, err := LoadOrCreateKEK("", false, path, testLogger(&logs))
				if err != nil || !bytes.Equal(again, got) {
					t.Fatalf("reload: %v", err)
				}
				if strings.Contains(logs.String(), base64.StdEncoding.EncodeToString(got)) {
					t.Fatal("log contains the key")
				}
			}
		})
	}
}

func TestSealer(t *testing.T) {
	s, err := NewSealer(bytes.Repeat([]byte{9}, KEKSize))
	if err != nil {
		t.Fatal(err)
	}
	plain := []byte("ed25519 private key bytes")
	sealed, err := s.Seal("key-1", plain)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, plain) {
		t.Fatal("sealed holds plaintext")
	}
	got, err := s.Open("key-1", sealed)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("open: %v", err)
	}
	other, _ := NewSealer(bytes.Repeat([]byte{8}, KEKSize))
	tampered := append([]byte(nil), sealed...)
	tampered[len(tampered)-1] ^= 1
	for name, fn := range map[string]func() ([]byte, error){
		"other key id": func() ([]byte, error) { return s.Open("key-2", sealed) },
		"other kek":    func() ([]byte, error) { return other.Open("key-1", sealed) },
		"tampered":     func() ([]byte, error) { return s.Open("key-1", tampered) },
		"short":        func() ([]byte, error) { return s.Open("key-1", sealed[:5]) },
	} {
		if _, err := fn(); !errors.Is(err, ErrOpen) {
			t.Errorf("%s: err = %v, want ErrOpen", name, err)
		}
	}
	if _, err := NewSealer(make([]byte, 16)); !errors.Is(err, ErrBadKEK) {
		t.Fatalf("short kek: %v", err)
	}
}
