package config

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/sigil-auth/sigil/pkg/flagcheck"
)

// DNSScheme is the prefix of an --authority that names every replica by
// one DNS name: dns:///host:port.
const DNSScheme = "dns:///"

// MaxAuthorityReplicas bounds the addresses of a comma-separated
// --authority: each is a connection and a stream candidate.
const MaxAuthorityReplicas = 16

// maxAuthorityLen bounds the whole --authority value.
const maxAuthorityLen = 4096

// Authority is --authority parsed: either Addrs (one address, or several
// replicas in the order they are tried) or DNS (a host:port whose name
// resolves to every replica), never both.
type Authority struct {
	Addrs []string
	DNS   string
}

// Targets returns the gRPC targets to dial, one client connection each: the
// addresses, or the single dns:/// target.
func (a Authority) Targets() []string {
	if a.DNS != "" {
		return []string{DNSScheme + a.DNS}
	}
	return a.Addrs
}

// ParseAuthority parses --authority: "host:port", "host:port,host:port,..."
// (replicas of one authority, at most MaxAuthorityReplicas, no empty
// element, no duplicate) or "dns:///host:port" (every address the name
// resolves to). Spaces around the elements are allowed.
func ParseAuthority(s string) (Authority, error) {
	if len(s) > maxAuthorityLen {
		return Authority{}, fmt.Errorf("longer than %d bytes", maxAuthorityLen)
	}
	s = strings.TrimSpace(s)
	if s == "" {
		return Authority{}, errors.New("must not be empty")
	}
	if rest, ok := strings.CutPrefix(s, DNSScheme); ok {
		if strings.Contains(rest, ",") {
			return Authority{}, errors.New("a dns:/// target names one host:port; list replicas as host:port,host:port instead")
		}
		if err := dnsHostPort(rest); err != nil {
			return Authority{}, err
		}
		return Authority{DNS: rest}, nil
	}
	if strings.Contains(s, "://") {
		return Authority{}, fmt.Errorf("%q: the only scheme accepted is dns:/// (dns:///host:port); otherwise give host:port addresses", safeValue(s))
	}
	parts := strings.Split(s, ",")
	if len(parts) > MaxAuthorityReplicas {
		return Authority{}, fmt.Errorf("%d addresses, at most %d", len(parts), MaxAuthorityReplicas)
	}
	seen := make(map[string]int, len(parts))
	addrs := make([]string, 0, len(parts))
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if p == "" {
			return Authority{}, fmt.Errorf("element %d of the comma-separated list is empty", i+1)
		}
		if err := flagcheck.Addr(p); err != nil {
			return Authority{}, fmt.Errorf("element %d: %w", i+1, err)
		}
		key := strings.ToLower(p)
		if j, dup := seen[key]; dup {
			return Authority{}, fmt.Errorf("element %d (%s) repeats element %d", i+1, safeValue(p), j+1)
		}
		seen[key] = i
		addrs = append(addrs, p)
	}
	return Authority{Addrs: addrs}, nil
}

// dnsHostPort checks the host:port of a dns:/// target: a name and an
// explicit port (gRPC's resolver would otherwise default to 443).
func dnsHostPort(hp string) error {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return fmt.Errorf("dns:/// target %q: want dns:///host:port: %v", safeValue(hp), err)
	}
	if host == "" {
		return fmt.Errorf("dns:/// target %q: missing host", safeValue(hp))
	}
	if port == "" {
		return fmt.Errorf("dns:/// target %q: missing port", safeValue(hp))
	}
	return flagcheck.Addr(hp)
}

// safeValue bounds a value echoed in an error.
func safeValue(s string) string {
	if len(s) > 128 {
		return s[:128] + "..."
	}
	return s
}
