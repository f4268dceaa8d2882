package config

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/sigil-auth/sigil/pkg/flagcheck"
)

// DefaultExpiryNotice is the default of --expiry-notice: a week and a day
// before expiry.
const DefaultExpiryNotice = "168h,24h"

// Bounds of --expiry-notice and --webhook-url.
const (
	MaxExpiryNotices     = 5
	maxExpiryNoticeInput = 200
	maxWebhookURL        = 2048
)

// ParseExpiryNotice parses --expiry-notice: comma-separated Go durations,
// each positive, all different, at most MaxExpiryNotices; returned
// longest first. The empty string is no notice at all.
func ParseExpiryNotice(s string) ([]time.Duration, error) {
	if s == "" {
		return nil, nil
	}
	if len(s) > maxExpiryNoticeInput {
		return nil, fmt.Errorf("longer than %d characters", maxExpiryNoticeInput)
	}
	parts := strings.Split(s, ",")
	if len(parts) > MaxExpiryNotices {
		return nil, fmt.Errorf("%d lead times, at most %d", len(parts), MaxExpiryNotices)
	}
	out := make([]time.Duration, 0, len(parts))
	for i, p := range parts {
		d, err := time.ParseDuration(p)
		if err != nil || p != strings.TrimSpace(p) {
			return nil, fmt.Errorf("lead time %d (%q) is not a duration such as 24h", i+1, p)
		}
		if d <= 0 {
			return nil, fmt.Errorf("lead time %d (%s) must be positive", i+1, p)
		}
		if slices.Contains(out, d) {
			return nil, fmt.Errorf("lead time %s is given twice", p)
		}
		out = append(out, d)
	}
	slices.Sort(out)
	slices.Reverse(out)
	return out, nil
}

// ExpiryNoticeLeads returns the parsed --expiry-notice (validated by
// Validate).
func (c Config) ExpiryNoticeLeads() []time.Duration {
	leads, _ := ParseExpiryNotice(c.ExpiryNotice)
	return leads
}

// checkWebhookURL checks --webhook-url: http or https, a host, no user
// information (the signature authenticates the sender; a password in the
// URL would end up in logs), no fragment.
func checkWebhookURL(s string) error {
	if len(s) > maxWebhookURL {
		return fmt.Errorf("longer than %d characters", maxWebhookURL)
	}
	u, err := url.Parse(s)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return errors.New("must be an http:// or https:// URL with a host")
	case u.User != nil:
		return errors.New("must not hold a user or password")
	case u.Fragment != "" || strings.Contains(s, "#"):
		return errors.New("must not have a fragment")
	}
	return nil
}

// validateWebhook checks the webhook flags: the URL and the secret file
// go together; the expiry notice lead times parse.
func (c Config) validateWebhook(p *flagcheck.Problems) {
	if c.WebhookURL != "" {
		p.Check("webhook-url", checkWebhookURL(c.WebhookURL))
	}
	if c.WebhookURL != "" && c.WebhookSecretFile == "" {
		p.Add("webhook-secret-file", "is required with --webhook-url")
	}
	if c.WebhookURL == "" && c.WebhookSecretFile != "" {
		p.Add("webhook-secret-file", "is only used with --webhook-url")
	}
	_, err := ParseExpiryNotice(c.ExpiryNotice)
	p.Check("expiry-notice", err)
}
