package extauthz

import (
	"context"
	"fmt"
	"log/slog"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"

	extauthzv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/extauthz/v1"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/services/authorizer/internal/extauthz/envoytest"
)

// BenchmarkWire measures what each API's request and allowed answer cost
// to decode and encode with the generated protobuf code (what grpc-go does
// on every call, outside the service), in the same run:
// CheckPermission's request and answer; ext_authz's request as the ghz and
// Go client benchmarks send it (4 headers), as Envoy sends it (peers,
// time, 13 headers, metadata) and as the largest request the authorizer
// takes (96 KiB of empty headers), and its allowed answer. The Headers pair
// isolates the header map: the same 4 headers as Envoy's map field and as
// a repeated message of the same wire shape (HeaderMap's entries). The
// Received cases decode the same bytes as the service does
// (extauthzv1.CheckRequest, see ServiceDesc).
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
	headers := d.envoyReq.GetAttributes().GetRequest().GetHttp().GetHeaders()
	entries := &corev3.HeaderMap{}
	for k, v := range headers {
		entries.Headers = append(entries.Headers, &corev3.HeaderValue{Key: k, Value: v})
	}
	envoy := envoytest.Shaped(d.envoyReq)
	// The largest request the authorizer takes, filled with empty headers:
	// what a hostile client can make each call cost.
	largest := proto.Clone(d.envoyReq).(*authv3.CheckRequest)
	for i := 0; proto.Size(largest) < MaxCheckRequestSize-16; i++ {
		largest.Attributes.Request.Http.Headers[fmt.Sprintf("h%d", i)] = ""
	}
	decode := []struct {
		name string
		msg  proto.Message // encoded, then decoded into new()
		new  func() proto.Message
	}{
		{"CheckPermission", d.cpReq, func() proto.Message { return new(sigilv1.CheckPermissionRequest) }},
		{"ExtAuthz", d.envoyReq, func() proto.Message { return new(authv3.CheckRequest) }},
		{"ExtAuthzReceived", d.envoyReq, func() proto.Message { return new(extauthzv1.CheckRequest) }},
		{"ExtAuthzEnvoyShaped", envoy, func() proto.Message { return new(authv3.CheckRequest) }},
		{"ExtAuthzEnvoyShapedReceived", envoy, func() proto.Message { return new(extauthzv1.CheckRequest) }},
		{"ExtAuthzLargest", largest, func() proto.Message { return new(authv3.CheckRequest) }},
		{"ExtAuthzLargestReceived", largest, func() proto.Message { return new(extauthzv1.CheckRequest) }},
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
			// The last decode must give back what was encoded: the same
			// message, or what the service reads of it.
			m := c.new()
			if err := proto.Unmarshal(data, m); err != nil {
				b.Fatal(err)
			}
			if in, ok := m.(*extauthzv1.CheckRequest); ok {
				if err := sameAsEnvoy(c.msg.(*authv3.CheckRequest), in); err != nil {
					b.Fatal(err)
				}
			} else if !proto.Equal(m, c.msg) {
				b.Fatalf("decoded %v, want %v", m, c.msg)
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
