package grpcserver

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// panicHealth is a health service whose Check panics and whose Watch blocks
// until its context ends: enough to drive the chain without a test proto.
type panicHealth struct {
	healthpb.UnimplementedHealthServer
	block chan struct{}
}

func (p *panicHealth) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	panic("boom with secret sigil_pat_should_not_leak")
}

func (p *panicHealth) Watch(_ *healthpb.HealthCheckRequest, s healthpb.Health_WatchServer) error {
	<-p.block // ignores its context on purpose: a stream that never ends by itself
	return nil
}

type fixture struct {
	srv  *Server
	conn *grpc.ClientConn
	logs *bytes.Buffer
	reg  *prometheus.Registry
}

func start(t *testing.T, impl *panicHealth) *fixture {
	t.Helper()
	logs := &bytes.Buffer{}
	reg := prometheus.NewRegistry()
	srv := New(Options{Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), Registerer: reg})
	if impl != nil {
		desc := healthpb.Health_ServiceDesc
		desc.ServiceName = "test.PanicHealth"
		srv.RegisterService(&desc, impl)
	}
	lis := bufconn.Listen(1 << 20)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		srv.Shutdown(time.Second)
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return &fixture{srv: srv, conn: conn, logs: logs, reg: reg}
}

func TestHealthStartsNotServing(t *testing.T) {
	f := start(t, nil)
	c := healthpb.NewHealthClient(f.conn)
	ctx := context.Background()
	got, err := c.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("status = %v, want NOT_SERVING", got.Status)
	}
	f.srv.SetServing(true)
	got, err = c.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("status = %v, want SERVING", got.Status)
	}
	f.srv.SetServing(false)
	got, err = c.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("status = %v, want NOT_SERVING again", got.Status)
	}
}

func TestPanicBecomesInternalWithoutLeak(t *testing.T) {
	f := start(t, &panicHealth{block: make(chan struct{})})
	err := f.conn.Invoke(metadata.AppendToOutgoingContext(context.Background(), RequestIDHeader, "req-42"),
		"/test.PanicHealth/Check", &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{})
	if status.Code(err) != codes.Internal {
		t.Fatalf("code = %v, want Internal", status.Code(err))
	}
	if strings.Contains(err.Error(), "sigil_pat_") {
		t.Fatalf("error leaks the panic value: %v", err)
	}
	if strings.Contains(f.logs.String(), "sigil_pat_") {
		t.Fatalf("log leaks the panic value: %s", f.logs.String())
	}
	if !strings.Contains(f.logs.String(), `"request_id":"req-42"`) {
		t.Fatalf("log line lacks the request id: %s", f.logs.String())
	}
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	// The generated handler names its own method in the call info, so the
	// re-registered service is counted under grpc.health.v1.Health, whose
	// real Check never fails with Internal.
	found := false
	for _, mf := range mfs {
		if mf.GetName() == "grpc_server_handled_total" {
			for _, m := range mf.GetMetric() {
				labels := map[string]string{}
				for _, l := range m.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				if labels["grpc_method"] == "Check" && labels["grpc_service"] == "grpc.health.v1.Health" && labels["grpc_code"] == "Internal" && m.GetCounter().GetValue() == 1 {
					found = true
				}
			}
		}
	}
	if !found {
		t.Fatal("grpc_server_handled_total{code=Internal} not counted")
	}
}

func TestRequestIDRejectsInjection(t *testing.T) {
	tests := []struct {
		name string
		id   string
		ok   bool
	}{
		{"plain", "abc-123_x.y", true},
		{"empty", "", false},
		{"newline", "a\nb", false},
		{"quote", `a"b`, false},
		{"too long", strings.Repeat("a", 65), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := validRequestID(tc.id); got != tc.ok {
				t.Fatalf("validRequestID(%q) = %v, want %v", tc.id, got, tc.ok)
			}
		})
	}
}

func TestShutdownIsBounded(t *testing.T) {
	impl := &panicHealth{block: make(chan struct{})}
	defer close(impl.block)
	f := start(t, impl)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	desc := &grpc.StreamDesc{StreamName: "Watch", ServerStreams: true}
	stream, err := f.conn.NewStream(ctx, desc, "/test.PanicHealth/Watch")
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.SendMsg(&healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	// Wait until the handler runs, then stop: GracefulStop alone would wait
	// for the blocked stream forever; Shutdown must return after its bound.
	time.Sleep(50 * time.Millisecond)
	returned := make(chan struct{})
	go func() {
		f.srv.Shutdown(100 * time.Millisecond)
		close(returned)
	}()
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return after its bound")
	}
	if err := stream.RecvMsg(&healthpb.HealthCheckResponse{}); err == nil {
		t.Fatal("stream still open after Shutdown")
	}
}

// TestMetricsInitializedForRegisteredServices checks that a service
// registered after New has its zero series before its first call, like
// health and reflection: an alert on a method's error rate must not wait for
// that method's first call.
func TestMetricsInitializedForRegisteredServices(t *testing.T) {
	f := start(t, &panicHealth{block: make(chan struct{})})
	// A call on a connection proves Serve has begun.
	if _, err := healthpb.NewHealthClient(f.conn).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	started := map[string]bool{}
	for _, mf := range mfs {
		if mf.GetName() != "grpc_server_started_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			started[labels["grpc_service"]+"/"+labels["grpc_method"]] = true
		}
	}
	for _, want := range []string{"test.PanicHealth/Check", "test.PanicHealth/Watch", "grpc.health.v1.Health/Watch"} {
		if !started[want] {
			t.Errorf("no grpc_server_started_total series for %s; have %v", want, started)
		}
	}
}

