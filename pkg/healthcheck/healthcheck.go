// Package healthcheck is the client side of the gRPC health protocol that
// the services' `healthcheck` subcommand runs: a scratch container image has
// no shell and no grpcurl, so the binary probes itself.
package healthcheck

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// ErrNotServing is returned when the server answers but is not SERVING.
var ErrNotServing = errors.New("healthcheck: not serving")

// Check asks the server at addr for the health of service ("" for the whole
// server) and returns nil only when it is SERVING.
func Check(ctx context.Context, addr, service string, tlsCfg *tls.Config) error {
	creds := insecure.NewCredentials()
	if tlsCfg != nil {
		creds = credentials.NewTLS(tlsCfg)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return fmt.Errorf("healthcheck: %s: %w", addr, err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("%w: %s reports %s", ErrNotServing, addr, resp.GetStatus())
	}
	return nil
}

// Main runs the `healthcheck` subcommand with args (after the subcommand
// name): --addr (default defaultAddr), --service, --timeout. It prints one
// line to out and returns the process exit code: 0 when SERVING, 1
// otherwise. The probe speaks plaintext; a TLS deployment probes through its
// orchestrator instead.
func Main(args []string, defaultAddr string, out io.Writer) int {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(out)
	addr := fs.String("addr", defaultAddr, "address of the gRPC server to probe")
	service := fs.String("service", "", "service name to ask about (empty: the whole server)")
	timeout := fs.Duration("timeout", 3*time.Second, "how long to wait for the answer")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := Check(ctx, *addr, *service, nil); err != nil {
		fmt.Fprintln(out, err)
		return 1
	}
	fmt.Fprintf(out, "%s: SERVING\n", *addr)
	return 0
}
