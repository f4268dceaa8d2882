// Package command is the main function both service binaries share: the
// `healthcheck` subcommand and any other a service declares, `--version`,
// the list of subcommands after `-h`, parsing and validating the
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
	"sort"
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
	// Subcommands are the binary's subcommands besides `healthcheck`, by
	// name (the first argument): offline tools such as `authority compact`.
	Subcommands map[string]Subcommand
}

// Subcommand is one subcommand of a service binary.
type Subcommand struct {
	// Summary is one line for the binary's help (`-h`): its arguments and
	// what it does.
	Summary string
	// Run runs it with args (those after its name), writing its results to
	// stdout and its errors and flag help to stderr, and returns the exit
	// code: 0 done, 1 failed, 2 bad flags.
	Run func(args []string, stdout, stderr io.Writer) int
}

// healthcheckSummary is the help line of the subcommand every binary has.
const healthcheckSummary = "[--addr host:port] [TLS flags]: probe a running service's health (for images without a shell)"

// Main runs the binary with args (without the program name) and returns
// its exit code.
func Main[C any](s Service[C], args []string) int {
	if len(args) > 0 && args[0] == "healthcheck" {
		return healthcheck.Main(args[1:], s.HealthAddr, os.Stdout)
	}
	if len(args) > 0 {
		if sub, ok := s.Subcommands[args[0]]; ok {
			return sub.Run(args[1:], os.Stdout, os.Stderr)
		}
	}
	if len(args) == 1 && (args[0] == "--version" || args[0] == "-version" || args[0] == "version") {
		fmt.Println(buildinfo.Read().String(s.Name))
		return 0
	}
	cfg, err := s.Parse(args, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		s.usage(os.Stderr)
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

// usage lists the subcommands after the flags' help.
func (s Service[C]) usage(w io.Writer) {
	names := make([]string, 0, len(s.Subcommands))
	for name := range s.Subcommands {
		names = append(names, name)
	}
	sort.Strings(names)
	fmt.Fprintf(w, "\nSubcommands (%s <subcommand> -h for their flags):\n", s.Name)
	fmt.Fprintf(w, "  %s healthcheck %s\n", s.Name, healthcheckSummary)
	for _, name := range names {
		fmt.Fprintf(w, "  %s %s %s\n", s.Name, name, s.Subcommands[name].Summary)
	}
}
