package grpcserver

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/credentials"
)

// handshakeLogEvery bounds the handshake-failure log lines to one per
// interval; the rest are counted in the next line.
const handshakeLogEvery = 10 * time.Second

// loggedCreds are the server's TLS credentials with failed handshakes
// logged (rate-limited, with the peer's address and the reason: an expired
// or unknown client certificate, a plaintext client) and counted in
// sigil_tls_handshake_failures_total. grpc-go itself reports them only to
// its own logger.
type loggedCreds struct {
	credentials.TransportCredentials
	logger  *slog.Logger
	failed  prometheus.Counter
	mu      sync.Mutex
	last    time.Time
	dropped int
}

// newLoggedCreds wraps creds; the failure counter is registered with reg
// when it is not nil.
func newLoggedCreds(creds credentials.TransportCredentials, logger *slog.Logger, reg prometheus.Registerer) *loggedCreds {
	failed := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sigil_tls_handshake_failures_total",
		Help: "TLS handshakes the server refused or that failed (bad, expired or missing client certificates, plaintext clients).",
	})
	if reg != nil {
		reg.MustRegister(failed)
	}
	return &loggedCreds{TransportCredentials: creds, logger: logger, failed: failed}
}

func (c *loggedCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	out, info, err := c.TransportCredentials.ServerHandshake(conn)
	if err != nil {
		c.failed.Inc()
		c.mu.Lock()
		now := time.Now()
		if now.Sub(c.last) < handshakeLogEvery {
			c.dropped++
			c.mu.Unlock()
			return out, info, err
		}
		dropped := c.dropped
		c.last, c.dropped = now, 0
		c.mu.Unlock()
		c.logger.LogAttrs(context.Background(), slog.LevelWarn, "TLS handshake failed",
			slog.String("peer", conn.RemoteAddr().String()), slog.String("error", err.Error()),
			slog.Int("more_since_last_line", dropped))
	}
	return out, info, err
}

func (c *loggedCreds) Clone() credentials.TransportCredentials {
	return &loggedCreds{TransportCredentials: c.TransportCredentials.Clone(), logger: c.logger, failed: c.failed}
}
