package app

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sigil-auth/sigil/services/authority/internal/keys"
	"github.com/sigil-auth/sigil/services/authority/internal/server"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// leaderJob is cluster-wide background work: of the replicas sharing a
// store, only the leader runs it, from when it gains leadership until it
// loses it (its ctx ends then). Every job must stay correct if two replicas
// ever run it at once (a leader cut off from etcd runs on until it sees its
// lease lost): it works from what the store holds, and the store's guarded
// transactions make a repeated step change nothing.
type leaderJob struct {
	name string
	run  func(ctx context.Context)
}

// leaderJobs is the cluster-wide background work of the authority. New
// jobs (webhook delivery, retention) are added here.
func leaderJobs(srv *server.Server, km *keys.Manager, faults *faultReporter) []leaderJob {
	return []leaderJob{
		{name: "compaction", run: func(ctx context.Context) {
			// Compaction reads every page of the event log: damage found
			// there is reported (NOT_SERVING, one ERROR), never a crash. A
			// damaged page can point bbolt outside the file: a fault, which
			// only panic-on-fault makes recoverable.
			debug.SetPanicOnFault(true)
			defer func() {
				if p := recover(); p != nil {
					faults.report(fmt.Errorf("compaction: %v", p))
				}
			}()
			srv.RunCompaction(ctx, compactInterval)
		}},
		{name: "key-activation", run: km.RunSchedule},
	}
}

// leaderMetrics are the metrics of the leadership.
type leaderMetrics struct {
	leader prometheus.Gauge       // 1 while this replica leads
	starts *prometheus.CounterVec // job starts, by job
}

func newLeaderMetrics(reg prometheus.Registerer, jobs []leaderJob) *leaderMetrics {
	m := &leaderMetrics{
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sigil_authority_leader",
			Help: "1 while this authority leads the replicas sharing its store and runs the cluster-wide background work (compaction, key activation, webhook delivery, expiry notices, retention), 0 otherwise. Always 1 with bbolt.",
		}),
		starts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_authority_leader_job_starts_total",
			Help: "Starts of a cluster-wide background job on this authority (one per leadership term), by job.",
		}, []string{"job"}),
	}
	for _, j := range jobs {
		m.starts.WithLabelValues(j.name)
	}
	reg.MustRegister(m.leader, m.starts)
	return m
}

// leaderRunner campaigns for leadership and runs the jobs while it leads,
// until its ctx ends; then it resigns, so that another replica takes over
// at once rather than after the lease expires.
type leaderRunner struct {
	elector store.Elector
	jobs    []leaderJob
	logger  *slog.Logger
	metrics *leaderMetrics
	// retry is the pause after a failed campaign (etcd unreachable).
	retry time.Duration
}

// run campaigns and leads, term after term, until ctx ends.
func (r *leaderRunner) run(ctx context.Context) {
	for ctx.Err() == nil {
		term, err := r.elector.Campaign(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			r.logger.Warn("leader election failed; campaigning again", "error", err.Error(), "retry_in", r.retry.String())
			select {
			case <-ctx.Done():
			case <-time.After(r.retry):
			}
			continue
		}
		r.lead(ctx, term)
	}
}

// lead runs the jobs for one term, until the term is lost or ctx ends.
func (r *leaderRunner) lead(ctx context.Context, term store.Term) {
	names := make([]string, len(r.jobs))
	for i, j := range r.jobs {
		names[i] = j.name
	}
	r.metrics.leader.Set(1)
	r.logger.Info("leading: running the cluster-wide background work", "jobs", names)
	jctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, j := range r.jobs {
		wg.Add(1)
		r.metrics.starts.WithLabelValues(j.name).Inc()
		go func() {
			defer wg.Done()
			j.run(jctx)
		}()
	}
	lost := false
	select {
	case <-term.Done():
		lost = true
	case <-ctx.Done():
	}
	cancel()
	wg.Wait()
	r.metrics.leader.Set(0)
	rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer rcancel()
	err := term.Resign(rctx)
	switch {
	case lost:
		r.logger.Warn("leadership lost (lease expired or etcd unreachable): background work stopped; campaigning again")
	case err != nil:
		r.logger.Warn("leadership resigned; the election key could not be deleted, another replica leads once its lease expires", "error", err.Error())
	default:
		r.logger.Info("leadership resigned: background work stopped")
	}
}

// followKeys reloads the signing keys whenever another replica changes
// them (a store shared by replicas), until ctx ends. A reload that fails
// (etcd unreachable) is retried every second until one succeeds.
func followKeys(ctx context.Context, st store.Store, km *keys.Manager, logger *slog.Logger) {
	kw, ok := st.(store.KeyWatcher)
	if !ok {
		return
	}
	poke := make(chan struct{}, 1)
	watching := make(chan struct{})
	go func() {
		defer close(watching)
		kw.WatchKeys(ctx, func() {
			select {
			case poke <- struct{}{}:
			default:
			}
		})
	}()
	defer func() { <-watching }()
	for {
		select {
		case <-ctx.Done():
			return
		case <-poke:
		}
		for {
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := km.Reload(rctx)
			cancel()
			if err == nil || ctx.Err() != nil {
				break
			}
			logger.Error("reloading the signing keys another replica changed; retrying", "error", err.Error())
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}
}

// runBackground starts, under wg, the work that runs beside the server
// until ctx ends: the cluster-wide jobs, run while this replica leads, and
// the reload of signing keys other replicas change.
func runBackground(ctx context.Context, wg *sync.WaitGroup, st store.Store, srv *server.Server, km *keys.Manager,
	faults *faultReporter, reg prometheus.Registerer, logger *slog.Logger, ttl time.Duration, extra ...leaderJob,
) {
	jobs := append(leaderJobs(srv, km, faults), extra...)
	r := &leaderRunner{
		elector: store.NewElector(st, store.ElectorOptions{TTL: ttl}),
		jobs:    jobs, logger: logger, metrics: newLeaderMetrics(reg, jobs), retry: time.Second,
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		r.run(ctx)
	}()
	go func() {
		defer wg.Done()
		followKeys(ctx, st, km, logger)
	}()
}
