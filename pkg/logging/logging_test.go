package logging

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestParseLevel(t *testing.T) {
	tests := []struct {
		in      string
		want    slog.Level
		wantErr bool
	}{
		{"debug", slog.LevelDebug, false},
		{"", slog.LevelInfo, false},
		{"INFO", slog.LevelInfo, false},
		{"warning", slog.LevelWarn, false},
		{"warn", slog.LevelWarn, false},
		{"error", slog.LevelError, false},
		{"verbose", 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseLevel(tc.in)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("ParseLevel(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestNewWritesJSONWithServiceAndLevel(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf, slog.LevelWarn, "authority")
	l.Info("dropped")
	l.Warn("kept", "k", 1)
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("not one JSON line: %q: %v", buf.String(), err)
	}
	if line["msg"] != "kept" || line["service"] != "authority" || line["level"] != "WARN" {
		t.Fatalf("line = %v", line)
	}
}

// TestDurationsAsText: a duration reads "1.5s" in the log, not 1500000000.
func TestDurationsAsText(t *testing.T) {
	var buf bytes.Buffer
	New(&buf, slog.LevelInfo, "test").Info("x", "wait", 1500*time.Millisecond, slog.Group("g", "d", 2*time.Minute))
	for _, want := range []string{`"wait":"1.5s"`, `"d":"2m0s"`} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("log %s lacks %s", buf.String(), want)
		}
	}
}
