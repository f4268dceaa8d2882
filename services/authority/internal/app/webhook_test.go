package app

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunRefusesBadWebhookSecret: a webhook secret file that is missing or
// malformed stops start-up before anything is opened, with an error naming
// the file and never its content; no database file is made.
func TestRunRefusesBadWebhookSecret(t *testing.T) {
	const bad = "whsec_not-base64-at-all!!"
	for _, tc := range []struct {
		name    string
		content string // "" : no file
		want    string
	}{
		{"missing", "", "no such file"},
		{"malformed", bad, "whsec_ followed by"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.WebhookURL = "http://127.0.0.1:9/hooks"
			cfg.WebhookSecretFile = filepath.Join(t.TempDir(), "webhook.secret")
			if tc.content != "" {
				if err := os.WriteFile(cfg.WebhookSecretFile, []byte(tc.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			err := RunWithOptions(context.Background(), cfg, Options{Stderr: io.Discard, LookupEnv: func(string) (string, bool) { return "", false }})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), cfg.WebhookSecretFile) {
				t.Fatalf("err = %v, want one naming %s and saying %q", err, cfg.WebhookSecretFile, tc.want)
			}
			if strings.Contains(err.Error(), "not-base64") {
				t.Fatalf("error holds the secret: %v", err)
			}
			if _, err := os.Stat(filepath.Join(cfg.DataDir, DBFile)); !os.IsNotExist(err) {
				t.Fatalf("database file made before the secret was read: %v", err)
			}
		})
	}
}
