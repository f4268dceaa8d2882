// Command domains is the example product: a small gRPC domains API whose
// methods declare the permission they need in their proto options
// (examples/domains/proto) and which pkg/authz guards by asking Sigil
// authorizers. Run it beside the authority and an authorizer:
//
//	go run ./examples/domains --listen 127.0.0.1:7010 --authorizers 127.0.0.1:7002
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/sigil-auth/sigil/pkg/authz"
	domainsv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/examples/domains/v1"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "domains:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("domains", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:7010", "gRPC listen address (host:port; port 0 picks a free port)")
	authorizers := fs.String("authorizers", "127.0.0.1:7002", "comma-separated authorizer addresses (host:port), called in turn")
	orgHeader := fs.String("org-header", "x-organization-id", "metadata key naming the organization a call acts in (empty: the token's)")
	callTimeout := fs.Duration("call-timeout", authz.DefaultCallTimeout, "bound of one CheckPermission call to one authorizer")
	verifyTimeout := fs.Duration("verify-timeout", 30*time.Second, "how long start-up waits for an authorizer to verify the annotated permissions against the authority's catalog (a permission outside it stops the start; no answer in time: a warning)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("service", "domains")

	var addrs []string
	for _, a := range strings.Split(*authorizers, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return errors.New("--authorizers: at least one address is required")
	}
	pool, err := authz.NewPool(authz.PoolOptions{Addrs: addrs, CallTimeout: *callTimeout})
	if err != nil {
		return err
	}
	defer pool.Close()
	guard, err := authz.New(authz.Options{
		Services:       []protoreflect.ServiceDescriptor{domainsv1.File_sigil_examples_domains_v1_domains_proto.Services().ByName("DomainService")},
		PublicServices: authz.StandardPublicServices,
		Checker:        pool, OrgIDKey: *orgHeader, Logger: logger,
	})
	if err != nil {
		return err
	}

	if err := verifyCatalog(guard, pool, *verifyTimeout, logger); err != nil {
		return err
	}

	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(guard.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(guard.StreamServerInterceptor()),
		grpc.MaxRecvMsgSize(64<<10),
	)
	domainsv1.RegisterDomainServiceServer(srv, newServer())
	// Reflection shows each method's (sigil.v1.requires): grpcurl describe.
	reflection.Register(srv)

	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", *listen, err)
	}
	logger.Info("listening", "addr", lis.Addr().String(), "authorizers", addrs)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	done := make(chan struct{})
	go func() { srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		srv.Stop()
	}
	logger.Info("stopped")
	return nil
}

// verifyCatalog checks every annotated permission against the authority's
// catalog through the authorizers, so that a typo stops the start instead
// of failing every call. Authorizers that do not answer within timeout (not
// synced yet, down) only earn a warning: the calls then fail closed anyway.
func verifyCatalog(guard *authz.Guard, pool *authz.Pool, timeout time.Duration, logger *slog.Logger) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := guard.VerifyCatalog(ctx, pool)
	var unknown *authz.UnknownPermissionsError
	switch {
	case err == nil:
		logger.Info("annotated permissions verified against the authority's catalog")
		return nil
	case errors.As(err, &unknown):
		logger.Error("annotated permissions are not in the authority's catalog", "permissions", unknown.Permissions, "error", err.Error())
		return err
	default:
		logger.Warn("annotated permissions not verified: no authorizer answered", "error", err.Error(), "verify_timeout", timeout.String())
		return nil
	}
}
