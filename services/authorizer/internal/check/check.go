// Package check holds what every check API of the authorizer shares: the
// readiness gate (synced and fresh, or UNAVAILABLE), the min_revision wait,
// the decision metrics, the mapping of decision reasons onto the API's
// DenyReason and the bound on organization ids. Package server (gRPC
// CheckPermission and CheckPermissions) and package extauthz (Envoy
// ext_authz Check) are built on it, so that they answer alike.
package check

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sigil-auth/sigil/pkg/grpcserver"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/services/authorizer/internal/decision"
)

// MaxOrgIDLen bounds an organization id given with a check; organization
// ids are short.
const MaxOrgIDLen = 256

// DefaultMaxWait bounds a min_revision wait for a call without a deadline
// when no other bound is given.
const DefaultMaxWait = 5 * time.Second

// DefaultMaxParkedWaits bounds the min_revision waits parked at once when
// no other bound is given: each holds a goroutine and its request.
const DefaultMaxParkedWaits = 1000

// Parking bounds the min_revision waits parked at once. A wait beyond the
// bound is RESOURCE_EXHAUSTED at once (never an answer without the
// revision) and counted as grpcserver.LimitParkedWaits.
type Parking struct {
	slots  chan struct{}
	limits *grpcserver.Limits
}

// NewParking returns a bound of max parked waits (DefaultMaxParkedWaits
// when not positive), counting refusals in limits (nil: not counted).
func NewParking(max int, limits *grpcserver.Limits) *Parking {
	if max <= 0 {
		max = DefaultMaxParkedWaits
	}
	return &Parking{slots: make(chan struct{}, max), limits: limits}
}

// park takes a slot, or fails with RESOURCE_EXHAUSTED when none is free.
// The returned function frees it.
func (p *Parking) park() (func(), error) {
	if p == nil {
		return func() {}, nil
	}
	select {
	case p.slots <- struct{}{}:
		return func() { <-p.slots }, nil
	default:
		return nil, p.limits.Refuse(grpcserver.LimitParkedWaits, "too many min_revision waits in progress; retry later or without min_revision")
	}
}

// Follower is what the check APIs need from the revocation follower.
type Follower interface {
	// Ready reports whether checks may be answered (synced and fresh).
	Ready() bool
	// Synced reports whether a first complete snapshot was applied.
	Synced() bool
	// WaitFor blocks until revision rev is applied and a probe of the
	// authority sent after the call began has confirmed the follower's
	// history, or ctx is done. The confirmation is what makes min_revision
	// sound across a restore: the restored authority reuses revision
	// numbers with other events, so "applied ≥ rev" alone may be about
	// another history.
	WaitFor(ctx context.Context, rev uint64) error
	// Revision returns the applied revision.
	Revision() uint64
}

// Ready returns nil when f is synced and fresh, else the UNAVAILABLE error
// every check API answers (fail closed).
func Ready(f Follower) error {
	if f.Ready() {
		return nil
	}
	if !f.Synced() {
		return status.Error(codes.Unavailable, "authorizer not yet synced with the authority")
	}
	// An optional method, so that followers of tests need not have it.
	if s, ok := f.(interface{ ClockSkewExceeded() bool }); ok && s.ClockSkewExceeded() {
		return status.Error(codes.Unavailable, "authorizer clock not known to be within --max-clock-skew of the authority's")
	}
	return status.Error(codes.Unavailable, "authorizer has no confirmation from the authority within --max-staleness")
}

// Await fails with UNAVAILABLE unless f is synced and fresh and, when
// minRevision is set, reaches it and has its history confirmed by a probe
// sent after the call began (Follower.WaitFor) before ctx's deadline (or
// maxWait when ctx has none; DefaultMaxWait when maxWait is not positive).
// A min_revision already applied waits too, for the confirmation: after a
// restore the number may be of the old history. Readiness is checked before
// and after the wait, which may outlast the freshness. A wait needs a slot
// of p (nil: unbounded); without one it is RESOURCE_EXHAUSTED at once.
func Await(ctx context.Context, f Follower, minRevision uint64, maxWait time.Duration, p *Parking) error {
	if err := Ready(f); err != nil {
		return err
	}
	if minRevision == 0 {
		return nil
	}
	release, err := p.park()
	if err != nil {
		return err
	}
	defer release()
	if _, ok := ctx.Deadline(); !ok {
		if maxWait <= 0 {
			maxWait = DefaultMaxWait
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, maxWait)
		defer cancel()
	}
	if err := f.WaitFor(ctx, minRevision); err != nil {
		return status.Errorf(codes.Unavailable, "min_revision %d not reached and confirmed by the authority before the deadline (applied revision %d)", minRevision, f.Revision())
	}
	return Ready(f)
}

// Metrics are the decision metrics every check API of the authorizer
// updates: decisions by reason and check latency.
type Metrics struct {
	decisions [decision.Allow + 1]prometheus.Counter // by reason
	latency   prometheus.Histogram
}

// NewMetrics makes the decision metrics and registers them on reg (nil: not
// exported).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{}
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sigil_authorizer_decisions_total",
		Help: "Permission decisions, by reason (allowed, or why denied), of every check API (CheckPermission, CheckPermissions, ext_authz Check).",
	}, []string{"reason"})
	// Resolved once, so a check does not look its label up.
	for _, r := range decision.Reasons() {
		m.decisions[r] = vec.WithLabelValues(r.String())
	}
	m.latency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "sigil_authorizer_check_duration_seconds",
		Help:    "Time to answer a CheckPermission, CheckPermissions or ext_authz Check call, from validation to answer, including min_revision waits.",
		Buckets: []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	})
	if reg != nil {
		reg.MustRegister(vec, m.latency)
	}
	return m
}

// Decided counts one decision.
func (m *Metrics) Decided(r decision.Reason) { m.decisions[r].Inc() }

// Observe records the latency of a call that started at start.
func (m *Metrics) Observe(start time.Time) { m.latency.Observe(time.Since(start).Seconds()) }

// DenyReason maps a decision reason onto the API's DenyReason: Allow is
// UNSPECIFIED, every other reason its own value, and anything unknown
// MALFORMED (fail closed).
func DenyReason(r decision.Reason) sigilv1.DenyReason {
	switch r {
	case decision.Allow:
		return sigilv1.DenyReason_DENY_REASON_UNSPECIFIED
	case decision.BadSignature:
		return sigilv1.DenyReason_DENY_REASON_BAD_SIGNATURE
	case decision.UnknownKey:
		return sigilv1.DenyReason_DENY_REASON_UNKNOWN_KEY
	case decision.KeyRevoked:
		return sigilv1.DenyReason_DENY_REASON_KEY_REVOKED
	case decision.NotYetValid:
		return sigilv1.DenyReason_DENY_REASON_NOT_YET_VALID
	case decision.Expired:
		return sigilv1.DenyReason_DENY_REASON_EXPIRED
	case decision.Revoked:
		return sigilv1.DenyReason_DENY_REASON_REVOKED
	case decision.OrgMismatch:
		return sigilv1.DenyReason_DENY_REASON_ORG_MISMATCH
	case decision.PermissionNotGranted:
		return sigilv1.DenyReason_DENY_REASON_PERMISSION_NOT_GRANTED
	case decision.ResourceNotGranted:
		return sigilv1.DenyReason_DENY_REASON_RESOURCE_NOT_GRANTED
	default:
		return sigilv1.DenyReason_DENY_REASON_MALFORMED
	}
}
