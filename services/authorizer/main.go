// Command authorizer runs the Sigil authorizer: it follows the authority's
// revocation stream and answers CheckPermission for backend services.
//
// "authorizer healthcheck [--addr host:port] [TLS flags]" probes a running
// authorizer's health instead (for images without a shell); "authorizer
// --version" prints what the binary was built from.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/sigil-auth/sigil/pkg/buildinfo"
	"github.com/sigil-auth/sigil/pkg/healthcheck"
	"github.com/sigil-auth/sigil/pkg/logging"
	"github.com/sigil-auth/sigil/services/authorizer/internal/app"
	"github.com/sigil-auth/sigil/services/authorizer/internal/config"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) > 0 && args[0] == "healthcheck" {
		return healthcheck.Main(args[1:], "127.0.0.1:7002", os.Stdout)
	}
	if len(args) == 1 && (args[0] == "--version" || args[0] == "-version" || args[0] == "version") {
		fmt.Println(buildinfo.Read().String("authorizer"))
		return 0
	}
	cfg, err := config.Parse(args, os.LookupEnv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sigil-authorizer:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// SIGHUP must not kill the service (its default action): logged, and
	// certificates reload on their own when their files change.
	level, _ := logging.ParseLevel(cfg.LogLevel) // validated with the config
	logging.HandleHangup(ctx, logging.New(os.Stderr, level, "authorizer"))
	if err := app.Run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "sigil-authorizer:", err)
		return 1
	}
	return 0
}
