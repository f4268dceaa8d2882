// Command authorizer runs the Sigil authorizer: it follows the authority's
// revocation stream and answers CheckPermission for backend services.
//
// "authorizer healthcheck [--addr host:port]" probes a running authorizer's
// health instead (for images without a shell).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/sigil-auth/sigil/pkg/healthcheck"
	"github.com/sigil-auth/sigil/services/authorizer/internal/app"
	"github.com/sigil-auth/sigil/services/authorizer/internal/config"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		os.Exit(healthcheck.Main(os.Args[2:], "127.0.0.1:7002", os.Stdout))
	}
	cfg, err := config.Parse(os.Args[1:], os.LookupEnv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sigil-authorizer:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := app.Run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "sigil-authorizer:", err)
		os.Exit(1)
	}
}
