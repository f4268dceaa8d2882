// Package config parses and validates the authorizer's command line and environment.
package config

import (
	"flag"
	"io"
	"time"

	"github.com/sigil-auth/sigil/pkg/flagcheck"
	"github.com/sigil-auth/sigil/pkg/flagenv"
	"github.com/sigil-auth/sigil/pkg/grpcserver"
	"github.com/sigil-auth/sigil/pkg/logging"
	"github.com/sigil-auth/sigil/pkg/token"
	"github.com/sigil-auth/sigil/services/authorizer/internal/check"
)

// EnvPrefix is the prefix of the environment variables that set flags.
const EnvPrefix = "SIGIL_AUTHORIZER"

// Config is the authorizer's whole configuration.
type Config struct {
	Listen             string        // gRPC address
	MetricsListen      string        // Prometheus /metrics address; empty disables
	Authority          string        // address(es) of the authority's gRPC server: host:port, a comma-separated list of replicas, or dns:///host:port (ParseAuthority)
	AuthorityTokenFile string        // watch credential presented on the revocation stream
	MaxStaleness       time.Duration // silence from the authority after which checks fail closed
	ClockLeeway        time.Duration // tolerance on token issue and expiry times
	MaxClockSkew       time.Duration // difference from the authority's clock beyond which checks fail closed; 0: ClockSkewBound
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
	HTTPListen         string        // HTTP forward-auth address (needs Routes); empty disables
	MaxConnections     int           // open gRPC connections accepted at once
	MaxStreams         int           // concurrent calls per connection
	MaxParkedWaits     int           // min_revision waits parked at once
	UsageInterval      time.Duration // how often token use is reported to the authority; 0 disables
}

// AuthorityExpiryMargin is how long after a token's expiry, by its own
// clock, the authority keeps the token's revocation in its snapshots
// (manage.ExpiryMargin on the authority's side).
const AuthorityExpiryMargin = 10 * time.Minute

// MaxSkewPlusLeeway bounds --max-clock-skew plus --clock-leeway. An
// authorizer accepts a token until its expiry plus the leeway by its own
// clock, that is until expiry + leeway + skew by the authority's: that must
// stay below AuthorityExpiryMargin, or a snapshot could come without the
// revocation of a token the authorizer still takes for valid. A minute is
// kept for the skew measured late (checkpoints carry it every second).
const MaxSkewPlusLeeway = AuthorityExpiryMargin - time.Minute

// minClockSkew is the least skew bound when --max-clock-skew is derived
// from a very small --clock-leeway: clocks synchronised by NTP differ by
// milliseconds, and a checkpoint's time is a little old when it arrives.
const minClockSkew = time.Second

