package app

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sigil-auth/sigil/services/authority/internal/config"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// retentionInterval is how often the retention job runs.
const retentionInterval = time.Hour

// retentionJob purges what --retention and --audit-retention say is kept no
// longer (store.Retainer.ApplyRetention), at start and every interval.
type retentionJob struct {
	st       store.Retainer
	policy   store.Retention
	interval time.Duration
	now      func() time.Time
	logger   *slog.Logger
	purged   *prometheus.CounterVec
	onFault  func(error)
}

// retentionJobs is the retention job as cluster-wide work (leaderJob: with
// replicas, the leader runs it; it is idempotent if two ever do), or none
// when both retentions keep everything.
func retentionJobs(st store.Store, cfg config.Config, reg prometheus.Registerer, logger *slog.Logger, onFault func(error)) []leaderJob {
	j := newRetentionJob(st, cfg, reg, logger, onFault)
	if j == nil {
		return nil
	}
	return []leaderJob{{name: "retention", run: j.loop}}
}

// newRetentionJob makes the job, or returns nil when there is nothing to
// do (both retentions 0, or a store without retention).
func newRetentionJob(st store.Store, cfg config.Config, reg prometheus.Registerer, logger *slog.Logger, onFault func(error)) *retentionJob {
	r, ok := st.(store.Retainer)
	policy := store.Retention{Tokens: cfg.Retention, Audit: cfg.AuditRetention}
	if !ok || policy == (store.Retention{}) {
		return nil
	}
	purged := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sigil_retention_purged_total",
		Help: "Records removed by the retention job: kind tokens (dead tokens purged), audit (audit records deleted) or keys (signing keys retired).",
	}, []string{"kind"})
	reg.MustRegister(purged)
	return &retentionJob{st: r, policy: policy, interval: retentionInterval, now: time.Now, logger: logger, purged: purged, onFault: onFault}
}

// loop runs the job at once and then every interval until ctx ends.
func (j *retentionJob) loop(ctx context.Context) {
	t := time.NewTicker(j.interval)
	defer t.Stop()
	for {
		j.run(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// run applies the retention once. It reads every token record: damage
// found there is reported (as compaction's is), never a crash.
func (j *retentionJob) run(ctx context.Context) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			j.onFault(fmt.Errorf("retention: %v", p))
		}
	}()
	res, err := j.st.ApplyRetention(ctx, j.now(), j.policy)
	j.purged.WithLabelValues("tokens").Add(float64(res.Tokens))
	j.purged.WithLabelValues("audit").Add(float64(res.Audit))
	j.purged.WithLabelValues("keys").Add(float64(len(res.Keys)))
	if err != nil && ctx.Err() == nil {
		j.logger.Error("retention failed", "error", fmt.Sprint(err), "tokens_purged", res.Tokens, "audit_deleted", res.Audit)
		return
	}
	if res.Tokens > 0 || res.Audit > 0 || len(res.Keys) > 0 {
		j.logger.Info("retention applied", "tokens_purged", res.Tokens, "audit_deleted", res.Audit, "keys_retired", res.Keys)
	}
}
