package logging

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// HandleHangup keeps SIGHUP, the usual "reload" signal, from killing the
// process (its default action) until ctx ends, and logs each one with what
// a reload means for this service: TLS certificates and keys are read again
// from disk as soon as their files change, so there is nothing to do on the
// signal itself. A service with state reloaded on the signal (the
// authorizer's --routes file) subscribes to it on its own.
func HandleHangup(ctx context.Context, logger *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				logger.Info("SIGHUP received: TLS certificates and keys are re-read from disk when their files change (no signal needed); the authorizer re-reads its --routes file now; other changes need a restart")
			}
		}
	}()
}
