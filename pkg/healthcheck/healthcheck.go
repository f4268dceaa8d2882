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

	"github.com/sigil-auth/sigil/pkg/tlsconfig"
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
// name): --addr (default defaultAddr), --service, --timeout, and for a TLS
// server --tls-ca (the CA that signed its certificate; enables TLS),
// --tls-cert and --tls-key (a client certificate, for mTLS) and
// --tls-server-name (the name its certificate carries, when --addr is an
// IP address such as 127.0.0.1). It prints one line to out and returns the
// process exit code: 0 when SERVING, 1 otherwise, 2 for bad flags.
func Main(args []string, defaultAddr string, out io.Writer) int {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(out)
	addr := fs.String("addr", defaultAddr, "address of the gRPC server to probe")
	service := fs.String("service", "", "service name to ask about (empty: the whole server)")
	timeout := fs.Duration("timeout", 3*time.Second, "how long to wait for the answer")
	ca := fs.String("tls-ca", "", "CA (PEM) of the server's certificate; when set, the probe speaks TLS")
	cert := fs.String("tls-cert", "", "client certificate (PEM) for a server that requires one (mTLS); needs --tls-ca")
	key := fs.String("tls-key", "", "client private key (PEM)")
	serverName := fs.String("tls-server-name", "", "name to verify in the server's certificate (default: the host of --addr)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var tlsCfg *tls.Config
	switch {
	case *ca != "":
		var err error
		if tlsCfg, err = tlsconfig.Client(*ca, *cert, *key); err != nil {
			fmt.Fprintln(out, "healthcheck:", err)
			return 2
		}
		tlsCfg.ServerName = *serverName
	case *cert != "" || *key != "" || *serverName != "":
		fmt.Fprintln(out, "healthcheck: --tls-cert, --tls-key and --tls-server-name need --tls-ca")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := Check(ctx, *addr, *service, tlsCfg); err != nil {
		fmt.Fprintln(out, err)
		return 1
	}
	fmt.Fprintf(out, "%s: SERVING\n", *addr)
	return 0
}
