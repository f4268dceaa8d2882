package server

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sigil-auth/sigil/pkg/grpcserver"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/pkg/scope"
	"github.com/sigil-auth/sigil/pkg/token"
	"github.com/sigil-auth/sigil/services/authorizer/internal/authoritytest"
	"github.com/sigil-auth/sigil/services/authorizer/internal/check"
	"github.com/sigil-auth/sigil/services/authorizer/internal/decision"
	"github.com/sigil-auth/sigil/services/authorizer/internal/follower"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// env is an authorizer (follower, decider, service on the shared gRPC
// server) following a fake authority, reached over bufconn.
type env struct {
	fake   *authoritytest.Fake
	sess   *authoritytest.Session
	fol    *follower.Follower
	clock  *authoritytest.Clock
	client sigilv1.AuthorizerServiceClient
	codec  *token.Codec
	priv   ed25519.PrivateKey
	pub    ed25519.PublicKey
	waits  chan uint64 // the revision of every min_revision wait the server begins
	limits *grpcserver.Limits
	ticks  atomic.Int64
}

// waitSignal is a follower that tells the test when the server begins a
// min_revision wait.
type waitSignal struct {
	*follower.Follower
	waits chan<- uint64
}

func (w waitSignal) WaitFor(ctx context.Context, rev uint64) error {
	select {
	case w.waits <- rev:
	default:
	}
	return w.Follower.WaitFor(ctx, rev)
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{clock: authoritytest.NewClock(t0), waits: make(chan uint64, 16)}
	var conn *grpc.ClientConn
	e.fake, conn = authoritytest.Start(t)
	e.fol = follower.New(follower.Options{
		Client: sigilv1.NewTokenAuthorityServiceClient(conn), Now: e.clock.Now,
		// The fake clock only moves forward here, so it can stand for the
		// monotonic source too, with a nanosecond more at every reading as
		// a real clock moves between two events (a probe sent after a
		// check began reads a later time).
		Elapsed:      func() time.Duration { return e.clock.Now().Sub(t0) + time.Duration(e.ticks.Add(1)) },
		MaxStaleness: 30 * time.Second, Retention: time.Minute,
		BackoffBase: 5 * time.Millisecond, BackoffMax: 20 * time.Millisecond,
	})
	var err error
	e.codec, err = token.NewCodec("")
	if err != nil {
		t.Fatal(err)
	}
	e.pub, e.priv, _ = ed25519.GenerateKey(rand.Reader)
	dec, err := decision.New(decision.Options{Codec: e.codec, State: e.fol, Leeway: 30 * time.Second, CacheSize: 100, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = e.fol.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	// The bounds of the real service, with room for testParkedWaits waits.
	e.limits = grpcserver.NewLimits(nil)
	srv := grpcserver.New(grpcserver.Options{
		Limits: e.limits, MaxRecvMsgSize: MaxCheckPermissionsRequestSize, MethodMaxRecvSize: MethodMaxRecvSize(),
	})
	srv.RegisterService(&sigilv1.AuthorizerService_ServiceDesc, New(Options{
		Decider: dec, Follower: waitSignal{e.fol, e.waits}, MaxWait: 200 * time.Millisecond, Registerer: prometheus.NewRegistry(),
		Parking: check.NewParking(testParkedWaits, e.limits),
	}))
	e.client = sigilv1.NewAuthorizerServiceClient(authoritytest.Serve(t, srv))
	return e
}

// sync completes a snapshot at epoch e1, revision 10, with key k1, after
// the built-in catalog, as an authority without a catalog file streams.
func (e *env) sync(t *testing.T) {
	t.Helper()
	e.syncWith(t, authoritytest.BuiltinCatalog())
}

// syncWith is sync with the stream's first messages (catalog) first.
func (e *env) syncWith(t *testing.T, first ...*sigilv1.WatchRevocationsResponse) {
	t.Helper()
	e.sess = e.fake.Next(t)
	e.sess.Send(t, first...)
	e.sess.Send(t,
		authoritytest.Chunk("e1", 10, []*sigilv1.SigningKey{authoritytest.Key("k1", sigilv1.SigningKeyState_SIGNING_KEY_STATE_ACTIVE, e.pub)}),
		authoritytest.SnapshotEnd("e1", 10))
	e.waitRev(t, 10)
}

func (e *env) waitRev(t *testing.T, rev uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.fol.WaitApplied(ctx, rev); err != nil {
		t.Fatalf("revision %d not applied: %v", rev, err)
	}
}

func (e *env) mint(t *testing.T, org string, grants ...scope.Grant) (string, token.ID) {
	t.Helper()
	id, _ := token.NewID()
	tok, err := e.codec.Mint(token.Claims{ID: id, OrgID: org, KeyID: "k1", IssuedAt: t0.Add(-time.Hour), ExpiresAt: t0.Add(24 * time.Hour), Grants: grants}, e.priv)
	if err != nil {
		t.Fatal(err)
	}
	return tok, id
}

var renewExample = scope.Grant{Permissions: []string{"domain:renew", "domain:view"}, Resources: []string{"domains/example.com"}}

func checkPermission(t *testing.T, e *env, req *sigilv1.CheckPermissionRequest) (*sigilv1.CheckPermissionResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return e.client.CheckPermission(ctx, req)
}

func wantCode(t *testing.T, err error, code codes.Code, field string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code {
		t.Fatalf("code = %v (%v), want %v", st.Code(), err, code)
	}
	if field == "" {
		return
	}
	if !strings.HasPrefix(st.Message(), field+":") {
		t.Errorf("message %q does not name %q", st.Message(), field)
	}
	var found bool
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				found = found || v.GetField() == field
			}
		}
	}
	if !found {
		t.Errorf("no BadRequest field violation for %q", field)
	}
}

