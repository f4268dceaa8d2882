package grpcserver

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// The unary chain is one interceptor (Server.unary) rather than a chain of
// five: grpc-go's chaining allocates a closure per layer and call, and each
// layer read the clock or looked its labels up again. Its steps, their
// order and their outcomes are those New documents.

// rpcMetrics are the per-method RPC metrics, under the names and labels of
// go-grpc-middleware's Prometheus provider (grpc_server_started_total,
// grpc_server_handled_total, grpc_server_msg_received_total,
// grpc_server_msg_sent_total, grpc_server_handling_seconds), so that
// dashboards and alerts built on them keep working. Every registered
// method's series are resolved once, when Serve starts, instead of hashing
// four label values per counter and call.
type rpcMetrics struct {
	started, handled, received, sent *prometheus.CounterVec
	latency                          *prometheus.HistogramVec
}

var rpcLabels = []string{"grpc_type", "grpc_service", "grpc_method"}

func newRPCMetrics() *rpcMetrics {
	return &rpcMetrics{
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_started_total",
			Help: "Total number of RPCs started on the server.",
		}, rpcLabels),
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_handled_total",
			Help: "Total number of RPCs completed on the server, regardless of success or failure.",
		}, append(slices.Clone(rpcLabels), "grpc_code")),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_msg_received_total",
			Help: "Total number of RPC stream messages received on the server.",
		}, rpcLabels),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_msg_sent_total",
			Help: "Total number of gRPC stream messages sent by the server.",
		}, rpcLabels),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "grpc_server_handling_seconds",
			Help:    "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, rpcLabels),
	}
}

// Describe implements prometheus.Collector.
func (m *rpcMetrics) Describe(ch chan<- *prometheus.Desc) {
	m.started.Describe(ch)
	m.handled.Describe(ch)
	m.received.Describe(ch)
	m.sent.Describe(ch)
	m.latency.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *rpcMetrics) Collect(ch chan<- prometheus.Metric) {
	m.started.Collect(ch)
	m.handled.Collect(ch)
	m.received.Collect(ch)
	m.sent.Collect(ch)
	m.latency.Collect(ch)
}

// numCodes is the number of gRPC codes, OK to Unauthenticated.
const numCodes = int(codes.Unauthenticated) + 1

// method is what the chain needs of one method, resolved once: its
// metric series (nil without metrics) and its size bound (0: none).
type method struct {
	maxSize int
	metrics *rpcMetrics // nil: no metrics

	typ, service, name      string
	started, received, sent prometheus.Counter
	handled                 [numCodes]prometheus.Counter
	latency                 prometheus.Observer
}

// newMethod resolves full method "/pkg.Service/Method" of type typ
// ("unary", "server_stream", ...); resolving gives every series its zero.
func newMethod(m *rpcMetrics, fullMethod, typ string, maxSize int) *method {
	service, name := splitMethod(fullMethod)
	me := &method{maxSize: maxSize, metrics: m, typ: typ, service: service, name: name}
	if m == nil {
		return me
	}
	me.started = m.started.WithLabelValues(typ, service, name)
	me.received = m.received.WithLabelValues(typ, service, name)
	me.sent = m.sent.WithLabelValues(typ, service, name)
	me.latency = m.latency.WithLabelValues(typ, service, name)
	for c := range me.handled {
		me.handled[c] = m.handled.WithLabelValues(typ, service, name, codes.Code(c).String())
	}
	return me
}

// begin counts a started call.
func (me *method) begin() {
	if me.metrics != nil {
		me.started.Inc()
	}
}

// done counts a finished call by code and observes its latency.
func (me *method) done(err error, start time.Time) {
	if me.metrics == nil {
		return
	}
	code := codeOf(err)
	if int(code) < numCodes {
		me.handled[code].Inc()
	} else {
		me.metrics.handled.WithLabelValues(me.typ, me.service, me.name, code.String()).Inc()
	}
	me.latency.Observe(time.Since(start).Seconds())
}

// codeOf is the code a call ended with, context errors converted the way
// grpc-go converts them.
func codeOf(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	if s, ok := status.FromError(err); ok {
		return s.Code()
	}
	return status.FromContextError(err).Code()
}

// methodType is the grpc_type label of a method.
func methodType(clientStream, serverStream bool) string {
	switch {
	case clientStream && serverStream:
		return "bidi_stream"
	case clientStream:
		return "client_stream"
	case serverStream:
		return "server_stream"
	default:
		return "unary"
	}
}

// resolveMethods resolves every registered method; called once, before
// the server serves, so that the map is only read afterwards.
func (s *Server) resolveMethods() {
	s.methods = map[string]*method{}
	for service, info := range s.grpc.GetServiceInfo() {
		for _, mi := range info.Methods {
			full := "/" + service + "/" + mi.Name
			s.methods[full] = newMethod(s.rpc, full, methodType(mi.IsClientStream, mi.IsServerStream), s.methodMaxRecv[full])
		}
	}
}

