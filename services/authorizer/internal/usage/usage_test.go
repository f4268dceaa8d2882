package usage

import (
	"context"
	"io"
	"log/slog"
	"net"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/pkg/token"
)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

var t0 = time.Date(2026, 6, 1, 12, 0, 37, 500_000_000, time.UTC)

func newID(t testing.TB) token.ID {
	t.Helper()
	id, err := token.NewID()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// byID returns the drained uses by token.
func byID(uses []Use) map[token.ID]time.Time {
	out := map[token.ID]time.Time{}
	for _, u := range uses {
		if _, dup := out[u.ID]; dup {
			panic("a token drained twice")
		}
		out[u.ID] = u.Time
	}
	return out
}

// TestRecordCoalescesPerTokenToTheMinute: many uses of a token come out
// as one, at the latest minute recorded, truncated to the minute.
func TestRecordCoalescesPerTokenToTheMinute(t *testing.T) {
	c := &clock{t: t0}
	now := c.Now
	r := New(Options{})
	a, b := newID(t), newID(t)
	for range 100 {
		r.Record(a, now())
	}
	c.Set(t0.Add(3 * time.Minute))
	r.Record(a, now())
	r.Record(b, now())
	c.Set(t0.Add(time.Minute)) // the clock stepped back: the latest minute stays
	r.Record(a, now())
	if n := r.Pending(); n != 2 {
		t.Fatalf("%d pending, want 2", n)
	}
	got := byID(r.Drain())
	want := time.Date(2026, 6, 1, 12, 3, 0, 0, time.UTC)
	if len(got) != 2 || !got[a].Equal(want) || !got[b].Equal(want) {
		t.Fatalf("drained %v, want both tokens at %v", got, want)
	}
	if got[a].Location() != time.UTC || got[a].Second() != 0 || got[a].Nanosecond() != 0 {
		t.Fatalf("use time %v is not a whole UTC minute", got[a])
	}
	if r.Pending() != 0 || len(r.Drain()) != 0 {
		t.Fatal("drain left uses behind")
	}
}

// TestRecordDropsWhenFull: beyond the capacity, uses of new tokens are
// dropped and counted; tokens already pending still move to a later
// minute.
func TestRecordDropsWhenFull(t *testing.T) {
	c := &clock{t: t0}
	now := c.Now
	reg := prometheus.NewRegistry()
	r := New(Options{Capacity: numShards, Registerer: reg}) // one token per shard
	const n = 2000
	ids := make([]token.ID, n)
	for i := range ids {
		ids[i] = newID(t)
		r.Record(ids[i], now())
	}
	pending := r.Pending()
	if pending > numShards || pending < numShards/2 {
		t.Fatalf("%d pending with a capacity of %d", pending, numShards)
	}
	if got := testutil.ToFloat64(r.dropped); int(got) != n-pending {
		t.Fatalf("dropped counter %v, want %d", got, n-pending)
	}
	// The metric is exported under its documented name.
	if got, err := testutil.GatherAndCount(reg, "sigil_authorizer_usage_dropped_total"); err != nil || got != 1 {
		t.Fatalf("metric sigil_authorizer_usage_dropped_total: %d, %v", got, err)
	}
	// Record says whether it took the use.
	if r.Record(newID(t), now()) {
		t.Fatal("Record took a use it dropped")
	}
	dropped := testutil.ToFloat64(r.dropped)
	// A pending token coalesces without room.
	c.Set(t0.Add(5 * time.Minute))
	for _, id := range ids {
		r.Record(id, now())
	}
	later := time.Date(2026, 6, 1, 12, 5, 0, 0, time.UTC)
	if d := testutil.ToFloat64(r.dropped) - dropped; int(d) != n-pending {
		t.Fatalf("%v dropped on the second pass, want %d (every token not pending)", d, n-pending)
	}
	got := r.Drain()
	if len(got) != pending {
		t.Fatalf("drained %d, want %d", len(got), pending)
	}
	for _, u := range got {
		if !u.Time.Equal(later) {
			t.Fatalf("pending token kept %v, want %v", u.Time, later)
		}
	}
	// Once drained there is room again.
	fresh := newID(t)
	if !r.Record(fresh, now()) {
		t.Fatal("no room after a drain")
	}
	if _, ok := byID(r.Drain())[fresh]; !ok {
		t.Fatal("no room after a drain")
	}
}

// TestRecordConcurrent: concurrent recorders of overlapping tokens lose
// nothing within the capacity (run with -race).
func TestRecordConcurrent(t *testing.T) {
	r := New(Options{})
	ids := make([]token.ID, 500)
	for i := range ids {
		ids[i] = newID(t)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 5000 {
				r.Record(ids[(i*7+g)%len(ids)], t0)
			}
		})
	}
	wg.Wait()
	if got := byID(r.Drain()); len(got) != len(ids) {
		t.Fatalf("drained %d tokens, want %d", len(got), len(ids))
	}
}

// authority is a ReportTokenUse server on loopback that keeps the
// batches it gets and answers with fail when set.
type authority struct {
	sigilv1.UnimplementedTokenAuthorityServiceServer
	mu      sync.Mutex
	batches [][]*sigilv1.TokenUse
	auth    []string
	fail    error
	got     chan struct{}
}