func TestCheckPermissionValidation(t *testing.T) {
	e := newEnv(t)
	e.sync(t)
	tok, _ := e.mint(t, "org-a", renewExample)
	tests := []struct {
		name  string
		req   *sigilv1.CheckPermissionRequest
		field string
	}{
		{"no token", &sigilv1.CheckPermissionRequest{Permission: "domain:renew"}, "token"},
		{"no permission", &sigilv1.CheckPermissionRequest{Token: tok}, "permission"},
		{"permission without action", &sigilv1.CheckPermissionRequest{Token: tok, Permission: "domain"}, "permission"},
		{"a token in the permission field", &sigilv1.CheckPermissionRequest{Token: tok, Permission: tok}, "permission"},
		{"bad resource", &sigilv1.CheckPermissionRequest{Token: tok, Permission: "domain:renew", Resource: "domains/../x"}, "resource"},
		{"resource with a wildcard", &sigilv1.CheckPermissionRequest{Token: tok, Permission: "domain:renew", Resource: "domains/*"}, "resource"},
		{"org id too long", &sigilv1.CheckPermissionRequest{Token: tok, Permission: "domain:renew", OrgId: strings.Repeat("o", 300)}, "org_id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := checkPermission(t, e, tc.req)
			wantCode(t, err, codes.InvalidArgument, tc.field)
			if strings.Contains(err.Error(), tok) {
				t.Fatal("error message echoes the token")
			}
		})
	}
}

func TestCheckPermissionsValidation(t *testing.T) {
	e := newEnv(t)
	e.sync(t)
	tok, _ := e.mint(t, "org-a", renewExample)
	many := make([]*sigilv1.PermissionCheck, MaxChecks+1)
	for i := range many {
		many[i] = &sigilv1.PermissionCheck{Permission: "domain:view"}
	}
	tests := []struct {
		name  string
		req   *sigilv1.CheckPermissionsRequest
		field string
	}{
		{"no checks", &sigilv1.CheckPermissionsRequest{Token: tok}, "checks"},
		{"too many checks", &sigilv1.CheckPermissionsRequest{Token: tok, Checks: many}, "checks"},
		{"no token", &sigilv1.CheckPermissionsRequest{Checks: []*sigilv1.PermissionCheck{{Permission: "domain:view"}}}, "token"},
		{"second check without permission", &sigilv1.CheckPermissionsRequest{Token: tok, Checks: []*sigilv1.PermissionCheck{{Permission: "domain:view"}, {}}}, "checks[1].permission"},
		{"bad resource", &sigilv1.CheckPermissionsRequest{Token: tok, Checks: []*sigilv1.PermissionCheck{{Permission: "domain:view", Resource: "/x"}}}, "checks[0].resource"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.client.CheckPermissions(context.Background(), tc.req)
			wantCode(t, err, codes.InvalidArgument, tc.field)
		})
	}
}

