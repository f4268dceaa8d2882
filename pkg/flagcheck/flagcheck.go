// Package flagcheck validates the values of command-line flags for the
// services' configuration packages: it collects every problem, each naming
// its flag, and holds the checks both services make (listen and dial
// addresses, the token prefix, certificate and key pairing).
package flagcheck

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/sigil-auth/sigil/pkg/token"
)

// Problems collects configuration problems, each naming its flag. The zero
// value is ready to use.
type Problems struct {
	errs []error
}

// Add records a problem with flag ("listen", without dashes):
// "--listen: " followed by the formatted text.
func (p *Problems) Add(flag, format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf("--%s: %s", flag, fmt.Sprintf(format, args...)))
}

// Check records err, when not nil, as a problem with flag.
func (p *Problems) Check(flag string, err error) {
	if err != nil {
		p.Add(flag, "%v", err)
	}
}

// Positive records a problem with flag unless d is positive.
func (p *Problems) Positive(flag string, d time.Duration) {
	if d <= 0 {
		p.Add(flag, "must be positive, got %s", d)
	}
}

// Pair records a problem with certFlag unless the certificate and key files
// are both set or both empty: "--<certFlag> and --<keyFlag> go together".
func (p *Problems) Pair(certFlag, cert, keyFlag, key string) {
	if (cert == "") != (key == "") {
		p.Add(certFlag, "--%s and --%s go together", certFlag, keyFlag)
	}
}

// ServerTLS checks the server TLS flags --tls-cert, --tls-key and
// --tls-client-ca: the certificate and key go together, and a client CA
// (mTLS) needs them.
func (p *Problems) ServerTLS(cert, key, clientCA string) {
	p.Pair("tls-cert", cert, "tls-key", key)
	if clientCA != "" && cert == "" {
		p.Add("tls-client-ca", "needs --tls-cert and --tls-key")
	}
}

// Err returns nil when no problem was recorded, else every problem joined
// under "config: ".
func (p *Problems) Err() error {
	if len(p.errs) == 0 {
		return nil
	}
	return fmt.Errorf("config: %w", errors.Join(p.errs...))
}

// Addr checks a host:port address to listen on or dial. The host may be
// empty (every interface); the port must be a number or a service name
// (0 picks a free port).
func Addr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: %v", addr, err)
	}
	if port == "" {
		return fmt.Errorf("address %q: missing port", addr)
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Errorf("address %q: bad port", addr)
	}
	return nil
}

// TokenPrefix defers to the token format's own rule, so that the flag
// accepts exactly the prefixes a codec can be built with, and not the empty
// string (which the codec would silently replace by the default).
func TokenPrefix(prefix string) error {
	if prefix == "" {
		return errors.New("must not be empty")
	}
	if _, err := token.NewCodec(prefix); err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "token: "))
	}
	return nil
}
