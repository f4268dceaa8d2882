package flagenv

import (
	"flag"
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
