package config

import (
	"io"
	"strings"
	"testing"
	"time"
)

// TestRetentionFlags: --retention and --audit-retention parse from flags
// and environment, 0 keeps forever, and a negative value is refused naming
// its flag.
func TestRetentionFlags(t *testing.T) {
	c, err := Parse([]string{"--retention", "720h"}, lookupFrom(map[string]string{"SIGIL_AUTHORITY_AUDIT_RETENTION": "8760h"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Retention != 720*time.Hour || c.AuditRetention != 8760*time.Hour {
		t.Fatalf("retention %s, audit retention %s", c.Retention, c.AuditRetention)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.Retention, c.AuditRetention = 0, 0
	if err := c.Validate(); err != nil {
		t.Fatalf("zero (keep forever) refused: %v", err)
	}
	for _, flag := range []string{"retention", "audit-retention"} {
		c, err := Parse([]string{"--" + flag, "-1h"}, lookupFrom(nil), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--"+flag+": must not be negative") {
			t.Errorf("negative --%s: %v", flag, err)
		}
	}
}
