package abuse

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

var (
	abuse       = flag.Bool("abuse", false, "run the abuse measurement (TestAbuse) against the real binaries on loopback")
	abuseConns  = flag.Int("abuse.conns", 1000, "connections each sending the largest accepted request")
	abuseWatch  = flag.Int("abuse.watch", 200, "stalled WatchRevocations streams")
	abuseWaits  = flag.Int("abuse.waits", 5000, "parked min_revision waits attempted")
	abuseTokens = flag.Int("abuse.tokens", 4000, "revoked tokens in the snapshot the stalled streams get")
	abuseCap    = flag.Int("abuse.maxconns", 0, "--max-connections of both services (0: their default, 1024)")
)

// capArgs passes -abuse.maxconns to a service.
func capArgs() []string {
	if *abuseCap > 0 {
		return []string{"--max-connections", fmt.Sprint(*abuseCap)}
	}
	return nil
}

// Targets of the measurement.
const (
	targetRSSMiB = 256
	settleBound  = 10 * time.Second // goroutines back to baseline within this of the clients leaving
	slack        = 5                // goroutines above baseline still counted as back (metrics scrapes, timers)
)

// TestAbuse measures what the attacks of the hardening issue cost each
// service now: peak RSS (VmHWM) and goroutines after the clients leave.
// Run: go test ./internal/abuse -run TestAbuse -abuse -v
func TestAbuse(t *testing.T) {
	if !*abuse {
		t.Skip("abuse measurement: run with -abuse")
	}
	t.Run("authorizer/connections", abuseAuthorizerConnections)
	t.Run("authorizer/1MiB-requests", abuseAuthorizerHuge)
	t.Run("authorizer/parked-waits", abuseParkedWaits)
	t.Run("authority/connections", abuseAuthorityConnections)
	t.Run("authority/stalled-watch", abuseStalledWatch)
}

// codeCounts counts results by code.
type codeCounts struct {
	mu sync.Mutex
	m  map[codes.Code]int
}

func (c *codeCounts) add(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[codes.Code]int{}
	}
	c.m[status.Code(err)]++
}

func (c *codeCounts) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var parts []string
	for code, n := range c.m {
		parts = append(parts, fmt.Sprintf("%v=%d", code, n))
	}
	return strings.Join(parts, " ")
}

