package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sigil-auth/sigil/pkg/grpcserver"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/pkg/token"
	"github.com/sigil-auth/sigil/services/authorizer/internal/authoritytest"
	"github.com/sigil-auth/sigil/services/authorizer/internal/check"
)

// testParkedWaits is the parked-wait bound of the test server.
const testParkedWaits = 2

// largest returns a check request with every field at its bound.
func largest() *sigilv1.CheckPermissionRequest {
	return &sigilv1.CheckPermissionRequest{
		Token:       strings.Repeat("t", token.MaxLen),
		OrgId:       strings.Repeat("o", check.MaxOrgIDLen),
		Permission:  strings.Repeat("p", 32) + ":" + strings.Repeat("a", 32),
		Resource:    "domains/" + strings.Repeat("r", scope.MaxResourceLen-len("domains/")),
		MinRevision: ^uint64(0) >> 1,
	}
}

func TestRequestSizeBounds(t *testing.T) {
	e := newEnv(t)
	e.sync(t)
	ctx := context.Background()
	refused := func() uint64 { return e.limits.Count(grpcserver.LimitMessageSize) }

	// The largest valid CheckPermission passes the size bound (its token
	// is garbage: a denial, or the min_revision wait, not a size refusal).
	req := largest()
	req.MinRevision = 0
	if _, err := e.client.CheckPermission(ctx, req); status.Code(err) == codes.ResourceExhausted {
		t.Fatalf("largest valid CheckPermission refused: %v", err)
	}
	// The largest valid CheckPermissions too.
	many := &sigilv1.CheckPermissionsRequest{Token: req.Token, OrgId: req.OrgId}
	for range MaxChecks {
		many.Checks = append(many.Checks, &sigilv1.PermissionCheck{Permission: req.Permission, Resource: req.Resource})
	}
	if _, err := e.client.CheckPermissions(ctx, many); status.Code(err) == codes.ResourceExhausted {
		t.Fatalf("largest valid CheckPermissions refused: %v", err)
	}
	if n := refused(); n != 0 {
		t.Fatalf("%d size refusals for valid requests", n)
	}

	// A CheckPermission the size of a CheckPermissions is refused by its
	// method's bound.
	big := largest()
	big.Token = strings.Repeat("t", MaxCheckPermissionRequestSize)
	_, err := e.client.CheckPermission(ctx, big)
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("oversized CheckPermission: %v, want RESOURCE_EXHAUSTED", err)
	}
	if n := refused(); n != 1 {
		t.Fatalf("size refusals = %d, want 1", n)
	}
	// A 1 MiB request is refused while decoding (the global bound).
	big.Token = strings.Repeat("t", 1<<20)
	if _, err := e.client.CheckPermission(ctx, big); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("1 MiB CheckPermission: %v, want RESOURCE_EXHAUSTED", err)
	}
	many.Checks = append(many.Checks, many.Checks[:10]...)
	many.Token = strings.Repeat("t", 1<<20)
	if _, err := e.client.CheckPermissions(ctx, many); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("1 MiB CheckPermissions: %v, want RESOURCE_EXHAUSTED", err)
	}
	// grpc-go reports the end of a refused call to the stats handler that
	// counts it after the client may already have its status: wait for
	// the count (the bound only guards a hang).
	for deadline := time.Now().Add(5 * time.Second); refused() < 3 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if n := refused(); n != 3 {
		t.Fatalf("size refusals = %d, want 3", n)
	}
}

func TestParkedWaitsBound(t *testing.T) {
	e := newEnv(t)
	e.sync(t)
	tok, _ := e.mint(t, "org-a", renewExample)
	req := &sigilv1.CheckPermissionRequest{Token: tok, Permission: "domain:view", Resource: "domains/example.com", MinRevision: 20}
	// The timeout only guards a wait that should have been refused.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	// testParkedWaits calls park.
	type result struct {
		resp *sigilv1.CheckPermissionResponse
		err  error
	}
	results := make(chan result, testParkedWaits)
	for range testParkedWaits {
		go func() {
			resp, err := e.client.CheckPermission(ctx, req)
			results <- result{resp, err}
		}()
		<-e.waits
	}
	// One more is refused at once, and counted.
	_, err := e.client.CheckPermission(ctx, req)
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("wait beyond the bound: %v, want RESOURCE_EXHAUSTED", err)
	}
	if n := e.limits.Count(grpcserver.LimitParkedWaits); n != 1 {
		t.Fatalf("parked_waits refusals = %d, want 1", n)
	}
	// A call without min_revision is answered meanwhile. (One whose
	// revision is applied waits for a confirmation, in a slot.)
	now := &sigilv1.CheckPermissionRequest{Token: tok, Permission: "domain:view", Resource: "domains/example.com"}
	if resp, err := e.client.CheckPermission(ctx, now); err != nil || !resp.GetAllowed() {
		t.Fatalf("check needing no wait: %v, %v", resp, err)
	}
	// The revision arrives: the parked calls are answered.
	e.sess.Send(t, authoritytest.Checkpoint(20, t0))
	for range testParkedWaits {
		r := <-results
		if r.err != nil || !r.resp.GetAllowed() {
			t.Fatalf("parked call: %v, %v", r.resp, r.err)
		}
	}
}