func TestUnavailableUntilSynced(t *testing.T) {
	e := newEnv(t)
	tok, _ := e.mint(t, "org-a", renewExample)
	s := e.fake.Next(t)
	req := &sigilv1.CheckPermissionRequest{Token: tok, Permission: "domain:renew", Resource: "domains/example.com"}
	_, err := checkPermission(t, e, req)
	wantCode(t, err, codes.Unavailable, "")
	// Half a snapshot is not a snapshot.
	s.Send(t, authoritytest.Chunk("e1", 10, []*sigilv1.SigningKey{authoritytest.Key("k1", sigilv1.SigningKeyState_SIGNING_KEY_STATE_ACTIVE, e.pub)}))
	_, err = checkPermission(t, e, req)
	wantCode(t, err, codes.Unavailable, "")
	s.Send(t, authoritytest.SnapshotEnd("e1", 10))
	e.waitRev(t, 10)
	resp, err := checkPermission(t, e, req)
	if err != nil || !resp.GetAllowed() {
		t.Fatalf("after snapshot: %v, %v", resp, err)
	}
}

func TestCheckPermissionDecisions(t *testing.T) {
	e := newEnv(t)
	e.sync(t)
	tok, id := e.mint(t, "org-a", renewExample)

	resp, err := checkPermission(t, e, &sigilv1.CheckPermissionRequest{Token: tok, Permission: "domain:renew", Resource: "domains/example.com/records/www", OrgId: "org-a"})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.GetAllowed() || resp.GetReason() != sigilv1.DenyReason_DENY_REASON_UNSPECIFIED ||
		resp.GetTokenId() != id.String() || resp.GetOrgId() != "org-a" ||
		!resp.GetExpireTime().AsTime().Equal(t0.Add(24*time.Hour)) || resp.GetRevision() != 10 {
		t.Fatalf("allowed check: %v", resp)
	}

	for _, tc := range []struct {
		name       string
		req        *sigilv1.CheckPermissionRequest
		want       sigilv1.DenyReason
		reportedID bool
	}{
		{"forged", &sigilv1.CheckPermissionRequest{Token: tok[:len(tok)-1] + otherChar(tok[len(tok)-1]), Permission: "domain:renew"}, sigilv1.DenyReason_DENY_REASON_MALFORMED, false},
		{"oversized", &sigilv1.CheckPermissionRequest{Token: strings.Repeat("x", token.MaxLen+1), Permission: "domain:renew"}, sigilv1.DenyReason_DENY_REASON_MALFORMED, false},
		{"other org", &sigilv1.CheckPermissionRequest{Token: tok, Permission: "domain:renew", OrgId: "org-b"}, sigilv1.DenyReason_DENY_REASON_ORG_MISMATCH, true},
		{"other permission", &sigilv1.CheckPermissionRequest{Token: tok, Permission: "billing:view"}, sigilv1.DenyReason_DENY_REASON_PERMISSION_NOT_GRANTED, true},
		{"no resource", &sigilv1.CheckPermissionRequest{Token: tok, Permission: "domain:renew"}, sigilv1.DenyReason_DENY_REASON_RESOURCE_NOT_GRANTED, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := checkPermission(t, e, tc.req)
			if err != nil {
				t.Fatalf("a deny is an answer, got error %v", err)
			}
			if resp.GetAllowed() || resp.GetReason() != tc.want {
				t.Fatalf("got %v, want deny %v", resp, tc.want)
			}
			if (resp.GetTokenId() != "") != tc.reportedID || (resp.GetExpireTime() != nil) != tc.reportedID {
				t.Fatalf("token details reported = %v, want %v", resp.GetTokenId() != "", tc.reportedID)
			}
		})
	}

	// Revocation on the stream: the next check (cache hit) says REVOKED.
	// (The authority follows each batch of events with a checkpoint, which
	// carries the digest a probe's answer is held against.)
	e.sess.Send(t, authoritytest.TokenRevoked(12, id, t0.Add(24*time.Hour)), authoritytest.Checkpoint(12, t0))
	resp, err = checkPermission(t, e, &sigilv1.CheckPermissionRequest{Token: tok, Permission: "domain:renew", Resource: "domains/example.com", MinRevision: 12})
	if err != nil || resp.GetAllowed() || resp.GetReason() != sigilv1.DenyReason_DENY_REASON_REVOKED || resp.GetRevision() != 12 {
		t.Fatalf("after revocation: %v, %v", resp, err)
	}
}

