package authz

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

// ReasonMisconfigured is the ErrorInfo reason of a call whose method
// requires a permission the authority's catalog does not have: the product
// is misconfigured, the caller did nothing wrong (INTERNAL).
const ReasonMisconfigured = "AUTHORIZATION_MISCONFIGURED"

// probeToken is the token of VerifyPermissions' calls: not empty (the
// authorizer requires one) and never a valid token, so that nothing is
// decided for anyone. The authorizer checks permissions against its
// catalog before it parses the token.
const probeToken = "sigil-authz-permission-probe"

// maxProbeChecks is the most checks of one CheckPermissions call (the
// authorizer's bound).
const maxProbeChecks = 100

// PermissionsChecker answers CheckPermissions; Pool is the production one.
type PermissionsChecker interface {
	CheckPermissions(ctx context.Context, req *sigilv1.CheckPermissionsRequest) (*sigilv1.CheckPermissionsResponse, error)
}

// UnknownPermissionsError lists the permissions the authority's catalog
// does not have.
type UnknownPermissionsError struct {
	// Permissions are the unknown permissions, sorted.
	Permissions []string
	// Methods maps each unknown permission to the methods requiring it
	// (Guard.VerifyCatalog only).
	Methods map[string][]string
}

func (e *UnknownPermissionsError) Error() string {
	parts := make([]string, len(e.Permissions))
	for i, p := range e.Permissions {
		parts[i] = strconv.Quote(p)
		if ms := e.Methods[p]; len(ms) > 0 {
			parts[i] += " (required by " + strings.Join(ms, ", ") + ")"
		}
	}
	return "authz: permissions not in the authority's catalog: " + strings.Join(parts, ", ")
}

// VerifyPermissions asks an authorizer whether every one of perms is in the
// authority's catalog, with CheckPermissions calls carrying a token that is
// never valid: the authorizer refuses a permission outside its catalog with
// INVALID_ARGUMENT naming the check (checks[i].permission) before it looks
// at the token. It returns nil when all are known (or the authorizer has no
// catalog, from an authority that does not stream one), an
// *UnknownPermissionsError listing the unknown ones, or the authorizer's
// error when it could not answer: an authorizer that is not synced yet
// (UNAVAILABLE) is asked again every retry interval until ctx ends.
func VerifyPermissions(ctx context.Context, c PermissionsChecker, perms []string) error {
	todo := slices.Clone(perms)
	slices.Sort(todo)
	todo = slices.Compact(todo)
	var unknown []string
	for len(todo) > 0 {
		batch := todo[:min(len(todo), maxProbeChecks)]
		bad, err := firstUnknown(ctx, c, batch)
		if err != nil {
			return err
		}
		if bad < 0 {
			todo = todo[len(batch):]
			continue
		}
		unknown = append(unknown, batch[bad])
		todo = slices.Delete(todo, bad, bad+1)
	}
	if len(unknown) > 0 {
		return &UnknownPermissionsError{Permissions: unknown}
	}
	return nil
}

// verifyRetry is how long VerifyPermissions waits before asking again an
// authorizer that could not answer.
const verifyRetry = 200 * time.Millisecond

// firstUnknown returns the index of the first permission of batch the
// authorizer refuses as unknown, or -1 when it refuses none.
func firstUnknown(ctx context.Context, c PermissionsChecker, batch []string) (int, error) {
	req := &sigilv1.CheckPermissionsRequest{Token: probeToken, Checks: make([]*sigilv1.PermissionCheck, len(batch))}
	for i, p := range batch {
		req.Checks[i] = &sigilv1.PermissionCheck{Permission: p}
	}
	for {
		_, err := c.CheckPermissions(ctx, req)
		if err == nil {
			return -1, nil
		}
		if status.Code(err) == codes.InvalidArgument {
			field := violationField(err)
			for i := range batch {
				if field == "checks["+strconv.Itoa(i)+"].permission" {
					return i, nil
				}
			}
			return 0, fmt.Errorf("authz: verifying permissions: %w", err)
		}
		if status.Code(err) != codes.Unavailable && status.Code(err) != codes.DeadlineExceeded {
			return 0, fmt.Errorf("authz: verifying permissions: %w", err)
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("authz: verifying permissions: no authorizer answered before the deadline: %w", err)
		case <-time.After(verifyRetry):
		}
	}
}

// violationField returns the field of the first google.rpc.BadRequest
// field violation of err, or "".
func violationField(err error) string {
	for _, d := range status.Convert(err).Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) > 0 {
			return br.GetFieldViolations()[0].GetField()
		}
	}
	return ""
}

// VerifyCatalog checks every permission the guarded methods require
// against the authority's catalog through an authorizer
// (VerifyPermissions); a product calls it at start-up so that a typo fails
// there rather than denying every call. An *UnknownPermissionsError also
// names the methods requiring each unknown permission.
func (g *Guard) VerifyCatalog(ctx context.Context, c PermissionsChecker) error {
	methods := map[string][]string{}
	var perms []string
	for _, r := range g.reqs {
		if r.Public || r.Permission == "" {
			continue
		}
		if _, seen := methods[r.Permission]; !seen {
			perms = append(perms, r.Permission)
		}
		methods[r.Permission] = append(methods[r.Permission], r.Method)
	}
	err := VerifyPermissions(ctx, c, perms)
	var ue *UnknownPermissionsError
	if errors.As(err, &ue) {
		ue.Methods = map[string][]string{}
		for _, p := range ue.Permissions {
			ms := slices.Clone(methods[p])
			slices.Sort(ms)
			ue.Methods[p] = ms
		}
	}
	return err
}

// misconfigured is the answer to a call whose method requires a permission
// the authorizer refused as unknown: INTERNAL for the caller, an ERROR
// naming the method and the permission in the log, once per method.
func (g *Guard) misconfigured(method, permission string, err error) error {
	if _, logged := g.misconfiguredLogged.LoadOrStore(method, struct{}{}); !logged {
		g.logger.Error("the authorizer refused the method's permission as not in the authority's catalog: every call is refused (fix the annotation or the catalog)",
			"method", method, "permission", permission, "error", status.Convert(err).Message())
	}
	return deny(codes.Internal, ReasonMisconfigured, "authorization misconfigured")
}
