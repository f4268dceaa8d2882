// Package config parses and validates the authorizer's command line and environment.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/sigil-auth/sigil/pkg/flagenv"
	"github.com/sigil-auth/sigil/pkg/logging"
	"github.com/sigil-auth/sigil/pkg/token"
)

// EnvPrefix is the prefix of the environment variables that set flags.
const EnvPrefix = "SIGIL_AUTHORIZER"

// Config is the authorizer's whole configuration.
type Config struct {
	Listen             string        // gRPC address
	MetricsListen      string        // Prometheus /metrics address; empty disables
	Authority          string        // address of the authority's gRPC server
	AuthorityTokenFile string        // watch credential presented on the revocation stream
	MaxStaleness       time.Duration // silence from the authority after which checks fail closed
	ClockLeeway        time.Duration // tolerance on token issue and expiry times
	MaxWait            time.Duration // bound of a min_revision wait when the call has no deadline
	TLSCert            string        // server certificate (PEM)
	TLSKey             string        // server private key (PEM)
	TLSClientCA        string        // client CA (PEM); set means mTLS required
	AuthorityCA        string        // CA (PEM) the authority's certificate is checked against; set means TLS to the authority
	AuthorityCert      string        // client certificate (PEM) presented to the authority (mTLS)
	AuthorityKey       string        // client private key (PEM) presented to the authority
	TokenPrefix        string        // prefix of the deployment's tokens
	CacheSize          int           // number of verified tokens kept in the claims cache
	ShutdownTimeout    time.Duration // bound of the graceful stop
	LogLevel           string        // debug, info, warn or error
	Routes             string        // route policy file (YAML) enabling Envoy ext_authz; empty disables it
}

// Parse reads the flags in args (without the program name) and, for flags
// not given, the SIGIL_AUTHORIZER_* variables found by lookup. Usage and
// parse errors go to out. It does not validate: call Validate.
func Parse(args []string, lookup func(string) (string, bool), out io.Writer) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("sigil-authorizer", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:7002", "gRPC listen address (host:port; port 0 picks a free port)")
	fs.StringVar(&c.MetricsListen, "metrics-listen", "127.0.0.1:9102", "Prometheus /metrics listen address (empty disables)")
	fs.StringVar(&c.Authority, "authority", "127.0.0.1:7001", "address of the authority (host:port)")
	fs.StringVar(&c.AuthorityTokenFile, "authority-token-file", "", "file holding the watch credential for the authority's revocation stream (empty: anonymous, accepted only by a --dev authority)")
	fs.DurationVar(&c.MaxStaleness, "max-staleness", 30*time.Second, "answer UNAVAILABLE when nothing has come from the authority for this long")
	fs.DurationVar(&c.ClockLeeway, "clock-leeway", 30*time.Second, "tolerance on token issue and expiry times")
	fs.DurationVar(&c.MaxWait, "max-wait", 5*time.Second, "longest min_revision wait for a call without a deadline")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "server certificate (PEM); with --tls-key enables TLS")
	fs.StringVar(&c.TLSKey, "tls-key", "", "server private key (PEM)")
	fs.StringVar(&c.TLSClientCA, "tls-client-ca", "", "client CA (PEM); when set, clients must present a certificate (mTLS)")
	fs.StringVar(&c.AuthorityCA, "authority-ca", "", "CA (PEM) for the authority's certificate; when set, the authority is reached over TLS")
	fs.StringVar(&c.AuthorityCert, "authority-cert", "", "client certificate (PEM) presented to the authority (mTLS); needs --authority-ca")
	fs.StringVar(&c.AuthorityKey, "authority-key", "", "client private key (PEM) presented to the authority")
	fs.StringVar(&c.TokenPrefix, "token-prefix", token.DefaultPrefix, "prefix of the deployment's tokens")
	fs.IntVar(&c.CacheSize, "cache-size", 100000, "number of verified tokens kept in the claims cache")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 10*time.Second, "bound of the graceful stop on SIGTERM")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.Routes, "routes", "", "route policy file (YAML) mapping HTTP requests to permissions; when set, Envoy's ext_authz Check is served on the gRPC port")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("config: unexpected argument %q", fs.Arg(0))
	}
	if err := flagenv.Apply(fs, EnvPrefix, lookup); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return c, nil
}

// Validate checks the whole configuration and returns every problem found,
// each naming its flag.
func (c Config) Validate() error {
	var errs []error
	bad := func(flagName, format string, args ...any) {
		errs = append(errs, fmt.Errorf("--%s: %s", flagName, fmt.Sprintf(format, args...)))
	}
	if err := checkAddr(c.Listen); err != nil {
		bad("listen", "%v", err)
	}
	if c.MetricsListen != "" {
		if err := checkAddr(c.MetricsListen); err != nil {
			bad("metrics-listen", "%v", err)
		}
	}
	if err := checkAddr(c.Authority); err != nil {
		bad("authority", "%v", err)
	}
	if c.MaxStaleness <= 0 {
		bad("max-staleness", "must be positive, got %s", c.MaxStaleness)
	}
	if c.ClockLeeway < 0 || c.ClockLeeway > 5*time.Minute {
		bad("clock-leeway", "must be between 0 and 5m, got %s", c.ClockLeeway)
	}
	if c.MaxWait <= 0 {
		bad("max-wait", "must be positive, got %s", c.MaxWait)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		bad("tls-cert", "--tls-cert and --tls-key go together")
	}
	if c.TLSClientCA != "" && c.TLSCert == "" {
		bad("tls-client-ca", "needs --tls-cert and --tls-key")
	}
	if (c.AuthorityCert == "") != (c.AuthorityKey == "") {
		bad("authority-cert", "--authority-cert and --authority-key go together")
	}
	if c.AuthorityCert != "" && c.AuthorityCA == "" {
		bad("authority-cert", "needs --authority-ca")
	}
	if err := checkPrefix(c.TokenPrefix); err != nil {
		bad("token-prefix", "%v", err)
	}
	if c.CacheSize < 1 || c.CacheSize > 10_000_000 {
		bad("cache-size", "must be between 1 and 10000000, got %d", c.CacheSize)
	}
	if c.ShutdownTimeout <= 0 {
		bad("shutdown-timeout", "must be positive, got %s", c.ShutdownTimeout)
	}
	if _, err := logging.ParseLevel(c.LogLevel); err != nil {
		bad("log-level", "%v", err)
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("config: %w", errors.Join(errs...))
}

func checkAddr(addr string) error {
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

// checkPrefix defers to the token format's own rule, so the flag accepts
// exactly the prefixes a codec can be built with.
func checkPrefix(p string) error {
	if p == "" {
		return errors.New("must not be empty")
	}
	if _, err := token.NewCodec(p); err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "token: "))
	}
	return nil
}