// method returns the resolved method of full method name fullMethod. A
// name not registered (a handler may name another method than the one it
// was registered under) is resolved on the spot.
func (s *Server) method(fullMethod, typ string) *method {
	if m, ok := s.methods[fullMethod]; ok && m.typ == typ {
		return m
	}
	return newMethod(s.rpc, fullMethod, typ, s.methodMaxRecv[fullMethod])
}

// errStopping is the answer to a unary call that starts once Stop began.
var errStopping = status.Error(codes.Unavailable, "server is stopping; retry on another instance or after its restart")

// unary is the whole unary chain: in-flight count, recovery, access log,
// metrics, the method's size bound, recovery again, the handler.
func (s *Server) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	s.unaryInFlight.Add(1)
	defer s.unaryInFlight.Add(-1)
	if s.stopping.Load() {
		return nil, errStopping
	}
	defer func() {
		if p := recover(); p != nil {
			resp, err = nil, s.recovered(ctx, p)
		}
	}()
	m := s.method(info.FullMethod, "unary")
	start := time.Now()
	m.begin()
	if m.metrics != nil {
		m.received.Inc()
	}
	resp, err = s.handle(ctx, req, m, handler)
	if m.metrics != nil && err == nil {
		m.sent.Inc()
	}
	m.done(err, start)
	s.access.unaryDone(ctx, info.FullMethod, start, err)
	return resp, err
}

// handle applies the method's size bound, then calls the handler,
// turning its panic into Internal.
func (s *Server) handle(ctx context.Context, req any, m *method, handler grpc.UnaryHandler) (resp any, err error) {
	if m.maxSize > 0 {
		if pm, ok := req.(proto.Message); ok && proto.Size(pm) > m.maxSize {
			return nil, s.limits.Refuse(LimitMessageSize, "request larger than the bound of this method")
		}
	}
	defer func() {
		if p := recover(); p != nil {
			resp, err = nil, s.recovered(ctx, p)
		}
	}()
	return handler(ctx, req)
}

// observeStream counts a stream and its messages, and the messages grpc-go
// refuses for exceeding the receive bound.
func (s *Server) observeStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	m := s.method(info.FullMethod, methodType(info.IsClientStream, info.IsServerStream))
	start := time.Now()
	m.begin()
	err := handler(srv, &observedStream{ServerStream: ss, m: m, limits: s.limits})
	m.done(err, start)
	return err
}

type observedStream struct {
	grpc.ServerStream
	m      *method
	limits *Limits
}

func (o *observedStream) SendMsg(msg any) error {
	err := o.ServerStream.SendMsg(msg)
	if err == nil && o.m.metrics != nil {
		o.m.sent.Inc()
	}
	return err
}

func (o *observedStream) RecvMsg(msg any) error {
	err := o.ServerStream.RecvMsg(msg)
	switch {
	case err == nil:
		if o.m.metrics != nil {
			o.m.received.Inc()
		}
	case tooLarge(err):
		o.limits.Exceeded(LimitMessageSize)
	}
	return err
}

// tooLarge reports whether err is grpc-go's refusal of a request message
// over the receive bound (before or after decompression).
func tooLarge(err error) bool {
	e, ok := status.FromError(err)
	return ok && e.Code() == codes.ResourceExhausted && strings.Contains(e.Message(), "larger than max")
}

// registrar registers services with their unary handlers' decoding
// observed: grpc-go refuses a request over MaxRecvMsgSize while decoding
// it, before any interceptor runs, and the refusal is counted there. This
// replaces a stats handler, whose mere presence makes grpc-go allocate
// about 17 event objects on every call.
type registrar struct{ s *Server }

// RegisterService implements grpc.ServiceRegistrar.
func (r registrar) RegisterService(desc *grpc.ServiceDesc, impl any) {
	d := *desc
	d.Methods = slices.Clone(desc.Methods)
	limits := r.s.limits
	for i := range d.Methods {
		h := d.Methods[i].Handler
		d.Methods[i].Handler = func(srv any, ctx context.Context, dec func(any) error, in grpc.UnaryServerInterceptor) (any, error) {
			return h(srv, ctx, func(v any) error {
				err := dec(v)
				if err != nil && tooLarge(err) {
					limits.Exceeded(LimitMessageSize)
				}
				return err
			}, in)
		}
	}
	r.s.grpc.RegisterService(&d, impl)
}

// GetServiceInfo implements reflection.ServiceInfoProvider.
func (r registrar) GetServiceInfo() map[string]grpc.ServiceInfo { return r.s.grpc.GetServiceInfo() }
