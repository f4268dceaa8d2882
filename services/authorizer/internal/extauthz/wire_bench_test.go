package extauthz

import (
	"context"
	"log/slog"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

// envoyShaped returns the request an Envoy sidecar sends for req's HTTP
// request: req's attributes plus the peers, the request time and id,
// Envoy's own headers and empty metadata, as Envoy 1.3x fills them.
func envoyShaped(req *authv3.CheckRequest) *authv3.CheckRequest {
	r := proto.Clone(req).(*authv3.CheckRequest)
	peer := func(ip string, port uint32) *authv3.AttributeContext_Peer {
		return &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}},
		}}}
	}
	a := r.Attributes
	a.Source, a.Destination = peer("10.0.3.7", 51234), peer("10.0.1.2", 8080)
	a.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{}}
	a.RouteMetadataContext = &corev3.Metadata{}
	a.Request.Time = timestamppb.Now()
	h := a.Request.Http
	h.Id, h.Protocol, h.Size = "13425612734719523466", "HTTP/1.1", 0
	for k, v := range map[string]string{
		":authority": h.Host, ":method": h.Method, ":path": h.Path, ":scheme": h.Scheme,
		"x-forwarded-proto": h.Scheme, "x-request-id": "5b8e2a52-0a7c-4a4e-9f5e-0d3c0e3b9d61",
		"x-envoy-expected-rq-timeout-ms": "15000", "accept-encoding": "gzip",
		"x-forwarded-for": "10.0.3.7",
	} {
		h.Headers[k] = v
	}
	return r
}

// BenchmarkWire measures what each API's request and allowed answer cost
// to decode and encode with the generated protobuf code (what grpc-go does
// on every call, outside the service), in the same run:
// CheckPermission's request and answer; ext_authz's request as the ghz and
// Go client benchmarks send it (4 headers) and as Envoy sends it (peers,
// time, 13 headers, metadata), and its allowed answer. The Headers pair
// isolates the header map: the same 4 headers as Envoy's map field and as
// a repeated message of the same wire shape (HeaderMap's entries).
// Run it with: go test ./services/authorizer/internal/extauthz -run '^$' -bench '^BenchmarkWire$' -count 10
func BenchmarkWire(b *testing.B) {
	d := newDirect(b, slog.LevelInfo)
	ctx := context.Background()
	extResp, err := d.ext.Check(ctx, d.extReq)
	if err != nil || extResp.GetOkResponse() == nil {
		b.Fatalf("ext_authz: %v, %v", extResp, err)
	}
	cpResp, err := d.cp.CheckPermission(ctx, d.cpReq)
	if err != nil || !cpResp.GetAllowed() {
		b.Fatalf("CheckPermission: %v, %v", cpResp, err)
	}
	headers := d.extReq.GetAttributes().GetRequest().GetHttp().GetHeaders()
	entries := &corev3.HeaderMap{}
	for k, v := range headers {
		entries.Headers = append(entries.Headers, &corev3.HeaderValue{Key: k, Value: v})
	}
	decode := []struct {
		name string
		msg  proto.Message
		new  func() proto.Message
	}{
		{"CheckPermission", d.cpReq, func() proto.Message { return new(sigilv1.CheckPermissionRequest) }},
		{"ExtAuthz", d.extReq, func() proto.Message { return new(authv3.CheckRequest) }},
		{"ExtAuthzEnvoyShaped", envoyShaped(d.extReq), func() proto.Message { return new(authv3.CheckRequest) }},
		{"HeadersMap", &authv3.AttributeContext_HttpRequest{Headers: headers}, func() proto.Message { return new(authv3.AttributeContext_HttpRequest) }},
		{"HeadersEntries", entries, func() proto.Message { return new(corev3.HeaderMap) }},
	}
	for _, c := range decode {
		data, err := proto.Marshal(c.msg)
		if err != nil {
			b.Fatal(err)
		}
		b.Run("Decode/"+c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				m := c.new()
				if err := proto.Unmarshal(data, m); err != nil {
					b.Fatal(err)
				}
			}
			// The last decode must give back what was encoded.
			m := c.new()
			if err := proto.Unmarshal(data, m); err != nil || !proto.Equal(m, c.msg) {
				b.Fatalf("decoded %v, want %v (%v)", m, c.msg, err)
			}
		})
	}
	for _, c := range []struct {
		name string
		msg  proto.Message
	}{{"CheckPermission", cpResp}, {"ExtAuthz", extResp}} {
		b.Run("Encode/"+c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := proto.Marshal(c.msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
