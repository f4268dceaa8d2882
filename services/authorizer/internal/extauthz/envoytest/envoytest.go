// Package envoytest builds Envoy ext_authz requests for tests and
// benchmarks.
package envoytest

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Shaped returns the request an Envoy sidecar sends for req's HTTP
// request: req's attributes plus the peers, the request time and id,
// Envoy's own headers and empty metadata, as Envoy 1.3x fills them. req
// must have an HTTP request; it is not changed.
func Shaped(req *authv3.CheckRequest) *authv3.CheckRequest {
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
	if h.Headers == nil {
		h.Headers = map[string]string{}
	}
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