func (a *authority) ReportTokenUse(ctx context.Context, req *sigilv1.ReportTokenUseRequest) (*sigilv1.ReportTokenUseResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	md, _ := metadata.FromIncomingContext(ctx)
	a.auth = append(a.auth, md.Get("authorization")...)
	if a.fail != nil {
		return nil, a.fail
	}
	a.batches = append(a.batches, req.GetUses())
	select {
	case a.got <- struct{}{}:
	default:
	}
	return &sigilv1.ReportTokenUseResponse{Recorded: int32(len(req.GetUses()))}, nil
}

func (a *authority) setFail(err error) { a.mu.Lock(); a.fail = err; a.mu.Unlock() }

func (a *authority) reported() map[string]time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]time.Time{}
	for _, b := range a.batches {
		for _, u := range b {
			out[u.GetTokenId()] = u.GetLastUseTime().AsTime()
		}
	}
	return out
}

func startAuthority(t *testing.T) (*authority, sigilv1.TokenAuthorityServiceClient) {
	t.Helper()
	a := &authority{got: make(chan struct{}, 1)}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	sigilv1.RegisterTokenAuthorityServiceServer(srv, a)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return a, sigilv1.NewTokenAuthorityServiceClient(conn)
}

// TestFlushBatchesWithTheCredential: pending uses go out in batches of at
// most MaxBatch, each with the watch credential, every token once.
func TestFlushBatchesWithTheCredential(t *testing.T) {
	a, client := startAuthority(t)
	c := &clock{t: t0}
	now := c.Now
	r := New(Options{Client: client, Credential: func() (string, error) { return "watch-cred", nil }, Logger: quiet()})
	const n = 2500
	want := map[string]time.Time{}
	for range n {
		id := newID(t)
		r.Record(id, now())
		want[id.String()] = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	}
	r.Flush(context.Background())
	a.mu.Lock()
	var sizes []int
	for _, b := range a.batches {
		sizes = append(sizes, len(b))
	}
	auth := append([]string(nil), a.auth...)
	a.mu.Unlock()
	sort.Ints(sizes)
	if len(sizes) != 3 || sizes[0] != 500 || sizes[1] != MaxBatch || sizes[2] != MaxBatch {
		t.Fatalf("batch sizes %v, want 500, 1000, 1000", sizes)
	}
	for _, h := range auth {
		if h != "Bearer watch-cred" {
			t.Fatalf("authorization %q, want the watch credential", h)
		}
	}
	got := a.reported()
	if len(got) != n {
		t.Fatalf("reported %d tokens, want %d", len(got), n)
	}
	for id, at := range want {
		if !got[id].Equal(at) {
			t.Fatalf("token %s reported at %v, want %v", id, got[id], at)
		}
	}
	if s := testutil.ToFloat64(r.sent); s != 3 {
		t.Fatalf("sent batches %v, want 3", s)
	}
	if r.Pending() != 0 {
		t.Fatal("uses left pending after a good flush")
	}
}

// TestFlushFailure: an authority away keeps the uses for the next report
// (merged with later ones); one that refuses the batch drops it. Both are
// counted as failed batches.
func TestFlushFailure(t *testing.T) {
	a, client := startAuthority(t)
	c := &clock{t: t0}
	now := c.Now
	r := New(Options{Client: client, Logger: quiet()})
	x, y := newID(t), newID(t)
	r.Record(x, now())
	a.setFail(status.Error(codes.Unavailable, "away"))
	r.Flush(context.Background())
	if n := r.Pending(); n != 1 {
		t.Fatalf("after an unavailable authority: %d pending, want 1", n)
	}
	c.Set(t0.Add(2 * time.Minute))
	r.Record(x, now())
	r.Record(y, now())
	a.setFail(nil)
	r.Flush(context.Background())
	got := a.reported()
	if want := time.Date(2026, 6, 1, 12, 2, 0, 0, time.UTC); len(got) != 2 || !got[x.String()].Equal(want) {
		t.Fatalf("reported %v, want both at %v", got, want)
	}

	z := newID(t)
	c.Set(t0.Add(3 * time.Minute))
	r.Record(z, now())
	a.setFail(status.Error(codes.InvalidArgument, "no"))
	r.Flush(context.Background())
	if n := r.Pending(); n != 0 {
		t.Fatalf("after a refused batch: %d pending, want 0 (dropped)", n)
	}
	if f := testutil.ToFloat64(r.failed); f != 2 {
		t.Fatalf("failed batches %v, want 2", f)
	}
}

// TestRunReportsEveryInterval: Run sends what was recorded without being
// asked, and once more when stopped.
func TestRunReportsEveryInterval(t *testing.T) {
	a, client := startAuthority(t)
	r := New(Options{Client: client, Interval: 20 * time.Millisecond, Logger: quiet()})
	now := time.Now
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	id := newID(t)
	r.Record(id, now())
	select {
	case <-a.got:
	case <-time.After(10 * time.Second):
		t.Fatal("no report from Run")
	}
	if _, ok := a.reported()[id.String()]; !ok {
		t.Fatal("the recorded token was not reported")
	}
	// A use recorded just before the stop goes out with the last flush.
	last := newID(t)
	r.Record(last, now())
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, ok := a.reported()[last.String()]; !ok {
		t.Fatal("the use recorded before the stop was not reported")
	}
	if err := New(Options{}).Run(context.Background()); err == nil {
		t.Fatal("Run without a client or interval did not fail")
	}
}
