// Command authorizer runs the Sigil authorizer: it follows the authority's
// revocation stream and answers CheckPermission for backend services.
//
// "authorizer healthcheck [--addr host:port] [TLS flags]" probes a running
// authorizer's health instead (for images without a shell); "authorizer
// --version" prints what the binary was built from.
package main

import (
	"context"
	"io"
	"os"

	"github.com/sigil-auth/sigil/pkg/command"
	"github.com/sigil-auth/sigil/services/authorizer/internal/app"
	"github.com/sigil-auth/sigil/services/authorizer/internal/config"
)

func main() {
	os.Exit(command.Main(command.Service[config.Config]{
		Name:       "authorizer",
		HealthAddr: "127.0.0.1:7002",
		Parse: func(args []string, stderr io.Writer) (config.Config, error) {
			cfg, err := config.Parse(args, os.LookupEnv, stderr)
			if err != nil {
				return cfg, err
			}
			return cfg, cfg.Validate()
		},
		LogLevel: func(c config.Config) string { return c.LogLevel },
		Run:      func(ctx context.Context, c config.Config) error { return app.Run(ctx, c) },
	}, os.Args[1:]))
}
