package app

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// writeProbe commits an empty write every interval (store.ProbeWrite) and
// turns health NOT_SERVING while writes cannot commit: a probe still
// running after timeout (a hung or frozen disk, etcd without quorum) or
// failing (a read-only or full disk) stalls the authority; the next probe
// that commits brings it back. Management calls that write would hang or
// fail meanwhile; load balancers and operators see it at once instead of
// at the callers' deadlines. Authorizers do not depend on it: their
// stream goes on serving what is committed.
type writeProbe struct {
	probe    func(ctx context.Context) error
	interval time.Duration
	timeout  time.Duration
	logger   *slog.Logger
	stall    func(bool)

	duration prometheus.Histogram
	failures prometheus.Counter
	stalled  prometheus.Gauge
}

// newWriteProbe makes a probe and registers its metrics with reg.
func newWriteProbe(probe func(context.Context) error, interval, timeout time.Duration, logger *slog.Logger, stall func(bool), reg prometheus.Registerer) *writeProbe {
	p := &writeProbe{
		probe: probe, interval: interval, timeout: timeout, logger: logger, stall: stall,
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sigil_store_write_probe_duration_seconds",
			Help:    "Time to commit the write probe's empty transaction (the store's commit latency, fsync or etcd quorum included).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sigil_store_write_probe_failures_total",
			Help: "Write probes that failed or did not commit within --write-probe-timeout.",
		}),
		stalled: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sigil_store_writes_stalled",
			Help: "1 while the write probe finds that writes do not commit (health NOT_SERVING).",
		}),
	}
	if reg != nil {
		reg.MustRegister(p.duration, p.failures, p.stalled)
	}
	return p
}

// run probes until ctx ends.
func (p *writeProbe) run(ctx context.Context) {
	t := time.NewTimer(p.interval)
	defer t.Stop()
	var stalledSince time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		done := make(chan error, 1)
		go func() {
			pctx, cancel := context.WithTimeout(ctx, p.timeout)
			defer cancel()
			done <- p.probe(pctx)
		}()
		var err error
		select {
		case err = <-done:
		case <-time.After(p.timeout):
			// The probe is stuck in the commit path (its own deadline does
			// not end a commit under way): say so now, then wait for it.
			if stalledSince.IsZero() {
				stalledSince = start
				p.setStalled(true)
				p.logger.Error("store writes stalled: no write committed within --write-probe-timeout (a hung or frozen disk, or etcd without quorum); health is NOT_SERVING until writes commit again",
					"timeout", p.timeout.String())
			}
			p.failures.Inc()
			select {
			case err = <-done:
			case <-ctx.Done():
				return
			}
			if err == nil {
				err = errors.New("the probe committed only after its timeout")
			}
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if stalledSince.IsZero() {
				stalledSince = start
				p.setStalled(true)
				p.failures.Inc()
				p.logger.Error("store writes failing: the write probe failed; health is NOT_SERVING until writes commit again", "error", err.Error())
			}
			// Probe again soon: a stalled commit that just went through
			// is confirmed by the next probe.
			t.Reset(min(p.interval, time.Second))
			continue
		}
		p.duration.Observe(time.Since(start).Seconds())
		if !stalledSince.IsZero() {
			p.logger.Warn("store writes commit again; health is SERVING", "stalled_for", time.Since(stalledSince).Round(time.Millisecond).String())
			stalledSince = time.Time{}
			p.setStalled(false)
		}
		t.Reset(p.interval)
	}
}

func (p *writeProbe) setStalled(on bool) {
	if on {
		p.stalled.Set(1)
	} else {
		p.stalled.Set(0)
	}
	p.stall(on)
}