func TestCheckPermissions(t *testing.T) {
	e := newEnv(t)
	e.sync(t)
	tok, id := e.mint(t, "org-a", renewExample, scope.Grant{Permissions: []string{"billing:view"}})
	resp, err := e.client.CheckPermissions(context.Background(), &sigilv1.CheckPermissionsRequest{Token: tok, Checks: []*sigilv1.PermissionCheck{
		{Permission: "domain:renew", Resource: "domains/example.com"},
		{Permission: "domain:renew", Resource: "domains/other.org"},
		{Permission: "billing:view"},
		{Permission: "cloud:manage"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := []sigilv1.DenyReason{
		sigilv1.DenyReason_DENY_REASON_UNSPECIFIED, sigilv1.DenyReason_DENY_REASON_RESOURCE_NOT_GRANTED,
		sigilv1.DenyReason_DENY_REASON_UNSPECIFIED, sigilv1.DenyReason_DENY_REASON_PERMISSION_NOT_GRANTED,
	}
	if len(resp.GetResults()) != len(want) || resp.GetTokenId() != id.String() || resp.GetRevision() != 10 {
		t.Fatalf("response %v", resp)
	}
	for i, r := range resp.GetResults() {
		if r.GetReason() != want[i] || r.GetAllowed() != (want[i] == sigilv1.DenyReason_DENY_REASON_UNSPECIFIED) {
			t.Errorf("result %d = %v, want %v", i, r, want[i])
		}
	}
	// A token-level denial applies to every check and reports nothing.
	resp, err = e.client.CheckPermissions(context.Background(), &sigilv1.CheckPermissionsRequest{Token: tok, OrgId: "org-b", Checks: []*sigilv1.PermissionCheck{{Permission: "billing:view"}, {Permission: "domain:view"}}})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range resp.GetResults() {
		if r.GetAllowed() || r.GetReason() != sigilv1.DenyReason_DENY_REASON_ORG_MISMATCH {
			t.Errorf("result %d = %v, want ORG_MISMATCH", i, r)
		}
	}
}

func TestMinRevision(t *testing.T) {
	e := newEnv(t)
	e.sync(t)
	tok, id := e.mint(t, "org-a", renewExample)
	req := &sigilv1.CheckPermissionRequest{Token: tok, Permission: "domain:view", Resource: "domains/example.com", MinRevision: 20}

	t.Run("deadline passes", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err := e.client.CheckPermission(ctx, req)
		if st, _ := status.FromError(err); st.Code() != codes.Unavailable && st.Code() != codes.DeadlineExceeded {
			t.Fatalf("code %v, want UNAVAILABLE (or the client's own DEADLINE_EXCEEDED)", st.Code())
		}
	})
	t.Run("no deadline: bounded by max wait", func(t *testing.T) {
		got := make(chan error, 1)
		go func() {
			_, err := e.client.CheckPermission(context.Background(), req)
			got <- err
		}()
		select {
		case err := <-got:
			// Ended by MaxWait: the revision was not reached, and the
			// server says so (not the client's deadline: it has none).
			wantCode(t, err, codes.Unavailable, "")
			if !strings.Contains(err.Error(), "min_revision 20 not reached") {
				t.Fatalf("err = %v, want the min_revision wait to have ended", err)
			}
		case <-time.After(time.Minute):
			t.Fatal("a call without a deadline waits for ever")
		}
	})
	t.Run("revision arrives", func(t *testing.T) {
		type result struct {
			resp *sigilv1.CheckPermissionResponse
			err  error
		}
		for len(e.waits) > 0 {
			<-e.waits // the earlier subtests' waits
		}
		got := make(chan result, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			r, err := e.client.CheckPermission(ctx, req)
			got <- result{r, err}
		}()
		// The revocation comes once the call is waiting for it.
		select {
		case rev := <-e.waits:
			if rev != 20 {
				t.Fatalf("waiting for revision %d, want 20", rev)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the call did not wait for min_revision")
		}
		e.sess.Send(t, authoritytest.TokenRevoked(20, id, t0.Add(24*time.Hour)), authoritytest.Checkpoint(20, t0))
		r := <-got
		if r.err != nil || r.resp.GetAllowed() || r.resp.GetReason() != sigilv1.DenyReason_DENY_REASON_REVOKED || r.resp.GetRevision() < 20 {
			t.Fatalf("got %v, %v; want REVOKED at revision 20", r.resp, r.err)
		}
	})
}

func TestStaleThenRecovered(t *testing.T) {
	e := newEnv(t)
	e.sync(t)
	tok, _ := e.mint(t, "org-a", renewExample)
	req := &sigilv1.CheckPermissionRequest{Token: tok, Permission: "domain:view", Resource: "domains/example.com"}
	if resp, err := checkPermission(t, e, req); err != nil || !resp.GetAllowed() {
		t.Fatalf("fresh: %v %v", resp, err)
	}
	// Nothing confirmed by the authority for longer than max staleness.
	e.fake.SetConfirm(func(*sigilv1.ConfirmHistoryRequest) (*sigilv1.ConfirmHistoryResponse, error) {
		return nil, status.Error(codes.Unavailable, "down")
	})
	e.clock.Add(31 * time.Second)
	_, err := checkPermission(t, e, req)
	wantCode(t, err, codes.Unavailable, "")
	e.fake.SetConfirm(nil)
	// A checkpoint's arrival proves nothing about freshness; the next
	// answered probe does.
	e.sess.Send(t, authoritytest.Checkpoint(11, t0))
	e.waitRev(t, 11)
	e.fol.RequestProbe()
	deadline := time.Now().Add(5 * time.Second)
	for !e.fol.Ready() && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
	if resp, err := checkPermission(t, e, req); err != nil || !resp.GetAllowed() || resp.GetRevision() != 11 {
		t.Fatalf("recovered: %v %v", resp, err)
	}
}

// panickyState verifies tokens like staticState but panics when asked about
// key state and revocations.
type panickyState struct{ staticState }

func (panickyState) Inspect(string, token.ID) (ed25519.PublicKey, bool, bool, bool, uint64) {
	panic("state exploded")
}

func TestPanicIsAnErrorNeverAnAllow(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	codec, _ := token.NewCodec("")
	id, _ := token.NewID()
	tok, err := codec.Mint(token.Claims{ID: id, OrgID: "org-a", KeyID: "k1", IssuedAt: time.Now().Add(-time.Hour), ExpiresAt: time.Now().Add(time.Hour),
		Grants: []scope.Grant{{Permissions: []string{"domain:view"}}}}, priv)
	if err != nil {
		t.Fatal(err)
	}
	st := panickyState{staticState{pub: pub}}
	dec, _ := decision.New(decision.Options{Codec: codec, State: st, CacheSize: 10})
	srv := grpcserver.New(grpcserver.Options{})
	srv.RegisterService(&sigilv1.AuthorizerService_ServiceDesc, New(Options{Decider: dec, Follower: st}))
	client := sigilv1.NewAuthorizerServiceClient(authoritytest.Serve(t, srv))
	resp, err := client.CheckPermission(context.Background(), &sigilv1.CheckPermissionRequest{Token: tok, Permission: "domain:view"})
	if status.Code(err) != codes.Internal || resp.GetAllowed() {
		t.Fatalf("CheckPermission = %v, %v; want INTERNAL", resp, err)
	}
	many, err := client.CheckPermissions(context.Background(), &sigilv1.CheckPermissionsRequest{Token: tok, Checks: []*sigilv1.PermissionCheck{{Permission: "domain:view"}}})
	if status.Code(err) != codes.Internal || many != nil {
		t.Fatalf("CheckPermissions = %v, %v; want INTERNAL", many, err)
	}
}

// otherChar returns a checksum character different from c, so that a
// "forged" token is never the original one by chance (1 in 62 with a fixed
// replacement).
func otherChar(c byte) string {
	if c == 'x' {
		return "y"
	}
	return "x"
}
