package grpcserver

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// MetricsServer serves Prometheus metrics on /metrics.
type MetricsServer struct {
	srv *http.Server
	lis net.Listener
}

// ListenMetrics listens on addr and serves g on /metrics in the background.
func ListenMetrics(addr string, g prometheus.Gatherer, logger *slog.Logger) (*MetricsServer, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("metrics server stopped", "error", err)
		}
	}()
	return &MetricsServer{srv: srv, lis: lis}, nil
}

// Addr is the address the server listens on.
func (m *MetricsServer) Addr() net.Addr { return m.lis.Addr() }

// Close stops the server, waiting at most until ctx is done.
func (m *MetricsServer) Close(ctx context.Context) error { return m.srv.Shutdown(ctx) }
