package webhook

import (
	"context"
	"log/slog"
	"time"

	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// MaxNoticeInterval is the longest time between two runs of the expiry
// notice job; with short lead times it runs more often (NoticeInterval).
const MaxNoticeInterval = time.Minute

// NoticeInterval is how often the expiry notice job runs for the lead
// times leads: every minute, or a quarter of the shortest lead when that
// is shorter, so that a notice is late by a small part of its lead.
func NoticeInterval(leads []time.Duration) time.Duration {
	d := MaxNoticeInterval
	for _, l := range leads {
		d = min(d, l/4)
	}
	return max(d, time.Second)
}

// Expiry is the expiry notice job: it makes the notices due (audit records
// and, with webhooks on, token.expiring events; store.NoticeExpiring) at
// every interval.
type Expiry struct {
	Store  store.Store
	Leads  []time.Duration // the lead times, each > 0
	Logger *slog.Logger
	// Interval between runs; NoticeInterval(Leads) when zero.
	Interval time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Run runs the job until ctx ends; a failed run is logged and the next
// one tries again.
func (x *Expiry) Run(ctx context.Context) {
	interval := x.Interval
	if interval <= 0 {
		interval = NoticeInterval(x.Leads)
	}
	now := x.Now
	if now == nil {
		now = time.Now
	}
	logger := x.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		n, err := x.Store.NoticeExpiring(ctx, now(), x.Leads)
		switch {
		case err != nil && ctx.Err() == nil:
			logger.Error("expiry notices", "error", err)
		case n > 0:
			logger.Info("expiry notices made", "count", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
