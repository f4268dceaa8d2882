package config

import (
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func lookupFrom(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := env[k]; return v, ok }
}

func TestParseDefaults(t *testing.T) {
	c, err := Parse(nil, lookupFrom(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Listen: "127.0.0.1:7001", MetricsListen: "127.0.0.1:9101", DataDir: "./data",
		OperatorTokenFile: filepath.Join("data", "operator.token"), WatchTokenFile: filepath.Join("data", "watch.token"),
		ReporterTokenFile: filepath.Join("data", "reporter.token"),
		KEKFile:           filepath.Join("data", "kek"), MinTTL: 168 * time.Hour, MaxTTL: 8760 * time.Hour,
		TokenPrefix: "sigil_pat_", KeyActivationDelay: 5 * time.Second, ShutdownTimeout: 10 * time.Second,
		LogLevel: "info", LockTimeout: 3 * time.Second,
		MaxConnections: 1024, MaxStreams: 100, MaxWatchStreams: 256,
		Store: "bbolt", EtcdPrefix: "/sigil/", EtcdDialTimeout: 5 * time.Second,
		WriteProbeInterval: 5 * time.Second, WriteProbeTimeout: 10 * time.Second,
		EtcdLeaderTTL: 10 * time.Second,
		ExpiryNotice:  "168h,24h",
		Retention:     2160 * time.Hour,
	}
	if c != want {
		t.Fatalf("defaults:\n got %+v\nwant %+v", c, want)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		check func(t *testing.T, c Config)
		err   string
	}{
		{
			name: "env sets flags",
			env:  map[string]string{"SIGIL_AUTHORITY_DATA_DIR": "/var/sigil", "SIGIL_AUTHORITY_MIN_TTL": "24h", "SIGIL_AUTHORITY_DEV": "true"},
			check: func(t *testing.T, c Config) {
				if c.DataDir != "/var/sigil" || c.MinTTL != 24*time.Hour || !c.Dev {
					t.Errorf("got %+v", c)
				}
				if c.OperatorTokenFile != "/var/sigil/operator.token" || c.KEKFile != "/var/sigil/kek" {
					t.Errorf("file defaults not under data dir: %+v", c)
				}
			},
		},
		{
			name: "command line wins over env",
			args: []string{"--listen", "127.0.0.1:0"},
			env:  map[string]string{"SIGIL_AUTHORITY_LISTEN": "127.0.0.1:9999"},
			check: func(t *testing.T, c Config) {
				if c.Listen != "127.0.0.1:0" {
					t.Errorf("listen = %q", c.Listen)
				}
			},
		},
		{
			name: "explicit files kept",
			args: []string{"--operator-token-file=/run/op", "--watch-token-file=/run/w", "--kek-file=/run/k"},
			check: func(t *testing.T, c Config) {
				if c.OperatorTokenFile != "/run/op" || c.WatchTokenFile != "/run/w" || c.KEKFile != "/run/k" {
					t.Errorf("got %+v", c)
				}
			},
		},
		{name: "bad env value names variable", env: map[string]string{"SIGIL_AUTHORITY_MAX_TTL": "forever"}, err: "SIGIL_AUTHORITY_MAX_TTL"},
		{name: "unknown flag", args: []string{"--nope"}, err: "nope"},
		{name: "stray argument", args: []string{"serve"}, err: "unexpected argument"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse(tc.args, lookupFrom(tc.env), io.Discard)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func TestValidate(t *testing.T) {
	base := func() Config {
		c, err := Parse(nil, lookupFrom(nil), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	tests := []struct {
		name   string
		mutate func(c *Config)
		err    string // empty: valid
	}{
		{name: "defaults valid", mutate: func(*Config) {}},
		{name: "port zero valid", mutate: func(c *Config) { c.Listen = "127.0.0.1:0"; c.MetricsListen = "127.0.0.1:0" }},
		{name: "metrics disabled valid", mutate: func(c *Config) { c.MetricsListen = "" }},
		{name: "min above max", mutate: func(c *Config) { c.MinTTL = 48 * time.Hour; c.MaxTTL = 24 * time.Hour }, err: "--min-ttl: 48h0m0s exceeds --max-ttl"},
		{name: "min zero", mutate: func(c *Config) { c.MinTTL = 0 }, err: "--min-ttl: must be positive"},
		{name: "max negative", mutate: func(c *Config) { c.MaxTTL = -time.Hour }, err: "--max-ttl: must be positive"},
		{name: "listen without port", mutate: func(c *Config) { c.Listen = "127.0.0.1" }, err: "--listen"},
		{name: "listen bad port", mutate: func(c *Config) { c.Listen = "127.0.0.1:http2x" }, err: "--listen"},
		{name: "metrics bad", mutate: func(c *Config) { c.MetricsListen = "nope" }, err: "--metrics-listen"},
		{name: "cert without key", mutate: func(c *Config) { c.TLSCert = "c.pem" }, err: "--tls-cert and --tls-key go together"},
		{name: "key without cert", mutate: func(c *Config) { c.TLSKey = "k.pem" }, err: "--tls-cert and --tls-key go together"},
		{name: "client ca without cert", mutate: func(c *Config) { c.TLSClientCA = "ca.pem" }, err: "--tls-client-ca"},
		{name: "tls pair valid", mutate: func(c *Config) { c.TLSCert, c.TLSKey, c.TLSClientCA = "c", "k", "ca" }},
		{name: "activation delay too short", mutate: func(c *Config) { c.KeyActivationDelay = time.Second }, err: "--key-activation-delay"},
		{name: "empty prefix", mutate: func(c *Config) { c.TokenPrefix = "" }, err: "--token-prefix"},
		{name: "prefix with symbol", mutate: func(c *Config) { c.TokenPrefix = "pat-" }, err: "--token-prefix"},
		{name: "prefix upper case", mutate: func(c *Config) { c.TokenPrefix = "PAT_" }, err: "--token-prefix"},
		{name: "custom prefix valid", mutate: func(c *Config) { c.TokenPrefix = "acme_pat_" }},
		{name: "bad log level", mutate: func(c *Config) { c.LogLevel = "loud" }, err: "--log-level"},
		{name: "zero shutdown timeout", mutate: func(c *Config) { c.ShutdownTimeout = 0 }, err: "--shutdown-timeout"},
		{name: "zero lock timeout", mutate: func(c *Config) { c.LockTimeout = 0 }, err: "--lock-timeout"},
		{name: "same credential files", mutate: func(c *Config) { c.WatchTokenFile = c.OperatorTokenFile }, err: "--watch-token-file"},
		{name: "reporter file is the operator's", mutate: func(c *Config) { c.ReporterTokenFile = c.OperatorTokenFile }, err: "--reporter-token-file"},
		{name: "reporter file is the watch one", mutate: func(c *Config) { c.ReporterTokenFile = c.WatchTokenFile }, err: "--reporter-token-file"},
		{name: "empty data dir", mutate: func(c *Config) { c.DataDir = "" }, err: "--data-dir"},
		{name: "unknown store", mutate: func(c *Config) { c.Store = "sqlite" }, err: "--store: must be bbolt or etcd"},
		{name: "etcd valid", mutate: func(c *Config) { c.Store, c.EtcdEndpoints = "etcd", "http://10.0.0.1:2379, http://10.0.0.2:2379" }},
		{name: "etcd tls valid", mutate: func(c *Config) {
			c.Store, c.EtcdEndpoints, c.EtcdCA, c.EtcdCert, c.EtcdKey = "etcd", "https://e1:2379,https://e2:2379", "ca", "c", "k"
		}},
		{name: "etcd without endpoints", mutate: func(c *Config) { c.Store = "etcd" }, err: "--etcd-endpoints: is required with --store etcd"},
		{name: "etcd only commas", mutate: func(c *Config) { c.Store, c.EtcdEndpoints = "etcd", " , ," }, err: "--etcd-endpoints: is required"},
		{name: "etcd endpoint without scheme", mutate: func(c *Config) { c.Store, c.EtcdEndpoints = "etcd", "10.0.0.1:2379" }, err: "--etcd-endpoints: endpoint 1 must be"},
		{name: "etcd endpoint with path", mutate: func(c *Config) { c.Store, c.EtcdEndpoints = "etcd", "http://e:2379,http://e:2379/v3" }, err: "--etcd-endpoints: endpoint 2 must be"},
		{name: "etcd endpoint with a password", mutate: func(c *Config) { c.Store, c.EtcdEndpoints = "etcd", "http://root:secret@e:2379" }, err: "--etcd-endpoints: endpoint 1 must not carry a user or password"},
		{name: "etcd mixed schemes", mutate: func(c *Config) { c.Store, c.EtcdEndpoints = "etcd", "http://e1:2379,https://e2:2379" }, err: "all https or all http"},
		{name: "etcd tls over http", mutate: func(c *Config) { c.Store, c.EtcdEndpoints, c.EtcdCA = "etcd", "http://e:2379", "ca" }, err: "must be https://"},
		{name: "etcd cert without key", mutate: func(c *Config) { c.Store, c.EtcdEndpoints, c.EtcdCert = "etcd", "https://e:2379", "c" }, err: "--etcd-cert and --etcd-key go together"},
		{name: "etcd prefix without slash", mutate: func(c *Config) { c.Store, c.EtcdEndpoints, c.EtcdPrefix = "etcd", "http://e:2379", "/sigil" }, err: "--etcd-prefix"},
		{name: "etcd dial timeout zero", mutate: func(c *Config) { c.Store, c.EtcdEndpoints, c.EtcdDialTimeout = "etcd", "http://e:2379", 0 }, err: "--etcd-dial-timeout"},
		{name: "etcd leader ttl zero", mutate: func(c *Config) { c.Store, c.EtcdEndpoints, c.EtcdLeaderTTL = "etcd", "http://e:2379", 0 }, err: "--etcd-leader-ttl"},
		{name: "etcd leader ttl fraction", mutate: func(c *Config) {
			c.Store, c.EtcdEndpoints, c.EtcdLeaderTTL = "etcd", "http://e:2379", 1500*time.Millisecond
		}, err: "--etcd-leader-ttl: must be whole seconds"},
		{name: "etcd leader ttl valid", mutate: func(c *Config) { c.Store, c.EtcdEndpoints, c.EtcdLeaderTTL = "etcd", "http://e:2379", 3*time.Second }},
		{name: "etcd leader ttl with bbolt", mutate: func(c *Config) { c.EtcdLeaderTTL = 3 * time.Second }, err: "--etcd-leader-ttl: is only used with --store etcd"},
		{name: "etcd flag with bbolt", mutate: func(c *Config) { c.EtcdEndpoints = "http://e:2379" }, err: "--etcd-endpoints: is only used with --store etcd"},
		{name: "etcd prefix with bbolt", mutate: func(c *Config) { c.EtcdPrefix = "/x/" }, err: "--etcd-prefix: is only used with --store etcd"},
		{
			name:   "every problem reported",
			mutate: func(c *Config) { c.MinTTL = 0; c.Listen = "x" },
			err:    "--listen",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.mutate(&c)
			err := c.Validate()
			if tc.err == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err = %v, want containing %q", err, tc.err)
			}
		})
	}
}
