package app

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sigil-auth/sigil/internal/testproc"
	"github.com/sigil-auth/sigil/services/authority/internal/config"
	"github.com/sigil-auth/sigil/services/authority/internal/secrets"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testConfig(t *testing.T) config.Config {
	t.Helper()
	dir := t.TempDir()
	cfg, err := config.Parse([]string{"--data-dir", dir, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"}, func(string) (string, bool) { return "", false }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestRunRefusesBadInputBeforeListening(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(t *testing.T, c *config.Config)
		want   string
	}{
		{name: "invalid config", mutate: func(_ *testing.T, c *config.Config) { c.MinTTL = 0 }, want: "--min-ttl"},
		{name: "missing tls files", mutate: func(_ *testing.T, c *config.Config) { c.TLSCert, c.TLSKey = "/nonexistent/c", "/nonexistent/k" }, want: "tls"},
		{name: "missing catalog", mutate: func(_ *testing.T, c *config.Config) { c.CatalogFile = "/nonexistent/catalog" }, want: "catalog"},
		{name: "insecure operator file", mutate: func(t *testing.T, c *config.Config) {
			if err := os.WriteFile(c.OperatorTokenFile, []byte("sigil_op_0123456789abcdefghij"), 0o666); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(c.OperatorTokenFile, 0o666); err != nil {
				t.Fatal(err)
			}
		}, want: "writable by group or others"},
		{name: "reporter credential equals the operator's", mutate: func(t *testing.T, c *config.Config) {
			for _, f := range []string{c.OperatorTokenFile, c.ReporterTokenFile} {
				if err := os.WriteFile(f, []byte("sigil_op_0123456789abcdefghij\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
		}, want: "reporter credential"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			tc.mutate(t, &cfg)
			err := RunWithOptions(context.Background(), cfg, Options{Stderr: io.Discard, LookupEnv: func(string) (string, bool) { return "", false }})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want containing %q", err, tc.want)
			}
			if _, err := os.Stat(filepath.Join(cfg.DataDir, DBFile)); err == nil {
				t.Fatal("database created despite the error")
			}
		})
	}
}

func TestRunServesAndStops(t *testing.T) {
	cfg := testConfig(t)
	var logs testproc.Buffer
	ready := make(chan net.Addr, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- RunWithOptions(ctx, cfg, Options{Stderr: &logs, LookupEnv: func(string) (string, bool) { return "", false },
			Ready: func(g, _ net.Addr) { ready <- g }})
	}()
	var addr net.Addr
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("not ready")
	}
	conn, err := grpc.NewClient(addr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	h, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{Service: "sigil.v1.TokenAuthorityService"})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", h, err)
	}
	conn.Close()

	// A second instance on the same data directory fails with a clear error.
	second := cfg
	second.LockTimeout = 200 * time.Millisecond
	err = RunWithOptions(context.Background(), second, Options{Stderr: io.Discard, LookupEnv: func(string) (string, bool) { return "", false }})
	if err == nil || !strings.Contains(err.Error(), "in use by another process") {
		t.Fatalf("second instance: %v", err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(cfg.ShutdownTimeout + 5*time.Second):
		t.Fatal("did not stop")
	}
	out := logs.String()
	for _, want := range []string{`"msg":"listening"`, `"msg":"metrics listening"`, `"msg":"stopped"`, cfg.OperatorTokenFile} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s", want)
		}
	}
	if fi, err := os.Stat(cfg.ReporterTokenFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("reporter credential file: %v, %v; want created with mode 0600", fi, err)
	}
	op, _ := os.ReadFile(cfg.OperatorTokenFile)
	if strings.Contains(out, strings.TrimSpace(string(op))) {
		t.Fatal("log holds the operator token")
	}
}

func TestKEKFromEnvironment(t *testing.T) {
	cfg := testConfig(t)
	ctx, cancel := context.WithCancel(context.Background())
	env := func(k string) (string, bool) {
		if k == "SIGIL_AUTHORITY_KEK" {
			return "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", true
		}
		return "", false
	}
	done := make(chan error, 1)
	go func() {
		done <- RunWithOptions(ctx, cfg, Options{Stderr: io.Discard, LookupEnv: env, Ready: func(net.Addr, net.Addr) { cancel() }})
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cfg.KEKFile); err == nil {
		t.Fatal("kek file created although the environment holds the key")
	}
	// The sealed keys need the same KEK: without it start-up fails, and no
	// new (useless) KEK file is invented.
	noEnv := Options{Stderr: io.Discard, LookupEnv: func(string) (string, bool) { return "", false }}
	err := RunWithOptions(context.Background(), cfg, noEnv)
	if !errors.Is(err, secrets.ErrKEKMissing) || !strings.Contains(err.Error(), cfg.KEKFile) {
		t.Fatalf("missing kek: %v", err)
	}
	if _, err := os.Stat(cfg.KEKFile); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("kek file created for a store with sealed keys: %v", err)
	}
	// A different one refuses to start too.
	if err := os.WriteFile(cfg.KEKFile, []byte("AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err = RunWithOptions(context.Background(), cfg, noEnv)
	if err == nil || !strings.Contains(err.Error(), "cannot open sealed key") {
		t.Fatalf("wrong kek: %v", err)
	}
}
