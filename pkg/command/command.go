// Package command is the main function both service binaries share: the
// `healthcheck` subcommand, `--version`, parsing and validating the
// configuration, signals (SIGINT and SIGTERM stop, SIGHUP is logged and
// does not kill) and exit codes (0 done, 1 failed, 2 bad configuration).
package command

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/sigil-auth/sigil/pkg/buildinfo"
	"github.com/sigil-auth/sigil/pkg/healthcheck"
	"github.com/sigil-auth/sigil/pkg/logging"
)

// Service describes one service binary.
type Service[C any] struct {
	// Name is the binary's name: "authority" or "authorizer".
	Name string
	// HealthAddr is the address the healthcheck subcommand probes by default.
	HealthAddr string
	// Parse parses and validates the command line and the environment;
	// flag.ErrHelp after -h.
	Parse func(args []string, stderr io.Writer) (C, error)
	// LogLevel is the configuration's (validated) log level.
	LogLevel func(C) string
	// Run runs the service until ctx ends.
	Run func(ctx context.Context, cfg C) error
}

// Main runs the binary with args (without the program name) and returns
// its exit code.
func Main[C any](s Service[C], args []string) int {
	if len(args) > 0 && args[0] == "healthcheck" {
		return healthcheck.Main(args[1:], s.HealthAddr, os.Stdout)
	}
	if len(args) == 1 && (args[0] == "--version" || args[0] == "-version" || args[0] == "version") {
		fmt.Println(buildinfo.Read().String(s.Name))
		return 0
	}
	cfg, err := s.Parse(args, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", s.Name, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// SIGHUP must not kill the service (its default action): logged, and
	// certificates reload on their own when their files change.
	level, _ := logging.ParseLevel(s.LogLevel(cfg)) // validated with the config
	logging.HandleHangup(ctx, logging.New(os.Stderr, level, s.Name))
	if err := s.Run(ctx, cfg); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", s.Name, err)
		return 1
	}
	return 0
}
