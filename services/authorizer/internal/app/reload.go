package app

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sigil-auth/sigil/services/authorizer/internal/routes"
)

// reloadRoutesOnHangup reads the --routes file again at each SIGHUP until
// ctx ends. A file that does not load is logged at ERROR, naming the file
// and the fault, and the policy in force stays; a good one replaces it for
// the requests that follow (ext_authz and HTTP forward-auth alike).
// sigil_authorizer_routes_reloads_total counts both outcomes.
func reloadRoutesOnHangup(ctx context.Context, live *routes.Live, logger *slog.Logger, reg prometheus.Registerer) {
	reloads := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sigil_authorizer_routes_reloads_total",
		Help: "Reloads of the --routes file on SIGHUP, by result (ok, error: the previous policy stays).",
	}, []string{"result"})
	if reg != nil {
		reg.MustRegister(reloads)
	}
	reloads.WithLabelValues("ok")
	reloads.WithLabelValues("error")
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				p, err := live.Reload()
				if err != nil {
					reloads.WithLabelValues("error").Inc()
					logger.Error("routes file not reloaded: the previous policy stays in force", "routes_file", live.Path(), "error", err)
					continue
				}
				reloads.WithLabelValues("ok").Inc()
				logger.Info("routes file reloaded", "routes_file", live.Path(), "routes", len(p.Routes), "default_allow", p.Default == routes.DefaultAllow)
			}
		}
	}()
}