// settle waits until s's goroutines are back to baseline (within slack),
// at most settleBound, and returns the last count and the time it took.
func settle(t *testing.T, s *svc, baseline float64) (float64, time.Duration) {
	t.Helper()
	start := time.Now()
	for {
		g := s.metric(t, "go_goroutines")
		if g <= baseline+slack || time.Since(start) > settleBound {
			return g, time.Since(start)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func report(t *testing.T, s *svc, what string, rssBefore, baseline, peakGoroutines float64, results *codeCounts) {
	t.Helper()
	after, took := settle(t, s, baseline)
	rss := s.peakRSS(t)
	refusals := s.metric(t, `sigil_limit_exceeded_total{limit="connections"}`) + s.metric(t, `sigil_limit_exceeded_total{limit="message_size"}`)
	t.Logf("RESULT %s: RSS before %.0f MiB, peak RSS %.0f MiB (target ≤ %d); goroutines baseline %.0f, peak %.0f, %.0f after the clients left (%.1fs); answers: %s; limit refusals (connections+message_size): %.0f",
		what, rssBefore, rss, targetRSSMiB, baseline, peakGoroutines, after, took.Seconds(), results, refusals)
	if rss > targetRSSMiB {
		t.Errorf("%s: peak RSS %.0f MiB over the %d MiB target", what, rss, targetRSSMiB)
	}
	if after > baseline+slack {
		t.Errorf("%s: %.0f goroutines %s after the clients left, baseline %.0f", what, after, settleBound, baseline)
	}
}

// flood opens n connections to addr and sends, on each, req through call;
// it returns the answers by code and the highest goroutine count seen
// while the connections were open.
func flood(t *testing.T, s *svc, n int, call func(*grpc.ClientConn) error) (*codeCounts, float64) {
	t.Helper()
	results := &codeCounts{}
	conns := make([]*grpc.ClientConn, n)
	for i := range conns {
		conns[i] = dial(t, s.addr)
	}
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results.add(call(c))
		}()
	}
	wg.Wait()
	peak := s.metric(t, "go_goroutines") // every connection still open
	for _, c := range conns {
		c.Close()
	}
	return results, peak
}

// abuseAuthorizerHuge replays the original attack: every connection sends
// a 1 MiB CheckPermission.
func abuseAuthorizerHuge(t *testing.T) {
	authority, dir := startAuthority(t)
	authorizer := startAuthorizer(t, authority, dir, capArgs()...)
	baseline, rssBefore := authorizer.metric(t, "go_goroutines"), authorizer.rss(t)
	req := &sigilv1.CheckPermissionRequest{Token: strings.Repeat("t", 1<<20), Permission: "domain:view"}
	results, peak := flood(t, authorizer, *abuseConns, func(c *grpc.ClientConn) error {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		_, err := sigilv1.NewAuthorizerServiceClient(c).CheckPermission(ctx, req)
		return err
	})
	report(t, authorizer, fmt.Sprintf("authorizer, %d connections × 1 MiB CheckPermission", *abuseConns), rssBefore, baseline, peak, results)
}

func abuseAuthorizerConnections(t *testing.T) {
	authority, dir := startAuthority(t)
	authorizer := startAuthorizer(t, authority, dir, capArgs()...)
	baseline, rssBefore := authorizer.metric(t, "go_goroutines"), authorizer.rss(t)
	// The largest request the authorizer accepts: CheckPermissions with
	// every field at its bound (its token is garbage: denials).
	req := &sigilv1.CheckPermissionsRequest{Token: "sigil_pat_" + strings.Repeat("t", 4096-10), OrgId: strings.Repeat("o", 256)}
	for range 100 {
		req.Checks = append(req.Checks, &sigilv1.PermissionCheck{
			Permission: strings.Repeat("p", 32) + ":" + strings.Repeat("a", 32),
			Resource:   "domains/" + strings.Repeat("r", 504),
		})
	}
	results, peak := flood(t, authorizer, *abuseConns, func(c *grpc.ClientConn) error {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		_, err := sigilv1.NewAuthorizerServiceClient(c).CheckPermissions(ctx, req)
		return err
	})
	report(t, authorizer, fmt.Sprintf("authorizer, %d connections × largest CheckPermissions", *abuseConns), rssBefore, baseline, peak, results)
}

func abuseParkedWaits(t *testing.T) {
	authority, dir := startAuthority(t)
	authorizer := startAuthorizer(t, authority, dir)
	baseline, rssBefore := authorizer.metric(t, "go_goroutines"), authorizer.rss(t)
	resp, err := authority.authority().CreateToken(operator(t, dir), &sigilv1.CreateTokenRequest{OrgId: "org-a", Name: "waiter",
		Grants: []*sigilv1.Grant{{Permissions: []string{"domain:view"}}}, Expiry: &sigilv1.CreateTokenRequest_Ttl{Ttl: durationpb.New(30 * 24 * time.Hour)}, CreatedBy: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	// Calls spread over connections of at most 100 streams each (the
	// default per-connection bound), every one waiting for a revision that
	// never comes, until its 5 s deadline.
	const perConn = 100
	nConns := (*abuseWaits + perConn - 1) / perConn
	conns := make([]*grpc.ClientConn, nConns)
	for i := range conns {
		conns[i] = dial(t, authorizer.addr)
	}
	results := &codeCounts{}
	var wg sync.WaitGroup
	for i := range *abuseWaits {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := sigilv1.NewAuthorizerServiceClient(conns[i%nConns]).CheckPermission(ctx, &sigilv1.CheckPermissionRequest{
				Token: resp.GetToken(), Permission: "domain:view", MinRevision: 1 << 60})
			if status.Code(err) == codes.DeadlineExceeded || status.Code(err) == codes.Unavailable {
				err = status.Error(codes.Unavailable, "parked until the deadline")
			}
			results.add(err)
		}()
	}
	time.Sleep(2 * time.Second) // every call is parked or refused by now
	peak := authorizer.metric(t, "go_goroutines")
	parked := authorizer.metric(t, `sigil_limit_exceeded_total{limit="parked_waits"}`)
	wg.Wait()
	for _, c := range conns {
		c.Close()
	}
	t.Logf("RESULT parked waits refused at once (sigil_limit_exceeded_total{limit=\"parked_waits\"}): %.0f of %d", parked, *abuseWaits)
	report(t, authorizer, fmt.Sprintf("authorizer, %d min_revision waits", *abuseWaits), rssBefore, baseline, peak, results)
}

func abuseAuthorityConnections(t *testing.T) {
	authority, dir := startAuthority(t, capArgs()...)
	baseline, rssBefore := authority.metric(t, "go_goroutines"), authority.rss(t)
	op := operator(t, dir)
	// The largest request the authority accepts in size (just under its
	// 64 KiB bound); its description is too long, so it is refused after
	// authentication, having been read whole.
	req := &sigilv1.CreateTokenRequest{OrgId: "org-a", Name: "flood", Description: strings.Repeat("d", 63<<10)}
	results, peak := flood(t, authority, *abuseConns, func(c *grpc.ClientConn) error {
		ctx, cancel := context.WithTimeout(op, 60*time.Second)
		defer cancel()
		_, err := sigilv1.NewTokenAuthorityServiceClient(c).CreateToken(ctx, req)
		return err
	})
	report(t, authority, fmt.Sprintf("authority, %d connections × 63 KiB CreateToken", *abuseConns), rssBefore, baseline, peak, results)
}

func abuseStalledWatch(t *testing.T) {
	authority, dir := startAuthority(t)
	op := operator(t, dir)
	ac := authority.authority()
	// A snapshot larger than the HTTP/2 windows of a client that never
	// reads.
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < *abuseTokens; i += 16 {
				if _, err := ac.CreateToken(op, &sigilv1.CreateTokenRequest{OrgId: "org-a", Name: fmt.Sprint("t", i), CreatedBy: "alice",
					Grants: []*sigilv1.Grant{{Permissions: []string{"domain:view"}}}, Expiry: &sigilv1.CreateTokenRequest_Ttl{Ttl: durationpb.New(30 * 24 * time.Hour)}}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if _, err := ac.RevokeTokens(op, &sigilv1.RevokeTokensRequest{OrgId: "org-a"}); err != nil {
		t.Fatal(err)
	}
	baseline, rssBefore := authority.metric(t, "go_goroutines"), authority.rss(t)
	cred := withCred(context.Background(), watchCred(t, dir))
	results := &codeCounts{}
	conns := make([]*grpc.ClientConn, *abuseWatch)
	for i := range conns {
		conns[i] = dial(t, authority.addr, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
		if _, err := sigilv1.NewTokenAuthorityServiceClient(conns[i]).WatchRevocations(cred, &sigilv1.WatchRevocationsRequest{}); err != nil {
			results.add(err)
		}
	}
	time.Sleep(time.Second)
	peak := authority.metric(t, "go_goroutines")
	// The send timeout (5 s) cuts every stream off; the clients, which
	// never read, are still there.
	deadline := time.Now().Add(30 * time.Second)
	for strings.Count(authority.Logs.String(), `"msg":"revocation stream cut off: consumer too slow"`) < *abuseWatch && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	cut := strings.Count(authority.Logs.String(), `"msg":"revocation stream cut off: consumer too slow"`)
	g, took := settle(t, authority, baseline)
	t.Logf("RESULT authority, %d stalled streams: %d cut off; goroutines %.0f, %.1fs after the cut-offs, clients still connected (baseline %.0f)", *abuseWatch, cut, g, took.Seconds(), baseline)
	for _, c := range conns {
		c.Close()
	}
	report(t, authority, fmt.Sprintf("authority, %d stalled WatchRevocations streams", *abuseWatch), rssBefore, baseline, peak, results)
}
