package flagenv

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

func TestApply(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		env       map[string]string
		wantDir   string
		wantTTL   time.Duration
		wantError bool
	}{
		{name: "defaults", wantDir: "./data", wantTTL: time.Hour},
		{name: "env sets", env: map[string]string{"SIGIL_X_DATA_DIR": "/env", "SIGIL_X_MIN_TTL": "2h"}, wantDir: "/env", wantTTL: 2 * time.Hour},
		{name: "command line wins", args: []string{"--data-dir=/cli"}, env: map[string]string{"SIGIL_X_DATA_DIR": "/env"}, wantDir: "/cli", wantTTL: time.Hour},
		{name: "bad value named", env: map[string]string{"SIGIL_X_MIN_TTL": "soon"}, wantError: true},
		{name: "other prefix ignored", env: map[string]string{"SIGIL_Y_DATA_DIR": "/y"}, wantDir: "./data", wantTTL: time.Hour},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("x", flag.ContinueOnError)
			dir := fs.String("data-dir", "./data", "")
			ttl := fs.Duration("min-ttl", time.Hour, "")
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			err := Apply(fs, "SIGIL_X", func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok })
			if tc.wantError {
				if err == nil {
					t.Fatal("want error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *dir != tc.wantDir || *ttl != tc.wantTTL {
				t.Fatalf("got %q %v, want %q %v", *dir, *ttl, tc.wantDir, tc.wantTTL)
			}
		})
	}
}

func TestName(t *testing.T) {
	if got := Name("SIGIL_AUTHORITY", "tls-client-ca"); got != "SIGIL_AUTHORITY_TLS_CLIENT_CA" {
		t.Fatalf("got %q", got)
	}
}

func TestParse(t *testing.T) {
	lookup := func(k string) (string, bool) {
		v, ok := map[string]string{"SIGIL_X_DATA_DIR": "/env", "SIGIL_X_MIN_TTL": "soon"}[k]
		return v, ok
	}
	newFS := func() (*flag.FlagSet, *string) {
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		dir := fs.String("data-dir", "./data", "")
		fs.Duration("min-ttl", time.Hour, "")
		return fs, dir
	}
	fs, dir := newFS()
	if err := Parse(fs, []string{"--data-dir", "/cli", "--min-ttl", "2h"}, "SIGIL_X", lookup); err != nil || *dir != "/cli" {
		t.Fatalf("Parse = %v, data-dir %q; want nil, /cli", err, *dir)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"positional argument", []string{"--min-ttl", "2h", "serve"}, `config: unexpected argument "serve"`},
		{"bad environment value", nil, "config: SIGIL_X_MIN_TTL: invalid value"},
		{"unknown flag", []string{"--nope"}, "nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, _ := newFS()
			if err := Parse(fs, tc.args, "SIGIL_X", lookup); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse = %v, want %q", err, tc.want)
			}
		})
	}
	fs, _ = newFS()
	if err := Parse(fs, []string{"-h"}, "SIGIL_X", lookup); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("Parse -h = %v, want flag.ErrHelp", err)
	}
}
