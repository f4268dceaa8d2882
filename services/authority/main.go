// Command authority runs the Sigil token authority: it mints, lists, rotates
// and revokes personal access tokens and streams revocations to authorizers.
//
// Usage: authority [flags]; authority healthcheck [--addr host:port] [TLS
// flags] probes a running authority (for images without a shell);
// authority --version prints what the binary was built from.
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
	"github.com/sigil-auth/sigil/services/authority/internal/app"
	"github.com/sigil-auth/sigil/services/authority/internal/config"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) > 0 && args[0] == "healthcheck" {
		return healthcheck.Main(args[1:], "127.0.0.1:7001", os.Stdout)
	}
	if len(args) == 1 && (args[0] == "--version" || args[0] == "-version" || args[0] == "version") {
		fmt.Println(buildinfo.Read().String("authority"))
		return 0
	}
	cfg, err := config.Parse(args, os.LookupEnv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "authority:", err)
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, "authority:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// SIGHUP must not kill the service (its default action): logged, and
	// certificates reload on their own when their files change.
	level, _ := logging.ParseLevel(cfg.LogLevel) // validated with the config
	logging.HandleHangup(ctx, logging.New(os.Stderr, level, "authority"))
	if err := app.Run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "authority:", err)
		return 1
	}
	return 0
}
