package grpcserver

import (
	"context"
	"crypto/tls"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sigil-auth/sigil/pkg/tlsconfig"
)

// CertExpiryWarnWithin is how close to its expiry a server certificate is
// logged at WARN when the server starts. The metric
// sigil_tls_certificate_expiry_timestamp_seconds lets an alert watch it
// the whole time (certificates are reloaded from disk, so the gauge
// follows a renewal).
const CertExpiryWarnWithin = 30 * 24 * time.Hour

// watchCertExpiry registers the server certificate's expiry gauge with reg
// (when not nil) and logs a warning when the certificate presented now
// expires within CertExpiryWarnWithin of now.
func watchCertExpiry(cfg *tls.Config, logger *slog.Logger, reg prometheus.Registerer, now time.Time) {
	if reg != nil {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sigil_tls_certificate_expiry_timestamp_seconds",
			Help: "When the server's TLS certificate (as reloaded from disk) expires, in Unix seconds; 0 when none is presented.",
		}, func() float64 {
			exp, ok := tlsconfig.Expiry(cfg)
			if !ok {
				return 0
			}
			return float64(exp.Unix())
		}))
	}
	exp, ok := tlsconfig.Expiry(cfg)
	if !ok {
		return
	}
	if left := exp.Sub(now); left < CertExpiryWarnWithin {
		logger.LogAttrs(context.Background(), slog.LevelWarn, "TLS certificate expires soon: renew it (the file is reloaded when it changes)",
			slog.Time("expires", exp), slog.String("in", left.Round(time.Minute).String()))
	}
}
