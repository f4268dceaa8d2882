package authz

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

// DefaultCallTimeout bounds one CheckPermission call to one authorizer when
// the caller's context allows longer.
const DefaultCallTimeout = 2 * time.Second

// Checker answers CheckPermission; Pool is the production one.
type Checker interface {
	CheckPermission(ctx context.Context, req *sigilv1.CheckPermissionRequest) (*sigilv1.CheckPermissionResponse, error)
}

// Pool calls CheckPermission on several authorizers in turn (round-robin),
// each call bounded by a per-call deadline. A call that fails with
// UNAVAILABLE (authorizer down, not synced or stale) or hits its per-call
// deadline is retried once on the next authorizer; any other error, and a
// failed retry, is returned: an error is never an allow.
type Pool struct {
	conns   []*grpc.ClientConn
	clients []sigilv1.AuthorizerServiceClient
	next    atomic.Uint64
	timeout time.Duration
}

// PoolOptions configures NewPool.
type PoolOptions struct {
	// Addrs are the authorizers' addresses (host:port). At least one.
	Addrs []string
	// DialOptions are passed to grpc.NewClient for each address; without
	// any, the connection is plaintext (an authorizer on loopback or in the
	// same pod).
	DialOptions []grpc.DialOption
	// CallTimeout bounds one call to one authorizer (DefaultCallTimeout
	// when zero).
	CallTimeout time.Duration
}

// NewPool connects (lazily, as grpc.NewClient does) to every address.
func NewPool(opts PoolOptions) (*Pool, error) {
	if len(opts.Addrs) == 0 {
		return nil, errors.New("authz: at least one authorizer address is required")
	}
	dial := opts.DialOptions
	if len(dial) == 0 {
		dial = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	p := &Pool{timeout: opts.CallTimeout}
	if p.timeout <= 0 {
		p.timeout = DefaultCallTimeout
	}
	for _, a := range opts.Addrs {
		a = strings.TrimSpace(a)
		if a == "" {
			p.Close()
			return nil, errors.New("authz: empty authorizer address")
		}
		conn, err := grpc.NewClient(a, dial...)
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("authz: authorizer %s: %w", a, err)
		}
		p.conns = append(p.conns, conn)
		p.clients = append(p.clients, sigilv1.NewAuthorizerServiceClient(conn))
	}
	return p, nil
}

// Close closes every connection.
func (p *Pool) Close() error {
	var errs []error
	for _, c := range p.conns {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// CheckPermission asks one authorizer, and on UNAVAILABLE or a per-call
// timeout asks the next one once.
func (p *Pool) CheckPermission(ctx context.Context, req *sigilv1.CheckPermissionRequest) (*sigilv1.CheckPermissionResponse, error) {
	return tryEach(ctx, p, func(ctx context.Context, c sigilv1.AuthorizerServiceClient) (*sigilv1.CheckPermissionResponse, error) {
		return c.CheckPermission(ctx, req)
	})
}

// CheckPermissions asks one authorizer, and on UNAVAILABLE or a per-call
// timeout asks the next one once, as CheckPermission.
func (p *Pool) CheckPermissions(ctx context.Context, req *sigilv1.CheckPermissionsRequest) (*sigilv1.CheckPermissionsResponse, error) {
	return tryEach(ctx, p, func(ctx context.Context, c sigilv1.AuthorizerServiceClient) (*sigilv1.CheckPermissionsResponse, error) {
		return c.CheckPermissions(ctx, req)
	})
}

// tryEach makes call on the next authorizer in turn, each call bounded by
// the pool's timeout, and on UNAVAILABLE or that timeout once more on the
// following one. Any other error, or an answer, ends it; an error is never
// an allow.
func tryEach[R any](ctx context.Context, p *Pool, call func(context.Context, sigilv1.AuthorizerServiceClient) (R, error)) (R, error) {
	n := len(p.clients)
	first := int(p.next.Add(1)-1) % n
	var zero R
	var err error
	for i := range min(2, n) {
		if ctx.Err() != nil {
			break
		}
		cctx, cancel := context.WithTimeout(ctx, p.timeout)
		var resp R
		resp, err = call(cctx, p.clients[(first+i)%n])
		cancel()
		if err == nil {
			return resp, nil
		}
		if c := status.Code(err); c != codes.Unavailable && c != codes.DeadlineExceeded {
			return zero, err
		}
	}
	if err == nil {
		err = status.FromContextError(ctx.Err()).Err()
	}
	return zero, err
}
