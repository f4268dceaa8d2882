package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/sigil-auth/sigil/pkg/backoff"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
)

// Delivery defaults (Options).
const (
	// DefaultTimeout bounds one delivery attempt, the response included.
	DefaultTimeout = 10 * time.Second
	// DefaultMinBackoff is the wait after a first failed attempt; each
	// further failure doubles it, up to DefaultMaxBackoff.
	DefaultMinBackoff = time.Second
	// DefaultMaxBackoff caps the wait between attempts.
	DefaultMaxBackoff = time.Hour
	// DefaultMaxAge is how long an event is retried after it happened;
	// past it, a failed attempt moves it to the failed list.
	DefaultMaxAge = 24 * time.Hour
	// idleWait is the longest wait for work when nothing is due: new
	// events wake the loop at once (store.Changed).
	idleWait = time.Minute
	// listPage is how many outbox entries one read returns.
	listPage = 100
	// maxResponseRead bounds what is read (and dropped) of a response body.
	maxResponseRead = 4096
	// gaugeEvery bounds how often the pending gauge is refreshed (a count
	// of the outbox: a ranged read on etcd).
	gaugeEvery = time.Second
)

// Options configures a Sender.
type Options struct {
	URL    string                    // the endpoint, http or https
	Signer *standardwebhooks.Webhook // from the signing secret (LoadSecretFile)
	Store  store.Store
	Logger *slog.Logger
	// Registerer receives the metrics (nil: none registered).
	Registerer prometheus.Registerer

	// Zero values take the defaults above.
	Timeout    time.Duration
	MinBackoff time.Duration
	MaxBackoff time.Duration
	MaxAge     time.Duration
	// Client sends the requests; nil: one with Timeout that does not
	// follow redirects.
	Client *http.Client
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Sender delivers the outbox's events to one endpoint, at least once:
// an event is deleted from the outbox only after the endpoint answered
// 2xx, so a crash between the answer and the deletion sends it again
// (with the same webhook-id). Events are sent in order, one at a time. A
// failed attempt is recorded on the event (attempts, next attempt: an
// exponential backoff with jitter, kept across restarts), and the event
// holds back the ones after it until it is delivered or, still failing
// MaxAge after it happened, moved to the failed list (kept in the store
// for inspection, counted, logged): an endpoint that is down gets one
// request per backoff, not every pending event, and a receiver sees the
// events in the order they happened.
type Sender struct {
	opts    Options
	host    string // of the URL, for logs: the URL itself may hold a secret
	metrics *metrics
	counted time.Time // last refresh of the pending gauge
}

// New returns a Sender; it checks the options.
func New(opts Options) (*Sender, error) {
	u, err := url.Parse(opts.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("webhook: the URL must be http:// or https:// with a host")
	}
	if opts.Signer == nil || opts.Store == nil {
		return nil, errors.New("webhook: a signer and a store are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&opts.Timeout, DefaultTimeout}, {&opts.MinBackoff, DefaultMinBackoff}, {&opts.MaxBackoff, DefaultMaxBackoff}, {&opts.MaxAge, DefaultMaxAge}} {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = opts.MinBackoff
	}
	if opts.Client == nil {
		opts.Client = &http.Client{
			Timeout: opts.Timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse // a redirect is a failed attempt
			},
		}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Sender{opts: opts, host: u.Host, metrics: newMetrics(opts.Registerer)}, nil
}

// Run delivers until ctx ends. Errors of the store are logged and retried
// after a pause; it never gives up while ctx lives.
func (s *Sender) Run(ctx context.Context) {
	s.opts.Logger.Info("webhook delivery started", "host", s.host)
	for ctx.Err() == nil {
		changed := s.opts.Store.Changed()
		wait, err := s.round(ctx)
		if err != nil && ctx.Err() == nil {
			s.opts.Logger.Error("webhook delivery: reading or updating the outbox", "error", err)
			wait = s.opts.MinBackoff
		}
		if now := time.Now(); now.Sub(s.counted) >= gaugeEvery {
			s.counted = now
			if p, _, err := s.opts.Store.OutboxCounts(ctx); err == nil {
				s.metrics.pending.Set(float64(p))
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
}

// round sends the events in order until one is not due (waiting for its
// retry) or fails; it returns how long to wait before the next round (at
// most idleWait).
func (s *Sender) round(ctx context.Context) (time.Duration, error) {
	var after uint64
	for ctx.Err() == nil {
		es, err := s.opts.Store.ListOutbox(ctx, store.OutboxFilter{After: after, Limit: listPage})
		if err != nil {
			return 0, err
		}
		for i := range es {
			e := &es[i]
			after = e.Seq
			if now := s.opts.Now(); now.Before(e.NextAttempt) {
				return min(e.NextAttempt.Sub(now), idleWait), nil
			}
			ok, err := s.attempt(ctx, e)
			if err != nil {
				return 0, err
			}
			if !ok {
				return min(max(e.NextAttempt.Sub(s.opts.Now()), 0), idleWait), nil
			}
		}
		if len(es) < listPage {
			break
		}
	}
	return idleWait, nil
}

// attempt sends e once and records the outcome in the store: deleted when
// delivered (ok), else its attempts and next attempt, or moved to the
// failed list once MaxAge has passed since the event (ok too: the events
// after it go on).
func (s *Sender) attempt(ctx context.Context, e *store.OutboxEntry) (ok bool, err error) {
	s.metrics.attempts.Inc()
	sendErr := s.send(ctx, e)
	if sendErr == nil {
		if err := s.opts.Store.AckOutbox(ctx, e.Seq); err != nil {
			return false, fmt.Errorf("webhook %s delivered, not deleted from the outbox (it will be sent again): %w", e.ID, err)
		}
		s.metrics.delivered.Inc()
		s.opts.Logger.Debug("webhook delivered", "id", e.ID, "type", e.Type, "attempts", e.Attempts+1)
		return true, nil
	}
	if ctx.Err() != nil {
		return false, nil // stopping: the attempt does not count
	}
	now := s.opts.Now()
	e.Attempts++
	e.LastError = sendErr.Error()
	deadline := e.Time.Add(s.opts.MaxAge)
	failed := !now.Before(deadline)
	if !failed {
		e.NextAttempt = now.Add(s.backoff(e.Attempts))
		if e.NextAttempt.After(deadline) {
			e.NextAttempt = deadline // one last attempt at the deadline
		}
	}
	err = s.opts.Store.RetryOutbox(ctx, *e, failed)
	if errors.Is(err, store.ErrNotFound) {
		return true, nil // delivered meanwhile by another process
	}
	if err != nil {
		return false, err
	}
	if failed {
		s.metrics.failed.Inc()
		s.opts.Logger.Error("webhook given up after retrying for the maximum age: kept in the store's failed list",
			"id", e.ID, "type", e.Type, "attempts", e.Attempts, "last_error", e.LastError, "host", s.host)
		return true, nil
	}
	s.opts.Logger.Warn("webhook attempt failed; retrying", "id", e.ID, "type", e.Type, "attempts", e.Attempts,
		"error", e.LastError, "next_attempt", e.NextAttempt, "host", s.host)
	return false, nil
}

// send makes one signed POST of e; nil when the endpoint answered 2xx.
// The error says the status or the transport's failure, never the URL.
func (s *Sender) send(ctx context.Context, e *store.OutboxEntry) error {
	body, err := Body(e)
	if err != nil {
		return fmt.Errorf("encoding: %v", err)
	}
	now := s.opts.Now()
	sig, err := s.opts.Signer.Sign(e.ID, now, body)
	if err != nil {
		return fmt.Errorf("signing: %v", err)
	}
	rctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, s.opts.URL, bytes.NewReader(body))
	if err != nil {
		return errors.New("building the request failed")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "sigil-authority")
	req.Header.Set(standardwebhooks.HeaderWebhookID, e.ID)
	req.Header.Set(standardwebhooks.HeaderWebhookTimestamp, strconv.FormatInt(now.Unix(), 10))
	req.Header.Set(standardwebhooks.HeaderWebhookSignature, sig)
	resp, err := s.opts.Client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL
		}
		return fmt.Errorf("transport: %v", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseRead))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// backoff is the wait after the n-th consecutive failure: MinBackoff
// doubled n-1 times, capped at MaxBackoff, then jittered to between half
// and all of it ("equal jitter"), so that senders do not retry in step.
func (s *Sender) backoff(n int) time.Duration {
	return backoff.EqualJitter(s.opts.MinBackoff, s.opts.MaxBackoff, n-1)
}

// metrics are the Sender's Prometheus metrics.
type metrics struct {
	pending   prometheus.Gauge
	delivered prometheus.Counter
	failed    prometheus.Counter
	attempts  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sigil_authority_webhook_pending", Help: "Webhook events in the outbox waiting for delivery.",
		}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sigil_authority_webhook_delivered_total", Help: "Webhook events delivered (answered 2xx).",
		}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sigil_authority_webhook_failed_total", Help: "Webhook events given up on after retrying for the maximum age.",
		}),
		attempts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sigil_authority_webhook_attempts_total", Help: "Webhook delivery attempts, successful or not.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.pending, m.delivered, m.failed, m.attempts)
	}
	return m
}
