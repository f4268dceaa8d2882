package config

import (
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseExpiryNotice(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []time.Duration
		err  string
	}{
		{in: "168h,24h", want: []time.Duration{168 * time.Hour, 24 * time.Hour}},
		{in: "24h,168h", want: []time.Duration{168 * time.Hour, 24 * time.Hour}},
		{in: "90s", want: []time.Duration{90 * time.Second}},
		{in: "", want: nil},
		{in: "1h,2h,3h,4h,5h,6h", err: "at most 5"},
		{in: "24h,", err: "lead time 2"},
		{in: " 24h", err: "not a duration"},
		{in: "24", err: "not a duration"},
		{in: "0s", err: "must be positive"},
		{in: "-1h", err: "must be positive"},
		{in: "1h,60m", err: "given twice"},
		{in: strings.Repeat("1", 201), err: "longer than"},
	} {
		got, err := ParseExpiryNotice(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseExpiryNotice(%q) = %v, %v; want an error saying %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("ParseExpiryNotice(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func FuzzParseExpiryNotice(f *testing.F) {
	for _, s := range []string{"168h,24h", "", "0s", "1h,60m", "1h,,2h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		leads, err := ParseExpiryNotice(s)
		if err != nil {
			return
		}
		if len(leads) > MaxExpiryNotices {
			t.Fatalf("%d lead times", len(leads))
		}
		for i, d := range leads {
			if d <= 0 || (i > 0 && d >= leads[i-1]) {
				t.Fatalf("lead times %v not positive and strictly decreasing", leads)
			}
		}
	})
}

func TestValidateWebhookFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		err  string
	}{
		{name: "url and secret", args: []string{"--webhook-url", "https://hooks.example.com/sigil?x=1", "--webhook-secret-file", "/s"}},
		{name: "env", env: map[string]string{"SIGIL_AUTHORITY_WEBHOOK_URL": "http://127.0.0.1:9/h", "SIGIL_AUTHORITY_WEBHOOK_SECRET_FILE": "/s", "SIGIL_AUTHORITY_EXPIRY_NOTICE": "90s"}},
		{name: "no secret", args: []string{"--webhook-url", "https://h"}, err: "--webhook-secret-file: is required with --webhook-url"},
		{name: "secret without url", args: []string{"--webhook-secret-file", "/s"}, err: "--webhook-secret-file: is only used with --webhook-url"},
		{name: "ftp", args: []string{"--webhook-url", "ftp://h", "--webhook-secret-file", "/s"}, err: "--webhook-url: must be an http:// or https:// URL"},
		{name: "no host", args: []string{"--webhook-url", "https:///p", "--webhook-secret-file", "/s"}, err: "--webhook-url: must be an http:// or https:// URL"},
		{name: "password", args: []string{"--webhook-url", "https://u:p@h", "--webhook-secret-file", "/s"}, err: "--webhook-url: must not hold a user"},
		{name: "fragment", args: []string{"--webhook-url", "https://h/#x", "--webhook-secret-file", "/s"}, err: "--webhook-url: must not have a fragment"},
		{name: "bad notice", args: []string{"--expiry-notice", "soon"}, err: "--expiry-notice: lead time 1"},
		{name: "no notice", args: []string{"--expiry-notice", ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse(tc.args, lookupFrom(tc.env), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			err = c.Validate()
			if tc.err == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("Validate = %v, want %q", err, tc.err)
			}
		})
	}
}
