package grpcserver

import (
	"context"
	"net"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Names of the bounds counted by Limits, the values of the limit label.
const (
	LimitConnections = "connections"   // connections per service (--max-connections)
	LimitMessageSize = "message_size"  // receive message size, global or per method
	LimitWatchStream = "watch_streams" // revocation streams per credential (authority)
	LimitParkedWaits = "parked_waits"  // parked min_revision waits (authorizer)
)

// Defaults of the client-controlled bounds.
const (
	// DefaultMaxConnections bounds the open connections of a service.
	DefaultMaxConnections = 1024
	// DefaultMaxStreamsPerConnection bounds the concurrent calls and streams
	// of one connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).
	DefaultMaxStreamsPerConnection = 100
)

// Limits counts requests refused because a bound a client controls was hit,
// as sigil_limit_exceeded_total{limit}: an operator sees an attack, or a
// bound set too low, before users complain. A nil *Limits counts nothing.
type Limits struct {
	vec    *prometheus.CounterVec
	counts sync.Map // limit name -> *atomic.Uint64, read by Count
}

// NewLimits makes the counter and registers it on reg (nil: not exported).
// Every known limit starts at zero so that alerts see it before it is hit.
func NewLimits(reg prometheus.Registerer) *Limits {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sigil_limit_exceeded_total",
		Help: "Requests or connections refused because a bound was hit, by limit.",
	}, []string{"limit"})
	for _, l := range []string{LimitConnections, LimitMessageSize, LimitWatchStream, LimitParkedWaits} {
		vec.WithLabelValues(l)
	}
	if reg != nil {
		reg.MustRegister(vec)
	}
	return &Limits{vec: vec}
}

// Exceeded counts one refusal by limit.
func (l *Limits) Exceeded(limit string) {
	if l == nil {
		return
	}
	l.vec.WithLabelValues(limit).Inc()
	n, _ := l.counts.LoadOrStore(limit, new(atomic.Uint64))
	n.(*atomic.Uint64).Add(1)
}

// Count returns how many refusals of limit were counted, as the metric
// shows them (for tests and in-process checks).
func (l *Limits) Count(limit string) uint64 {
	if l == nil {
		return 0
	}
	n, ok := l.counts.Load(limit)
	if !ok {
		return 0
	}
	return n.(*atomic.Uint64).Load()
}

// Refuse returns the RESOURCE_EXHAUSTED error a handler answers when limit
// is hit, after counting it. msg names the bound, never a request value.
func (l *Limits) Refuse(limit, msg string) error {
	l.Exceeded(limit)
	return status.Error(codes.ResourceExhausted, msg)
}

// LimitListener returns lis bounded to max open connections: a connection
// accepted beyond the bound is closed at once (the client sees UNAVAILABLE)
// and counted as LimitConnections. A closed connection frees its slot.
func LimitListener(lis net.Listener, max int, limits *Limits) net.Listener {
	return newLimitListener(lis, max, limits)
}

func newLimitListener(lis net.Listener, max int, limits *Limits) *limitListener {
	return &limitListener{Listener: lis, sem: make(chan struct{}, max), limits: limits, conns: map[string]*limitConn{}}
}

type limitListener struct {
	net.Listener
	sem    chan struct{}
	limits *Limits

	mu    sync.Mutex
	conns map[string]*limitConn // by remote address; nil value: ambiguous
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.sem <- struct{}{}:
			lc := &limitConn{Conn: c, l: l, key: c.RemoteAddr().String()}
			l.mu.Lock()
			if _, dup := l.conns[lc.key]; dup {
				l.conns[lc.key] = nil // in-memory listeners share one address
			} else {
				l.conns[lc.key] = lc
			}
			l.mu.Unlock()
			return lc, nil
		default:
			// Refused before any byte is read: nothing is allocated for it.
			l.limits.Exceeded(LimitConnections)
			_ = c.Close()
		}
	}
}

// lookup returns the open connection from remote address addr, if exactly
// one is known.
func (l *limitListener) lookup(addr string) *limitConn {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.conns[addr]
}

type limitConn struct {
	net.Conn
	l    *limitListener
	key  string
	once sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		if c.l.conns[c.key] == c {
			delete(c.l.conns, c.key)
		}
		c.l.mu.Unlock()
		<-c.l.sem
	})
	return err
}

type closerKey struct{}

// CloseConnection closes the connection a call came in on, at once, with
// everything the transport holds for it: its goroutines and the messages
// queued behind a peer that does not read. A stream handler uses it to cut
// off a consumer too slow to take its messages, whose queued data grpc-go
// would otherwise keep until the peer reads or leaves. It reports false
// when the connection is not known (an in-memory listener).
func CloseConnection(ctx context.Context) bool {
	c, _ := ctx.Value(closerKey{}).(*limitConn)
	if c == nil {
		return false
	}
	_ = c.Close()
	return true
}

// connStream gives stream handlers a context through which
// CloseConnection finds their connection.
func connStream(l func() *limitListener) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		lis := l()
		p, ok := peer.FromContext(ss.Context())
		if lis == nil || !ok || p.Addr == nil {
			return handler(srv, ss)
		}
		c := lis.lookup(p.Addr.String())
		if c == nil {
			return handler(srv, ss)
		}
		return handler(srv, &ctxStream{ServerStream: ss, ctx: context.WithValue(ss.Context(), closerKey{}, c)})
	}
}

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *ctxStream) Context() context.Context { return s.ctx }
