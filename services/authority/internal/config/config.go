// Package config parses and validates the authority's command line and environment.
package config

import (
	"flag"
	"io"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/sigil-auth/sigil/pkg/flagcheck"
	"github.com/sigil-auth/sigil/pkg/flagenv"
	"github.com/sigil-auth/sigil/pkg/grpcserver"
	"github.com/sigil-auth/sigil/pkg/logging"
	"github.com/sigil-auth/sigil/pkg/token"
	"github.com/sigil-auth/sigil/services/authority/internal/server"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// EnvPrefix is the prefix of the environment variables that set flags.
const EnvPrefix = "SIGIL_AUTHORITY"

// CheckpointInterval is how often the revocation stream sends a checkpoint
// (the server owns the value). The key activation delay must exceed it, so
// that every connected authorizer has received a new key before it signs
// anything.
const CheckpointInterval = server.DefaultCheckpointInterval

// Config is the authority's whole configuration.
type Config struct {
	Listen             string        // gRPC address
	MetricsListen      string        // Prometheus /metrics address; empty disables
	DataDir            string        // holds the bbolt file and, by default, the credential files
	OperatorTokenFile  string        // operator credential file
	WatchTokenFile     string        // watch (stream) credential file
	ReporterTokenFile  string        // reporter credential file (ReportLeakedTokens only)
	KEKFile            string        // key-encryption key file, when SIGIL_AUTHORITY_KEK is not set
	MinTTL             time.Duration // shortest token lifetime
	MaxTTL             time.Duration // longest token lifetime
	TLSCert            string        // server certificate (PEM)
	TLSKey             string        // server private key (PEM)
	TLSClientCA        string        // client CA (PEM); set means mTLS required
	TokenPrefix        string        // prefix of minted tokens
	CatalogFile        string        // extra permission catalog; empty means built-in only
	KeyActivationDelay time.Duration // time between announcing a new signing key and signing with it
	ShutdownTimeout    time.Duration // bound of the graceful stop
	LogLevel           string        // debug, info, warn or error
	LockTimeout        time.Duration // how long to wait for the bbolt file lock
	Dev                bool          // development mode: anonymous WatchRevocations allowed
	Init               bool          // make a new store in an existing empty bbolt file
	Restored           bool          // accept a store whose revision is below the high-water mark, and move the mark
	SkipOpenCheck      bool          // skip the page and invariant check of the bbolt file at start-up
	MaxConnections     int           // open gRPC connections accepted at once
	MaxStreams         int           // concurrent calls per connection
	MaxWatchStreams    int           // open revocation streams per credential

	Store           string        // StoreBolt or StoreEtcd
	EtcdEndpoints   string        // comma-separated etcd client URLs (--store etcd)
	EtcdPrefix      string        // key prefix of the store in etcd
	EtcdCA          string        // CA verifying the etcd servers (PEM)
	EtcdCert        string        // client certificate for etcd (PEM)
	EtcdKey         string        // client private key for etcd (PEM)
	EtcdDialTimeout time.Duration // bound of connecting to etcd

	WriteProbeInterval time.Duration // how often a write is probed (0: never)
	WriteProbeTimeout  time.Duration // a probe slower than this makes health NOT_SERVING
	EtcdLeaderTTL      time.Duration // lease of the replica that runs the cluster-wide background work

	WebhookURL        string        // webhook endpoint (http or https); empty disables webhooks
	WebhookSecretFile string        // file holding the whsec_ signing secret
	ExpiryNotice      string        // lead times of expiry notices, comma-separated; empty disables them
	Retention         time.Duration // how long dead (revoked or expired) tokens are kept; 0 keeps them
	AuditRetention    time.Duration // how long audit records are kept; 0 keeps them
}

// DefaultRetention is --retention's default: 90 days.
const DefaultRetention = 2160 * time.Hour

// Store backends (--store).
const (
	StoreBolt = "bbolt"
	StoreEtcd = "etcd"
)

// EtcdEndpointList returns the etcd endpoints, trimmed, empty ones dropped.
func (c Config) EtcdEndpointList() []string { return SplitList(c.EtcdEndpoints) }

// SplitList splits a comma-separated list, trimming and dropping empty
// items.
func SplitList(s string) []string {
	var out []string
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

// ValidateEtcd checks the etcd connection flags shared by the authority
// and `authority migrate`: endpoints (http or https URLs with a host, no
// path, no user or password — it would be logged; all of one scheme),
// https when a TLS file is set, certificate and key together, a prefix
// ending with "/". missing is the problem recorded when no endpoint is
// given.
func ValidateEtcd(p *flagcheck.Problems, eps []string, prefix, ca, cert, key, missing string) {
	if len(eps) == 0 {
		p.Add("etcd-endpoints", "%s", missing)
	}
	https := 0
	for i, e := range eps {
		u, err := url.Parse(e)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			p.Add("etcd-endpoints", "endpoint %d must be an http:// or https:// URL with a host and no path", i+1)
			continue
		}
		if u.User != nil {
			// It would be printed in messages; etcd credentials are files.
			p.Add("etcd-endpoints", "endpoint %d must not carry a user or password (use --etcd-cert and --etcd-key)", i+1)
			continue
		}
		if u.Scheme == "https" {
			https++
		}
	}
	if https != 0 && https != len(eps) {
		p.Add("etcd-endpoints", "must be all https or all http")
	}
	if (ca != "" || cert != "" || key != "") && https == 0 && len(eps) > 0 {
		p.Add("etcd-endpoints", "must be https:// when --etcd-ca, --etcd-cert or --etcd-key is set")
	}
	p.Pair("etcd-cert", cert, "etcd-key", key)
	if prefix == "" || !strings.HasSuffix(prefix, "/") {
		p.Add("etcd-prefix", "must be non-empty and end with /")
	}
}

// Parse reads the flags in args (without the program name) and, for flags
// not given, the SIGIL_AUTHORITY_* variables found by lookup. Usage and
// parse errors go to out. It does not validate: call Validate.
func Parse(args []string, lookup func(string) (string, bool), out io.Writer) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("sigil-authority", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:7001", "gRPC listen address (host:port; port 0 picks a free port)")
	fs.StringVar(&c.MetricsListen, "metrics-listen", "127.0.0.1:9101", "Prometheus /metrics listen address (empty disables)")
	fs.StringVar(&c.DataDir, "data-dir", "./data", "directory holding the bbolt file")
	fs.StringVar(&c.OperatorTokenFile, "operator-token-file", "", "operator credential file, created with mode 0600 if missing (default <data-dir>/operator.token)")
	fs.StringVar(&c.WatchTokenFile, "watch-token-file", "", "credential file authorizers use for the revocation stream, created if missing (default <data-dir>/watch.token)")
	fs.StringVar(&c.ReporterTokenFile, "reporter-token-file", "", "credential file secret scanners use to report leaked tokens (ReportLeakedTokens only), created with mode 0600 if missing (default <data-dir>/reporter.token)")
	fs.StringVar(&c.KEKFile, "kek-file", "", "key-encryption key file, created if missing; "+EnvPrefix+"_KEK (base64) takes precedence (default <data-dir>/kek)")
	fs.DurationVar(&c.MinTTL, "min-ttl", 168*time.Hour, "shortest token lifetime")
	fs.DurationVar(&c.MaxTTL, "max-ttl", 8760*time.Hour, "longest token lifetime")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "server certificate (PEM); with --tls-key enables TLS")
	fs.StringVar(&c.TLSKey, "tls-key", "", "server private key (PEM)")
	fs.StringVar(&c.TLSClientCA, "tls-client-ca", "", "client CA (PEM); when set, clients must present a certificate (mTLS)")
	fs.StringVar(&c.TokenPrefix, "token-prefix", token.DefaultPrefix, "prefix of minted tokens, for secret scanners")
	fs.StringVar(&c.CatalogFile, "catalog-file", "", "permission catalog file extending the built-in catalog")
	fs.DurationVar(&c.KeyActivationDelay, "key-activation-delay", 5*time.Second, "delay between announcing a new signing key and signing with it (must exceed the "+CheckpointInterval.String()+" checkpoint interval)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 10*time.Second, "bound of the graceful stop on SIGTERM")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.DurationVar(&c.LockTimeout, "lock-timeout", store.DefaultLockTimeout, "how long to wait for the database file lock held by another process")
	fs.BoolVar(&c.Dev, "dev", false, "development mode: allow anonymous WatchRevocations")
	fs.BoolVar(&c.Init, "init", false, "make a new store in an existing empty <data-dir>/sigil.db (new epoch and signing key: existing tokens are denied); a missing file is created without it")
	fs.BoolVar(&c.Restored, "restored", false, "accept a store whose revision is below the one last acknowledged (after a restore, docs/operations.md), and move the high-water mark to it")
	fs.BoolVar(&c.SkipOpenCheck, "skip-open-check", false, "skip checking every page and the store's invariants when opening the bbolt file (for very large files)")
	fs.IntVar(&c.MaxConnections, "max-connections", grpcserver.DefaultMaxConnections, "open gRPC connections accepted at once; beyond it a connection is closed at once")
	fs.IntVar(&c.MaxStreams, "max-streams-per-connection", grpcserver.DefaultMaxStreamsPerConnection, "concurrent calls per gRPC connection")
	fs.IntVar(&c.MaxWatchStreams, "max-watch-streams", server.DefaultMaxWatchStreams, "open WatchRevocations streams per credential (all authorizers share the watch credential)")
	fs.StringVar(&c.Store, "store", StoreBolt, "storage backend: bbolt (one file in --data-dir) or etcd (--etcd-endpoints)")
	fs.StringVar(&c.EtcdEndpoints, "etcd-endpoints", "", "comma-separated etcd client URLs (http:// or https://), with --store etcd")
	fs.StringVar(&c.EtcdPrefix, "etcd-prefix", store.DefaultEtcdPrefix, "prefix of every key of the store in etcd, ending with /")
	fs.StringVar(&c.EtcdCA, "etcd-ca", "", "CA file (PEM) verifying the etcd servers; with https endpoints")
	fs.StringVar(&c.EtcdCert, "etcd-cert", "", "client certificate (PEM) presented to etcd; with --etcd-key")
	fs.StringVar(&c.EtcdKey, "etcd-key", "", "client private key (PEM) for --etcd-cert")
	fs.DurationVar(&c.EtcdDialTimeout, "etcd-dial-timeout", store.DefaultEtcdDialTimeout, "bound of connecting to etcd at start-up")
	fs.DurationVar(&c.WriteProbeInterval, "write-probe-interval", 5*time.Second, "how often an empty write is committed to check the store takes writes (0 disables)")
	fs.DurationVar(&c.WriteProbeTimeout, "write-probe-timeout", 10*time.Second, "a write probe that has not committed after this long (a hung or frozen disk, etcd without quorum), or that fails, makes health NOT_SERVING until one commits")
	fs.DurationVar(&c.EtcdLeaderTTL, "etcd-leader-ttl", store.DefaultLeaderTTL, "lease of the replica leading the cluster-wide background work (compaction, key activation): another takes over this long after it dies (whole seconds, 1s to 1h)")
	fs.StringVar(&c.WebhookURL, "webhook-url", "", "endpoint (http:// or https://) receiving webhook events, signed as Standard Webhooks; empty disables webhooks")
	fs.StringVar(&c.WebhookSecretFile, "webhook-secret-file", "", "file holding the webhook signing secret (whsec_ then base64 of 24 to 64 bytes); required with --webhook-url")
	fs.StringVar(&c.ExpiryNotice, "expiry-notice", DefaultExpiryNotice, "lead times before a token's expiry at which a token.expiring notice is made (audit log and webhook), comma-separated; empty disables")
	fs.DurationVar(&c.Retention, "retention", DefaultRetention, "how long a revoked or expired token's record is kept before it is purged (its audit records stay); 0 keeps them forever")
	fs.DurationVar(&c.AuditRetention, "audit-retention", 0, "how long audit records are kept; 0 keeps them forever")
	if err := flagenv.Parse(fs, args, EnvPrefix, lookup); err != nil {
		return Config{}, err
	}
	c.fillDefaults()
	return c, nil
}

// fillDefaults derives the file paths that default to the data directory.
func (c *Config) fillDefaults() {
	if c.OperatorTokenFile == "" {
		c.OperatorTokenFile = filepath.Join(c.DataDir, "operator.token")
	}
	if c.WatchTokenFile == "" {
		c.WatchTokenFile = filepath.Join(c.DataDir, "watch.token")
	}
	if c.ReporterTokenFile == "" {
		c.ReporterTokenFile = filepath.Join(c.DataDir, "reporter.token")
	}
	if c.KEKFile == "" {
		c.KEKFile = filepath.Join(c.DataDir, "kek")
	}
}

// Validate checks the whole configuration and returns every problem found,
// each naming its flag.
func (c Config) Validate() error {
	var p flagcheck.Problems
	p.Check("listen", flagcheck.Addr(c.Listen))
	if c.MetricsListen != "" {
		p.Check("metrics-listen", flagcheck.Addr(c.MetricsListen))
	}
	if c.DataDir == "" {
		p.Add("data-dir", "must not be empty")
	}
	for name, v := range map[string]string{"operator-token-file": c.OperatorTokenFile, "watch-token-file": c.WatchTokenFile, "kek-file": c.KEKFile, "reporter-token-file": c.ReporterTokenFile} {
		if v == "" {
			p.Add(name, "must not be empty")
		}
	}
	if c.OperatorTokenFile != "" && c.OperatorTokenFile == c.WatchTokenFile {
		p.Add("watch-token-file", "must differ from --operator-token-file")
	}
	if c.ReporterTokenFile != "" && (c.ReporterTokenFile == c.OperatorTokenFile || c.ReporterTokenFile == c.WatchTokenFile) {
		p.Add("reporter-token-file", "must differ from --operator-token-file and --watch-token-file")
	}
	p.Positive("min-ttl", c.MinTTL)
	p.Positive("max-ttl", c.MaxTTL)
	if c.MinTTL > 0 && c.MaxTTL > 0 && c.MinTTL > c.MaxTTL {
		p.Add("min-ttl", "%s exceeds --max-ttl %s", c.MinTTL, c.MaxTTL)
	}
	p.ServerTLS(c.TLSCert, c.TLSKey, c.TLSClientCA)
	p.Check("token-prefix", flagcheck.TokenPrefix(c.TokenPrefix))
	if c.KeyActivationDelay <= CheckpointInterval {
		p.Add("key-activation-delay", "%s must exceed the %s checkpoint interval", c.KeyActivationDelay, CheckpointInterval)
	}
	p.Positive("shutdown-timeout", c.ShutdownTimeout)
	if c.WriteProbeInterval < 0 {
		p.Add("write-probe-interval", "must not be negative, got %s", c.WriteProbeInterval)
	}
	if c.WriteProbeInterval > 0 {
		p.Positive("write-probe-timeout", c.WriteProbeTimeout)
	}
	for _, b := range []struct {
		flag string
		v    int
	}{{"max-connections", c.MaxConnections}, {"max-streams-per-connection", c.MaxStreams}, {"max-watch-streams", c.MaxWatchStreams}} {
		if b.v < 1 || b.v > 1_000_000 {
			p.Add(b.flag, "must be between 1 and 1000000, got %d", b.v)
		}
	}
	p.Positive("lock-timeout", c.LockTimeout)
	if c.Store == StoreEtcd {
		for _, f := range []struct {
			flag string
			set  bool
		}{{"init", c.Init}, {"skip-open-check", c.SkipOpenCheck}} {
			if f.set {
				p.Add(f.flag, "is only used with --store bbolt")
			}
		}
	}
	c.validateStore(&p)
	c.validateWebhook(&p)
	for _, r := range []struct {
		flag string
		d    time.Duration
	}{{"retention", c.Retention}, {"audit-retention", c.AuditRetention}} {
		if r.d < 0 {
			p.Add(r.flag, "must not be negative (0 keeps forever), got %s", r.d)
		}
	}
	_, err := logging.ParseLevel(c.LogLevel)
	p.Check("log-level", err)
	return p.Err()
}

// validateStore checks --store and the etcd flags: etcd needs endpoints
// (http or https URLs with a host), a prefix ending with "/", certificate
// and key together, TLS files only with https endpoints; with bbolt an
// etcd flag is a mistake (the operator meant etcd, or left a stale
// setting), not something to ignore.
func (c Config) validateStore(p *flagcheck.Problems) {
	switch c.Store {
	case StoreBolt:
		for _, f := range []struct {
			flag string
			set  bool
		}{
			{"etcd-endpoints", c.EtcdEndpoints != ""},
			{"etcd-prefix", c.EtcdPrefix != store.DefaultEtcdPrefix},
			{"etcd-ca", c.EtcdCA != ""},
			{"etcd-cert", c.EtcdCert != ""},
			{"etcd-key", c.EtcdKey != ""},
			{"etcd-dial-timeout", c.EtcdDialTimeout != store.DefaultEtcdDialTimeout},
			{"etcd-leader-ttl", c.EtcdLeaderTTL != store.DefaultLeaderTTL},
		} {
			if f.set {
				p.Add(f.flag, "is only used with --store etcd")
			}
		}
		return
	case StoreEtcd:
	default:
		p.Add("store", "must be bbolt or etcd")
		return
	}
	ValidateEtcd(p, c.EtcdEndpointList(), c.EtcdPrefix, c.EtcdCA, c.EtcdCert, c.EtcdKey, "is required with --store etcd")
	p.Positive("etcd-dial-timeout", c.EtcdDialTimeout)
	if c.EtcdLeaderTTL < time.Second || c.EtcdLeaderTTL > time.Hour || c.EtcdLeaderTTL%time.Second != 0 {
		p.Add("etcd-leader-ttl", "must be whole seconds between 1s and 1h, got %s", c.EtcdLeaderTTL)
	}
}
