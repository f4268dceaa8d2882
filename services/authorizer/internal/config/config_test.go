package config

import (
	"io"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestParseDefaults(t *testing.T) {
	c, err := Parse(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Listen: "127.0.0.1:7002", MetricsListen: "127.0.0.1:9102", Authority: "127.0.0.1:7001",
		MaxStaleness: 30 * time.Second, ClockLeeway: 30 * time.Second, MaxWait: 5 * time.Second,
		TokenPrefix: "sigil_pat_", CacheSize: 100000, ShutdownTimeout: 10 * time.Second, LogLevel: "info",
		MaxConnections: 1024, MaxStreams: 100, MaxParkedWaits: 1000,
		UsageInterval: time.Minute,
	}
	if c != want {
		t.Fatalf("defaults = %+v\nwant %+v", c, want)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
}

func TestParseFlagsAndEnv(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		check func(Config) bool
	}{
		{"flag", []string{"--max-staleness", "2s"}, nil, func(c Config) bool { return c.MaxStaleness == 2*time.Second }},
		{"env", nil, map[string]string{"SIGIL_AUTHORIZER_AUTHORITY_TOKEN_FILE": "/run/watch.token"}, func(c Config) bool { return c.AuthorityTokenFile == "/run/watch.token" }},
		{"env with dash", nil, map[string]string{"SIGIL_AUTHORIZER_CLOCK_LEEWAY": "5s"}, func(c Config) bool { return c.ClockLeeway == 5*time.Second }},
		{"routes from env", nil, map[string]string{"SIGIL_AUTHORIZER_ROUTES": "/etc/sigil/routes.yaml"}, func(c Config) bool { return c.Routes == "/etc/sigil/routes.yaml" }},
		{"flag wins over env", []string{"--listen", "127.0.0.1:0"}, map[string]string{"SIGIL_AUTHORIZER_LISTEN": "127.0.0.1:1"}, func(c Config) bool { return c.Listen == "127.0.0.1:0" }},
		{"every TLS flag", []string{"--tls-cert", "c", "--tls-key", "k", "--tls-client-ca", "ca", "--authority-ca", "aca", "--authority-cert", "ac", "--authority-key", "ak"}, nil,
			func(c Config) bool {
				return c.TLSCert == "c" && c.TLSKey == "k" && c.TLSClientCA == "ca" && c.AuthorityCA == "aca" && c.AuthorityCert == "ac" && c.AuthorityKey == "ak"
			}},
		{"cache size", []string{"--cache-size", "10"}, nil, func(c Config) bool { return c.CacheSize == 10 }},
		{"usage interval from env", nil, map[string]string{"SIGIL_AUTHORIZER_USAGE_INTERVAL": "0s"}, func(c Config) bool { return c.UsageInterval == 0 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse(tc.args, env(tc.env), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(c) {
				t.Fatalf("config %+v", c)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"unknown flag", []string{"--nope"}, nil, "nope"},
		{"positional argument", []string{"extra"}, nil, "unexpected argument"},
		{"bad env value", nil, map[string]string{"SIGIL_AUTHORIZER_MAX_STALENESS": "soon"}, "SIGIL_AUTHORIZER_MAX_STALENESS"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.args, env(tc.env), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	base, err := Parse(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		change func(*Config)
		flag   string // "" means valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"port zero", func(c *Config) { c.Listen = "127.0.0.1:0"; c.MetricsListen = "127.0.0.1:0" }, ""},
		{"metrics disabled", func(c *Config) { c.MetricsListen = "" }, ""},
		{"no leeway", func(c *Config) { c.ClockLeeway = 0 }, ""},
		{"listen without port", func(c *Config) { c.Listen = "localhost" }, "--listen"},
		{"bad metrics address", func(c *Config) { c.MetricsListen = "x:y:z" }, "--metrics-listen"},
		{"bad authority", func(c *Config) { c.Authority = "" }, "--authority"},
		{"zero staleness", func(c *Config) { c.MaxStaleness = 0 }, "--max-staleness"},
		{"negative leeway", func(c *Config) { c.ClockLeeway = -time.Second }, "--clock-leeway"},
		{"huge leeway", func(c *Config) { c.ClockLeeway = time.Hour }, "--clock-leeway"},
		{"zero max wait", func(c *Config) { c.MaxWait = 0 }, "--max-wait"},
		{"cert without key", func(c *Config) { c.TLSCert = "c" }, "--tls-cert"},
		{"client CA without cert", func(c *Config) { c.TLSClientCA = "ca" }, "--tls-client-ca"},
		{"authority cert without key", func(c *Config) { c.AuthorityCert = "c"; c.AuthorityCA = "ca" }, "--authority-cert"},
		{"authority cert without CA", func(c *Config) { c.AuthorityCert = "c"; c.AuthorityKey = "k" }, "--authority-cert"},
		{"empty prefix", func(c *Config) { c.TokenPrefix = "" }, "--token-prefix"},
		{"prefix with a dash", func(c *Config) { c.TokenPrefix = "sigil-pat" }, "--token-prefix"},
		{"zero cache", func(c *Config) { c.CacheSize = 0 }, "--cache-size"},
		{"zero shutdown", func(c *Config) { c.ShutdownTimeout = 0 }, "--shutdown-timeout"},
		{"bad level", func(c *Config) { c.LogLevel = "loud" }, "--log-level"},
		{"usage reporting off", func(c *Config) { c.UsageInterval = 0 }, ""},
		{"usage interval 1s", func(c *Config) { c.UsageInterval = time.Second }, ""},
		{"usage interval too short", func(c *Config) { c.UsageInterval = time.Millisecond }, "--usage-interval"},
		{"usage interval negative", func(c *Config) { c.UsageInterval = -time.Minute }, "--usage-interval"},
		{"usage interval too long", func(c *Config) { c.UsageInterval = 2 * time.Hour }, "--usage-interval"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.change(&c)
			err := c.Validate()
			if tc.flag == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.flag) {
				t.Fatalf("err = %v, want it to name %s", err, tc.flag)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := Config{}
	err := c.Validate()
	if err == nil {
		t.Fatal("empty config validated")
	}
	for _, f := range []string{"--listen", "--authority", "--max-staleness", "--cache-size", "--shutdown-timeout", "--token-prefix"} {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("error does not name %s: %v", f, err)
		}
	}
}