// ClockSkewBound is the effective --max-clock-skew: the flag, or when it
// is 0 the clock leeway (at least a second).
func (c Config) ClockSkewBound() time.Duration {
	if c.MaxClockSkew > 0 {
		return c.MaxClockSkew
	}
	return max(c.ClockLeeway, minClockSkew)
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
	fs.StringVar(&c.Authority, "authority", "127.0.0.1:7001", "address of the authority (host:port); several replicas of one authority as host:port,host:port,... (a broken stream resumes on the next at once), or dns:///host:port for every address a name resolves to")
	fs.StringVar(&c.AuthorityTokenFile, "authority-token-file", "", "file holding the watch credential for the authority's revocation stream (empty: anonymous, accepted only by a --dev authority)")
	fs.DurationVar(&c.MaxStaleness, "max-staleness", 30*time.Second, "answer UNAVAILABLE unless the authority confirmed, within this long, that the authorizer holds its history (a probe round trip, every second or less)")
	fs.DurationVar(&c.ClockLeeway, "clock-leeway", 30*time.Second, "tolerance on token issue and expiry times")
	fs.DurationVar(&c.MaxClockSkew, "max-clock-skew", 0, "answer UNAVAILABLE while the local clock differs from the authority's (as its checkpoints carry it) by more than this (0: equal to --clock-leeway, at least 1s)")
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
	fs.StringVar(&c.HTTPListen, "http-listen", "", "HTTP forward-auth listen address (host:port) serving /v1/authz for nginx auth_request, Traefik ForwardAuth and Caddy forward_auth; needs --routes (empty disables)")
	fs.IntVar(&c.MaxConnections, "max-connections", grpcserver.DefaultMaxConnections, "open gRPC connections accepted at once; beyond it a connection is closed at once")
	fs.IntVar(&c.MaxStreams, "max-streams-per-connection", grpcserver.DefaultMaxStreamsPerConnection, "concurrent calls per gRPC connection")
	fs.IntVar(&c.MaxParkedWaits, "max-parked-waits", check.DefaultMaxParkedWaits, "min_revision waits parked at once; beyond it a call needing a wait is RESOURCE_EXHAUSTED at once")
	fs.DurationVar(&c.UsageInterval, "usage-interval", time.Minute, "how often the last use of tokens (allowed checks, per token and minute) is reported to the authority with the watch credential; 0 disables")
	if err := flagenv.Parse(fs, args, EnvPrefix, lookup); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Validate checks the whole configuration and returns every problem found,
// each naming its flag.
func (c Config) Validate() error {
	var p flagcheck.Problems
	p.Check("listen", flagcheck.Addr(c.Listen))
	if c.MetricsListen != "" {
		p.Check("metrics-listen", flagcheck.Addr(c.MetricsListen))
	}
	_, err := ParseAuthority(c.Authority)
	p.Check("authority", err)
	p.Positive("max-staleness", c.MaxStaleness)
	if c.ClockLeeway < 0 || c.ClockLeeway > 5*time.Minute {
		p.Add("clock-leeway", "must be between 0 and 5m, got %s", c.ClockLeeway)
	}
	if c.MaxClockSkew < 0 || c.MaxClockSkew > 5*time.Minute {
		p.Add("max-clock-skew", "must be between 0 and 5m, got %s", c.MaxClockSkew)
	} else if c.ClockSkewBound()+c.ClockLeeway > MaxSkewPlusLeeway {
		p.Add("max-clock-skew", "with --clock-leeway must not exceed %s (the authority keeps a revocation %s past expiry), got %s", MaxSkewPlusLeeway, AuthorityExpiryMargin, c.ClockSkewBound()+c.ClockLeeway)
	}
	p.Positive("max-wait", c.MaxWait)
	p.ServerTLS(c.TLSCert, c.TLSKey, c.TLSClientCA)
	p.Pair("authority-cert", c.AuthorityCert, "authority-key", c.AuthorityKey)
	if c.AuthorityCert != "" && c.AuthorityCA == "" {
		p.Add("authority-cert", "needs --authority-ca")
	}
	p.Check("token-prefix", flagcheck.TokenPrefix(c.TokenPrefix))
	if c.CacheSize < 1 || c.CacheSize > 10_000_000 {
		p.Add("cache-size", "must be between 1 and 10000000, got %d", c.CacheSize)
	}
	p.Positive("shutdown-timeout", c.ShutdownTimeout)
	for _, b := range []struct {
		flag string
		v    int
	}{{"max-connections", c.MaxConnections}, {"max-streams-per-connection", c.MaxStreams}, {"max-parked-waits", c.MaxParkedWaits}} {
		if b.v < 1 || b.v > 1_000_000 {
			p.Add(b.flag, "must be between 1 and 1000000, got %d", b.v)
		}
	}
	if c.HTTPListen != "" {
		p.Check("http-listen", flagcheck.Addr(c.HTTPListen))
		if c.Routes == "" {
			p.Add("http-listen", "needs --routes")
		}
	}
	if c.UsageInterval != 0 && (c.UsageInterval < time.Second || c.UsageInterval > time.Hour) {
		p.Add("usage-interval", "must be 0 (disabled) or between 1s and 1h, got %s", c.UsageInterval)
	}
	_, err = logging.ParseLevel(c.LogLevel)
	p.Check("log-level", err)
	return p.Err()
}
