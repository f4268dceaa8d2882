package app

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sigil-auth/sigil/pkg/scope"
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

// checkRoutesCatalog checks the routes policy against the authority's
// catalog c, as the follower reports it (first, then at each change of its
// names). Every route naming a permission outside c is logged at ERROR,
// naming the file, the route and the permission. At the first catalog of
// the process that is a start-up error, sent on fault (the process stops
// and exits non-zero); later (the authority restarted with another
// catalog) the authorizer keeps serving and denies those routes' requests
// (outcome unknown_permission) until the file is fixed and reloaded. The
// catalog also becomes the one a SIGHUP reload is checked against.
func checkRoutesCatalog(live *routes.Live, c *scope.Catalog, logger *slog.Logger, fault chan<- error) {
	if live == nil {
		return
	}
	first := live.Catalog() == nil
	live.SetCatalog(c)
	bad := live.Policy().UnknownPermissions(c)
	for _, r := range bad {
		logger.Error("route names a permission that is not in the authority's catalog", "routes_file", live.Path(), "route", r.Name,
			"permission", r.Permission, "error", routes.UnknownPermissionError(live.Path(), r).Error(), "at_start", first)
	}
	if len(bad) == 0 {
		return
	}
	if first {
		select {
		case fault <- fmt.Errorf("--routes: %w", routes.UnknownPermissionError(live.Path(), bad[0])):
		default:
		}
		return
	}
	logger.Error("routes naming unknown permissions are denied (outcome unknown_permission) until the routes file is fixed and reloaded (SIGHUP)",
		"routes_file", live.Path(), "routes", len(bad))
}
