package grpcserver

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// tcpServer serves srv on a real loopback listener and returns its address.
func tcpServer(t *testing.T, srv *Server) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	srv.SetServing(true)
	t.Cleanup(func() {
		srv.Shutdown(time.Second)
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return lis.Addr().String()
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func healthCheck(conn *grpc.ClientConn, service string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	return err
}

// exported returns the value of sigil_limit_exceeded_total{limit} in reg.
func exported(t *testing.T, reg *prometheus.Registry, limit string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "sigil_limit_exceeded_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "limit" && l.GetValue() == limit {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("sigil_limit_exceeded_total{limit=%q} not exported", limit)
	return 0
}

func TestMessageSizeBounds(t *testing.T) {
	reg := prometheus.NewRegistry()
	limits := NewLimits(reg)
	srv := New(Options{
		Limits:            limits,
		MaxRecvMsgSize:    1024,
		MethodMaxRecvSize: map[string]int{"/grpc.health.v1.Health/Check": 100},
	})
	conn := dial(t, tcpServer(t, srv))
	sized := LimitMessageSize

	// Below both bounds: served.
	if err := healthCheck(conn, ""); err != nil {
		t.Fatalf("small request: %v", err)
	}
	if got := limits.Count(sized); got != 0 {
		t.Fatalf("counter = %v before any refusal", got)
	}
	// Over the method's bound, under the global one.
	if err := healthCheck(conn, strings.Repeat("a", 200)); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("over the method bound: %v, want RESOURCE_EXHAUSTED", err)
	}
	if got := limits.Count(sized); got != 1 {
		t.Fatalf("counter = %v after a method-bound refusal, want 1", got)
	}
	// Over the global bound: refused by grpc-go while decoding, still counted.
	if err := healthCheck(conn, strings.Repeat("a", 2000)); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("over the global bound: %v, want RESOURCE_EXHAUSTED", err)
	}
	if got := limits.Count(sized); got != 2 {
		t.Fatalf("counter = %v after a global-bound refusal, want 2", got)
	}
	// A stream's request over the global bound: refused and counted too.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	w, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{Service: strings.Repeat("a", 2000)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("stream over the global bound: %v, want RESOURCE_EXHAUSTED", err)
	}
	if got := limits.Count(sized); got != 3 {
		t.Fatalf("counter = %v after a stream refusal, want 3", got)
	}
	if got := exported(t, reg, LimitMessageSize); got != 3 {
		t.Fatalf("exported counter = %v, want 3", got)
	}
	// The connection still serves.
	if err := healthCheck(conn, ""); err != nil {
		t.Fatalf("after refusals: %v", err)
	}
}

func TestConnectionCap(t *testing.T) {
	limits := NewLimits(prometheus.NewRegistry())
	addr := tcpServer(t, New(Options{Limits: limits, MaxConnections: 2}))
	refused := LimitConnections

	a, b := dial(t, addr), dial(t, addr)
	for _, c := range []*grpc.ClientConn{a, b} {
		if err := healthCheck(c, ""); err != nil {
			t.Fatalf("within the cap: %v", err)
		}
	}
	c := dial(t, addr)
	if err := healthCheck(c, ""); status.Code(err) != codes.Unavailable {
		t.Fatalf("beyond the cap: %v, want UNAVAILABLE", err)
	}
	if got := limits.Count(refused); got < 1 {
		t.Fatalf("connections refused = %v, want at least 1", got)
	}
	// A closed connection frees its slot.
	a.Close()
	deadline := time.Now().Add(10 * time.Second)
	for healthCheck(c, "") != nil {
		if time.Now().After(deadline) {
			t.Fatal("slot never freed after a connection closed")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestStreamsPerConnectionAdvertised reads the server's HTTP/2 SETTINGS: the
// bound is enforced by every HTTP/2 peer from that value (grpc-go refuses a
// stream beyond it with REFUSED_STREAM).
func TestStreamsPerConnectionAdvertised(t *testing.T) {
	addr := tcpServer(t, New(Options{MaxStreamsPerConnection: 7}))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	// Client preface and an empty SETTINGS frame.
	if _, err := c.Write(append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0, 0, 0, 4, 0, 0, 0, 0, 0)); err != nil {
		t.Fatal(err)
	}
	// The server's first frame is its SETTINGS: 9-byte header (length 3,
	// type 1, flags 1, stream 4), then 6-byte entries (id 2, value 4).
	for {
		hdr := make([]byte, 9)
		if _, err := io.ReadFull(c, hdr); err != nil {
			t.Fatal(err)
		}
		payload := make([]byte, int(hdr[0])<<16|int(hdr[1])<<8|int(hdr[2]))
		if _, err := io.ReadFull(c, payload); err != nil {
			t.Fatal(err)
		}
		if hdr[3] != 4 || hdr[4]&1 != 0 { // not SETTINGS, or an ACK
			continue
		}
		for i := 0; i+6 <= len(payload); i += 6 {
			if binary.BigEndian.Uint16(payload[i:]) == 3 { // MAX_CONCURRENT_STREAMS
				if v := binary.BigEndian.Uint32(payload[i+2:]); v != 7 {
					t.Fatalf("SETTINGS_MAX_CONCURRENT_STREAMS = %d, want 7", v)
				}
				return
			}
		}
		t.Fatal("server SETTINGS without MAX_CONCURRENT_STREAMS")
	}
}

func TestIdleConnectionClosed(t *testing.T) {
	addr := tcpServer(t, New(Options{MaxConnectionIdle: 200 * time.Millisecond}))
	conn := dial(t, addr)
	if err := healthCheck(conn, ""); err != nil {
		t.Fatal(err)
	}
	// The server sends GOAWAY after the idle time: the client's connection
	// leaves READY without the client doing anything.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for s := conn.GetState(); s == connectivity.Ready; s = conn.GetState() {
		if !conn.WaitForStateChange(ctx, s) {
			t.Fatal("idle connection never closed by the server")
		}
	}
}

// closingHealth's Watch closes its caller's connection and reports whether
// it could.
type closingHealth struct {
	healthpb.UnimplementedHealthServer
	closed chan bool
}

func (c *closingHealth) Watch(_ *healthpb.HealthCheckRequest, s healthpb.Health_WatchServer) error {
	c.closed <- CloseConnection(s.Context())
	return status.Error(codes.ResourceExhausted, "cut off")
}

func TestCloseConnection(t *testing.T) {
	srv := New(Options{})
	impl := &closingHealth{closed: make(chan bool, 1)}
	desc := healthpb.Health_ServiceDesc
	desc.ServiceName = "test.ClosingHealth"
	srv.RegisterService(&desc, impl)
	conn := dial(t, tcpServer(t, srv))
	if err := healthCheck(conn, ""); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := conn.NewStream(ctx, &desc.Streams[0], "/test.ClosingHealth/Watch")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SendMsg(&healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	_ = s.CloseSend()
	if !<-impl.closed {
		t.Fatal("connection of a TCP call not found")
	}
	// The client's connection drops without the client doing anything.
	for st := conn.GetState(); st == connectivity.Ready; st = conn.GetState() {
		if !conn.WaitForStateChange(ctx, st) {
			t.Fatal("connection still open")
		}
	}
	// Outside a call, or on an unknown connection, nothing happens.
	if CloseConnection(context.Background()) {
		t.Fatal("closed a connection without a call")
	}
}