// TestAccessLog checks the one line per finished call: a failed call is
// logged with its method, code, message and request id (a new one, sent
// back in the trailer, when the caller gave none or a bad one); an OK call
// at info level writes nothing and sends no request id.
func TestAccessLog(t *testing.T) {
	logs := &bytes.Buffer{}
	srv := New(Options{Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	hs := &panicHealth{block: make(chan struct{})}
	desc := healthpb.Health_ServiceDesc
	desc.ServiceName = "test.PanicHealth"
	srv.RegisterService(&desc, hs)
	lis := bufconn.Listen(1 << 20)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		conn.Close()
		srv.Shutdown(time.Second)
		<-done
	}()
	srv.SetServing(true)

	// OK at info level: no line, no request id.
	var trailer metadata.MD
	if _, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{}, grpc.Trailer(&trailer)); err != nil {
		t.Fatal(err)
	}
	if logs.Len() != 0 || len(trailer.Get(RequestIDHeader)) != 0 {
		t.Fatalf("an OK call was logged (%q) or got a request id (%v)", logs.String(), trailer.Get(RequestIDHeader))
	}

	for _, tc := range []struct {
		name, sent string
		echoed     bool // the trailer carries a new id
	}{
		{"caller's id", "req-7", false},
		{"no id", "", true},
		{"bad id", `a"b`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs.Reset()
			ctx := context.Background()
			if tc.sent != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, RequestIDHeader, tc.sent)
			}
			var trailer metadata.MD
			_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "no.such.Service"}, grpc.Trailer(&trailer))
			if status.Code(err) != codes.NotFound {
				t.Fatalf("code %v, want NotFound", status.Code(err))
			}
			// NotFound is logged at debug: nothing at info.
			if logs.Len() != 0 {
				t.Fatalf("NotFound logged at info: %s", logs.String())
			}
			err = conn.Invoke(ctx, "/test.PanicHealth/Check", &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{}, grpc.Trailer(&trailer))
			if status.Code(err) != codes.Internal {
				t.Fatalf("code %v, want Internal", status.Code(err))
			}
			var line struct {
				Level, Msg, RequestID      string
				Service, Method, Code, Err string
			}
			for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
				var rec map[string]any
				if err := json.Unmarshal([]byte(l), &rec); err != nil {
					t.Fatal(err)
				}
				if rec["msg"] == "finished call" {
					line.Level, _ = rec["level"].(string)
					line.RequestID, _ = rec["request_id"].(string)
					line.Service, _ = rec["grpc.service"].(string)
					line.Method, _ = rec["grpc.method"].(string)
					line.Code, _ = rec["grpc.code"].(string)
					line.Err, _ = rec["grpc.error"].(string)
				}
			}
			// The generated handler names its own service in the call info.
			if line.Level != "ERROR" || line.Service != "grpc.health.v1.Health" || line.Method != "Check" || line.Code != "Internal" || line.Err != "internal error" {
				t.Fatalf("access log line %+v from %s", line, logs.String())
			}
			got := trailer.Get(RequestIDHeader)
			switch {
			case tc.echoed && (len(got) != 1 || got[0] != line.RequestID || len(got[0]) != 16):
				t.Fatalf("trailer request id %v, logged %q: want the same new 16-hex id", got, line.RequestID)
			case !tc.echoed && (len(got) != 0 || line.RequestID != tc.sent):
				t.Fatalf("trailer %v, logged %q: want the caller's id logged and not echoed", got, line.RequestID)
			}
		})
	}
}

// TestUnaryRefusedOnceStopping: a unary call that reaches the chain after
// Stop began (grpc-go still delivers calls from connections that have not
// seen its GOAWAY) is refused UNAVAILABLE without running its handler, so
// that no write is acknowledged after the service ended its streams.
func TestUnaryRefusedOnceStopping(t *testing.T) {
	f := start(t, nil)
	// One real call first: Serve has then resolved the methods the chain reads.
	hctx, hcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer hcancel()
	if _, err := healthpb.NewHealthClient(f.conn).Check(hctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	ran := false
	handler := func(context.Context, any) (any, error) { ran = true; return &healthpb.HealthCheckResponse{}, nil }
	info := &grpc.UnaryServerInfo{FullMethod: "/grpc.health.v1.Health/Check"}
	if _, err := f.srv.unary(context.Background(), &healthpb.HealthCheckRequest{}, info, handler); err != nil || !ran {
		t.Fatalf("before Stop: %v (handler ran: %v)", err, ran)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.srv.Stop(ctx, func() {}); err != nil {
		t.Fatal(err)
	}
	ran = false
	_, err := f.srv.unary(context.Background(), &healthpb.HealthCheckRequest{}, info, handler)
	if status.Code(err) != codes.Unavailable || ran {
		t.Fatalf("after Stop: %v (handler ran: %v), want UNAVAILABLE without running it", err, ran)
	}
	if n := f.srv.unaryInFlight.Load(); n != 0 {
		t.Fatalf("%d unary calls counted in flight after a refusal", n)
	}
}
