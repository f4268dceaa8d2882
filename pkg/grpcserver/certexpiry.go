package grpcserver

import (
	"context"
	"crypto/tls"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sigil-auth/sigil/pkg/tlsconfig"
)

// CertExpiryWarnWithin is how close to its expiry a certificate is logged
// at WARN: when the process starts, and (server certificates) every hour
// while it serves. The metric
// sigil_tls_certificate_expiry_timestamp_seconds lets an alert watch it
// the whole time (certificates are reloaded from disk, so the gauge
// follows a renewal).
const CertExpiryWarnWithin = 30 * 24 * time.Hour

// Certificate roles, the cert label of
// sigil_tls_certificate_expiry_timestamp_seconds.
const (
	CertServer          = "server"           // the certificate a server presents
	CertAuthorityClient = "authority_client" // the authorizer's client certificate towards the authority
	CertEtcdClient      = "etcd_client"      // the authority's client certificate towards etcd (--store etcd)
)

// WatchCertExpiry registers the expiry gauge of the certificate cfg
// presents (a configuration made by tlsconfig.Server or Client) with reg,
// labelled cert=role, and logs a warning when it expires within
// CertExpiryWarnWithin of now. It does nothing for a nil cfg.
func WatchCertExpiry(cfg *tls.Config, role string, logger *slog.Logger, reg prometheus.Registerer, now time.Time) {
	if cfg == nil {
		return
	}
	watchCertExpiry(cfg, role, logger, reg, now)
}

// warnCertExpiry logs a warning when the certificate cfg presents expires
// within CertExpiryWarnWithin of now.
func warnCertExpiry(cfg *tls.Config, role string, logger *slog.Logger, now time.Time) {
	exp, ok := tlsconfig.Expiry(cfg)
	if !ok {
		return
	}
	if left := exp.Sub(now); left < CertExpiryWarnWithin {
		logger.LogAttrs(context.Background(), slog.LevelWarn, "TLS certificate expires soon: renew it (the file is reloaded when it changes)",
			slog.String("cert", role), slog.Time("expires", exp), slog.String("in", left.Round(time.Minute).String()))
	}
}

func watchCertExpiry(cfg *tls.Config, role string, logger *slog.Logger, reg prometheus.Registerer, now time.Time) {
	if reg != nil {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "sigil_tls_certificate_expiry_timestamp_seconds",
			Help:        "When a TLS certificate this process presents (as reloaded from disk) expires, in Unix seconds, by role (server, authority_client, etcd_client); 0 when none is presented.",
			ConstLabels: prometheus.Labels{"cert": role},
		}, func() float64 {
			exp, ok := tlsconfig.Expiry(cfg)
			if !ok {
				return 0
			}
			return float64(exp.Unix())
		}))
	}
	warnCertExpiry(cfg, role, logger, now)
}
