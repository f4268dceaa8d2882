package app

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sigil-auth/sigil/pkg/logging"
	"github.com/sigil-auth/sigil/services/authority/internal/config"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// TestRetentionJob: the job the app starts purges a token dead longer than
// --retention from a real bbolt file, counts it in
// sigil_retention_purged_total and logs it; with both retentions 0 there
// is no job.
func TestRetentionJob(t *testing.T) {
	path := filepath.Join(t.TempDir(), DBFile)
	st, err := store.Open(path, store.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := st.Close(); err != nil {
			t.Error(err)
		}
		if err := store.CheckFile(path, time.Second); err != nil {
			t.Error(err)
		}
	}()
	ctx := context.Background()
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, err := st.AddKey(ctx, store.Key{ID: "k", State: store.KeyActive, Public: bytes.Repeat([]byte{1}, 32), CreateTime: t0, ActivateTime: t0},
		store.AuditRecord{Time: t0, Actor: store.ActorSystem, Action: store.AuditKeyRotated}); err != nil {
		t.Fatal(err)
	}
	mk := func(name string, ttl time.Duration) string {
		id := name + "00000000000000000000000000000000"[len(name):]
		_, err := st.CreateToken(ctx, store.Token{ID: id, OrgID: "o", Name: name, CreatedBy: "u", KeyID: "k", CreateTime: t0, ExpireTime: t0.Add(ttl)},
			store.AuditRecord{Time: t0, Actor: "operator", Action: store.AuditTokenCreated})
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	dead, live := mk("dead", time.Hour), mk("live", 30*24*time.Hour)

	if newRetentionJob(st, config.Config{}, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)), nil) != nil {
		t.Fatal("a job with both retentions 0")
	}
	var logs bytes.Buffer
	j := newRetentionJob(st, config.Config{Retention: 24 * time.Hour}, prometheus.NewRegistry(), logging.New(&logs, slog.LevelInfo, "authority"), func(err error) { t.Errorf("fault: %v", err) })
	j.now = func() time.Time { return t0.Add(23 * time.Hour) }
	j.run(ctx)
	if got := testutil.ToFloat64(j.purged.WithLabelValues("tokens")); got != 0 {
		t.Fatalf("purged %v tokens before the retention", got)
	}
	j.now = func() time.Time { return t0.Add(26 * time.Hour) }
	j.run(ctx)
	if got := testutil.ToFloat64(j.purged.WithLabelValues("tokens")); got != 1 {
		t.Fatalf("sigil_retention_purged_total{kind=tokens} = %v, want 1", got)
	}
	if _, err := st.GetToken(ctx, dead); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("dead token: %v", err)
	}
	if _, err := st.GetToken(ctx, live); err != nil {
		t.Errorf("live token: %v", err)
	}
	if !bytes.Contains(logs.Bytes(), []byte(`"tokens_purged":1`)) {
		t.Errorf("no log of the purge: %s", logs.String())
	}
}
