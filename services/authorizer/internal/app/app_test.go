package app

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/sigil-auth/sigil/internal/testproc"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/pkg/token"
	"github.com/sigil-auth/sigil/services/authorizer/internal/authoritytest"
	"github.com/sigil-auth/sigil/services/authorizer/internal/config"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// listening returns the addresses of the "listening" log line.
func listening(t *testing.T, logs *testproc.Buffer) (addr, metrics string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		sc := bufio.NewScanner(strings.NewReader(logs.String()))
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == "listening" {
				return m["addr"].(string), m["metrics_addr"].(string)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no listening line in logs:\n%s", logs.String())
	return "", ""
}

func TestRunServesFailsClosedAndDrains(t *testing.T) {
	fake, authorityAddr := authoritytest.StartTCP(t)
	dir := t.TempDir()
	const watchSecret = "watch-secret-value"
	tokenFile := filepath.Join(dir, "watch.token")
	if err := os.WriteFile(tokenFile, []byte(watchSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]string{
		"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--authority", authorityAddr,
		"--authority-token-file", tokenFile, "--max-staleness", "1s", "--shutdown-timeout", "2s", "--log-level", "debug",
	}, func(string) (string, bool) { return "", false }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	logs := &testproc.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, Options{LogOut: logs}) }()

	addr, metricsAddr := listening(t, logs)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	client := sigilv1.NewAuthorizerServiceClient(conn)
	waitHealth := func(want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			resp, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: sigilv1.AuthorizerService_ServiceDesc.ServiceName})
			if err == nil && resp.GetStatus() == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("health never became %v (last %v, %v)", want, resp.GetStatus(), err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	s := fake.Next(t)
	if s.Auth != "Bearer "+watchSecret {
		t.Fatalf("stream authorization = %q", s.Auth)
	}
	waitHealth(healthpb.HealthCheckResponse_NOT_SERVING)

	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	codec, _ := token.NewCodec("")
	id, _ := token.NewID()
	tok, err := codec.Mint(token.Claims{ID: id, OrgID: "org-a", KeyID: "k1", IssuedAt: time.Now().Add(-time.Minute), ExpiresAt: time.Now().Add(time.Hour),
		Grants: []scope.Grant{{Permissions: []string{"domain:view"}}}}, priv)
	if err != nil {
		t.Fatal(err)
	}
	s.Send(t, authoritytest.Chunk("e1", 5, []*sigilv1.SigningKey{authoritytest.Key("k1", sigilv1.SigningKeyState_SIGNING_KEY_STATE_ACTIVE, pub)}), authoritytest.SnapshotEnd("e1", 5))
	// Ready only once a checkpoint has told the authority's clock
	// (--max-clock-skew).
	s.Send(t, authoritytest.Checkpoint(5, time.Now()))
	waitHealth(healthpb.HealthCheckResponse_SERVING)
	resp, err := client.CheckPermission(context.Background(), &sigilv1.CheckPermissionRequest{Token: tok, Permission: "domain:view"})
	if err != nil || !resp.GetAllowed() {
		t.Fatalf("check: %v, %v", resp, err)
	}

	// The authority stops confirming the history: NOT_SERVING after
	// --max-staleness (a stream's checkpoints do not help: they may come
	// arbitrarily late), then back once it answers again.
	fake.SetConfirm(func(*sigilv1.ConfirmHistoryRequest) (*sigilv1.ConfirmHistoryResponse, error) {
		return nil, status.Error(codes.Unavailable, "down")
	})
	s.Send(t, authoritytest.Checkpoint(6, time.Now()))
	waitHealth(healthpb.HealthCheckResponse_NOT_SERVING)
	if _, err := client.CheckPermission(context.Background(), &sigilv1.CheckPermissionRequest{Token: tok, Permission: "domain:view"}); err == nil {
		t.Fatal("a stale authorizer answered")
	}
	fake.SetConfirm(nil)
	waitHealth(healthpb.HealthCheckResponse_SERVING)

	res, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, m := range []string{
		`sigil_authorizer_decisions_total{reason="allowed"} 1`, "sigil_authorizer_check_duration_seconds_bucket",
		"sigil_authorizer_applied_revision 6", "sigil_authorizer_staleness_seconds", "sigil_authorizer_stream_reconnects_total",
		"sigil_authorizer_cache_hits_total", "sigil_authorizer_cache_misses_total 1", "grpc_server_handled_total",
	} {
		if !strings.Contains(string(body), m) {
			t.Errorf("metrics lack %q", m)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not stop")
	}
	out := logs.String()
	for _, secret := range []string{tok, watchSecret} {
		if strings.Contains(out, secret) || strings.Contains(string(body), secret) {
			t.Fatal("a secret reached the logs or the metrics")
		}
	}
	for _, msg := range []string{`"msg":"health changed"`, `"msg":"stopped"`} {
		if !strings.Contains(out, msg) {
			t.Errorf("logs lack %s", msg)
		}
	}
}

func TestRunRejectsBadConfigBeforeListening(t *testing.T) {
	cfg, _ := config.Parse([]string{"--listen", "127.0.0.1:0", "--max-staleness", "0s"}, func(string) (string, bool) { return "", false }, io.Discard)
	err := run(context.Background(), cfg, Options{LogOut: io.Discard})
	if err == nil || !strings.Contains(err.Error(), "--max-staleness") {
		t.Fatalf("run = %v", err)
	}
	cfg, _ = config.Parse([]string{"--listen", "127.0.0.1:0", "--metrics-listen", "", "--authority-token-file", "/nonexistent/watch.token"}, func(string) (string, bool) { return "", false }, io.Discard)
	err = run(context.Background(), cfg, Options{LogOut: io.Discard})
	if err == nil || !strings.Contains(err.Error(), "authority-token-file") {
		t.Fatalf("run with a missing credential file = %v", err)
	}
	cfg, _ = config.Parse([]string{"--listen", "127.0.0.1:0", "--metrics-listen", "", "--routes", "/nonexistent/routes.yaml"}, func(string) (string, bool) { return "", false }, io.Discard)
	err = run(context.Background(), cfg, Options{LogOut: io.Discard})
	if err == nil || !strings.Contains(err.Error(), "--routes") || !strings.Contains(err.Error(), "/nonexistent/routes.yaml") {
		t.Fatalf("run with a missing routes file = %v", err)
	}
}

func TestCredentialFileKeepsLastGoodValue(t *testing.T) {
	path := filepath.Join(t.TempDir(), "watch.token")
	c := &credentialFile{path: path}
	if _, err := c.read(); err == nil || strings.Contains(err.Error(), "secret") {
		t.Fatalf("missing file: %v", err)
	}
	if err := os.WriteFile(path, []byte("  first-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if v, err := c.read(); err != nil || v != "first-secret" {
		t.Fatalf("read = %q, %v", v, err)
	}
	if err := os.WriteFile(path, []byte("second-secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if v, _ := c.read(); v != "second-secret" {
		t.Fatalf("rotated credential not picked up: %q", v)
	}
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if v, err := c.read(); err != nil || v != "second-secret" {
		t.Fatalf("empty file mid-rotation: %q, %v; want the last good value", v, err)
	}
}
