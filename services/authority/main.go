// Command authority runs the Sigil token authority: it mints, lists, rotates
// and revokes personal access tokens and streams revocations to authorizers.
//
// Usage: authority [flags]; authority healthcheck [--addr host:port] [TLS
// flags] probes a running authority (for images without a shell);
// authority migrate copies a stopped authority's bbolt file into etcd;
// authority compact rewrites a stopped authority's bbolt file smaller;
// authority --version prints what the binary was built from.
package main

import (
	"context"
	"io"
	"os"

	"github.com/sigil-auth/sigil/pkg/command"
	"github.com/sigil-auth/sigil/services/authority/internal/app"
	"github.com/sigil-auth/sigil/services/authority/internal/config"
	"github.com/sigil-auth/sigil/services/authority/internal/offline"
)

func main() {
	os.Exit(command.Main(command.Service[config.Config]{
		Name:       "authority",
		HealthAddr: "127.0.0.1:7001",
		Parse: func(args []string, stderr io.Writer) (config.Config, error) {
			cfg, err := config.Parse(args, os.LookupEnv, stderr)
			if err != nil {
				return cfg, err
			}
			return cfg, cfg.Validate()
		},
		LogLevel: func(c config.Config) string { return c.LogLevel },
		Run:      func(ctx context.Context, c config.Config) error { return app.Run(ctx, c) },
		Subcommands: map[string]command.Subcommand{
			"migrate": {Summary: offline.MigrateSummary, Run: offline.Migrate},
			"compact": {Summary: offline.CompactSummary, Run: offline.Compact},
		},
	}, os.Args[1:]))
}
