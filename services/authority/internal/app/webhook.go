package app

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/sigil-auth/sigil/services/authority/internal/config"
	"github.com/sigil-auth/sigil/services/authority/internal/store"
	"github.com/sigil-auth/sigil/services/authority/internal/webhook"
)

// webhooks wires webhook delivery and expiry notices: the signing secret
// is read before anything opens, the outbox is turned on as soon as the
// store is open (before the key manager's first mutation), and the two
// background jobs run with the other cluster-wide work, on the leader.
type webhooks struct {
	cfg    config.Config
	logger *slog.Logger
	signer *standardwebhooks.Webhook // nil: webhooks off
	sender *webhook.Sender
	expiry *webhook.Expiry
}

// newWebhooks reads the signing secret when webhooks are on.
func newWebhooks(cfg config.Config, logger *slog.Logger) (*webhooks, error) {
	w := &webhooks{cfg: cfg, logger: logger}
	if cfg.WebhookURL == "" {
		return w, nil
	}
	signer, err := webhook.LoadSecretFile(cfg.WebhookSecretFile)
	if err != nil {
		return nil, err
	}
	w.signer = signer
	return w, nil
}

// attach turns the store's outbox on (webhooks on) and makes the jobs.
func (w *webhooks) attach(st store.Store, reg prometheus.Registerer) error {
	if leads := w.cfg.ExpiryNoticeLeads(); len(leads) > 0 {
		w.expiry = &webhook.Expiry{Store: st, Leads: leads, Logger: w.logger}
	}
	if w.signer == nil {
		st.SetOutbox(false)
		return nil
	}
	s, err := webhook.New(webhook.Options{URL: w.cfg.WebhookURL, Signer: w.signer, Store: st, Logger: w.logger, Registerer: reg})
	if err != nil {
		return err
	}
	st.SetOutbox(true)
	w.sender = s
	return nil
}

// jobs are the webhook delivery and the expiry notice job, when on:
// cluster-wide work, run by the leader only (leaderJobs).
func (w *webhooks) jobs() []leaderJob {
	var out []leaderJob
	if w.sender != nil {
		out = append(out, leaderJob{name: "webhook-delivery", run: w.sender.Run})
	}
	if w.expiry != nil {
		out = append(out, leaderJob{name: "expiry-notices", run: w.expiry.Run})
	}
	return out
}
