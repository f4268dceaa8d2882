package extauthz

// Tests that the request the service decodes (extauthzv1.CheckRequest) is
// a faithful part of Envoy's CheckRequest: the same field numbers and
// types, and, for any bytes, the same method, path and headers.

import (
	"bytes"
	"fmt"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	extauthzv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/extauthz/v1"
	"github.com/sigil-auth/sigil/services/authorizer/internal/extauthz/envoytest"
)

// TestReceivedMatchesEnvoyDescriptor walks extauthzv1.CheckRequest and
// Envoy's CheckRequest side by side: every field of ours must be Envoy's
// field of the same number, name, type and cardinality, Envoy's headers
// map being, on the wire, our repeated HeaderEntry.
func TestReceivedMatchesEnvoyDescriptor(t *testing.T) {
	var walk func(ours, envoys protoreflect.MessageDescriptor)
	walk = func(ours, envoys protoreflect.MessageDescriptor) {
		fields := ours.Fields()
		if fields.Len() == 0 {
			t.Errorf("%s: no fields", ours.FullName())
		}
		for i := range fields.Len() {
			f := fields.Get(i)
			e := envoys.Fields().ByNumber(f.Number())
			if e == nil {
				t.Errorf("%s: field %d (%s) is not in %s", ours.FullName(), f.Number(), f.Name(), envoys.FullName())
				continue
			}
			where := fmt.Sprintf("%s.%s against %s", ours.FullName(), f.Name(), e.FullName())
			if f.Name() != e.Name() {
				t.Errorf("%s: names differ", where)
			}
			if e.IsMap() {
				// A map is a repeated message of key = 1 and value = 2.
				if f.Cardinality() != protoreflect.Repeated || f.Kind() != protoreflect.MessageKind || f.IsMap() {
					t.Errorf("%s: Envoy's map must be a repeated message here", where)
					continue
				}
				for _, n := range []protoreflect.FieldNumber{1, 2} {
					of, ef := f.Message().Fields().ByNumber(n), e.Message().Fields().ByNumber(n)
					if of == nil || of.Kind() != ef.Kind() || of.Cardinality() != ef.Cardinality() {
						t.Errorf("%s: entry field %d differs from Envoy's %v", where, n, ef)
					}
				}
				if f.Message().Fields().Len() != 2 {
					t.Errorf("%s: a map entry has two fields", where)
				}
				continue
			}
			if f.Kind() != e.Kind() || f.Cardinality() != e.Cardinality() || f.IsPacked() != e.IsPacked() {
				t.Errorf("%s: %v %v, Envoy's %v %v", where, f.Cardinality(), f.Kind(), e.Cardinality(), e.Kind())
			}
			if f.Kind() == protoreflect.StringKind && f.Syntax() != e.Syntax() {
				// proto3 strings must be valid UTF-8: the same in both.
				t.Errorf("%s: syntax %v, Envoy's %v", where, f.Syntax(), e.Syntax())
			}
			if f.Kind() == protoreflect.MessageKind {
				walk(f.Message(), e.Message())
			}
		}
	}
	walk((&extauthzv1.CheckRequest{}).ProtoReflect().Descriptor(), (&authv3.CheckRequest{}).ProtoReflect().Descriptor())
	// The walk reaches every message of ours, and the leaves are Envoy's.
	if got := (&extauthzv1.HeaderValue{}).ProtoReflect().Descriptor().Fields().Len(); got != 3 {
		t.Errorf("HeaderValue has %d fields", got)
	}
	if envoy := (&corev3.HeaderValue{}).ProtoReflect().Descriptor().Fields(); envoy.ByNumber(3).Kind() != protoreflect.BytesKind {
		t.Errorf("Envoy's HeaderValue.raw_value is %v", envoy.ByNumber(3).Kind())
	}
}

// sameAsEnvoy reports how in, the service's decoding of some bytes, reads
// differently from envoy, Envoy's decoding of the same bytes: method, path,
// every header (by the service's lookup) and header_map.
func sameAsEnvoy(envoy *authv3.CheckRequest, in *extauthzv1.CheckRequest) error {
	e, r := envoy.GetAttributes().GetRequest().GetHttp(), in.GetAttributes().GetRequest().GetHttp()
	if e.GetMethod() != r.GetMethod() || e.GetPath() != r.GetPath() {
		return fmt.Errorf("method, path %q %q, Envoy's %q %q", r.GetMethod(), r.GetPath(), e.GetMethod(), e.GetPath())
	}
	names := map[string]bool{}
	for _, h := range r.GetHeaders() {
		names[h.GetKey()] = true
	}
	if len(names) != len(e.GetHeaders()) {
		return fmt.Errorf("%d header names, Envoy's %d", len(names), len(e.GetHeaders()))
	}
	for k, v := range e.GetHeaders() {
		if !names[k] {
			return fmt.Errorf("header %q missing", k)
		}
		if got := headerValue(r, k); got != v {
			return fmt.Errorf("header %q = %q, Envoy's %q", k, got, v)
		}
	}
	eh, rh := e.GetHeaderMap().GetHeaders(), r.GetHeaderMap().GetHeaders()
	if len(eh) != len(rh) {
		return fmt.Errorf("%d header_map entries, Envoy's %d", len(rh), len(eh))
	}
	for i := range eh {
		if eh[i].GetKey() != rh[i].GetKey() || eh[i].GetValue() != rh[i].GetValue() || !bytes.Equal(eh[i].GetRawValue(), rh[i].GetRawValue()) {
			return fmt.Errorf("header_map[%d] = %v, Envoy's %v", i, rh[i], eh[i])
		}
	}
	if (e.GetHeaderMap() == nil) != (r.GetHeaderMap() == nil) {
		return fmt.Errorf("header_map present %v, Envoy's %v", r.GetHeaderMap() != nil, e.GetHeaderMap() != nil)
	}
	return nil
}

// decodeBoth decodes b as Envoy's CheckRequest and as the service does.
func decodeBoth(b []byte) (envoy *authv3.CheckRequest, envoyErr error, in *extauthzv1.CheckRequest, inErr error) {
	envoy, in = new(authv3.CheckRequest), new(extauthzv1.CheckRequest)
	return envoy, proto.Unmarshal(b, envoy), in, proto.Unmarshal(b, in)
}

// receivedSeeds are encoded requests: the benchmarks' and Envoy's shape,
// raw headers, and hand-built ones the generated encoder never writes.
func receivedSeeds(t testing.TB) [][]byte {
	t.Helper()
	plain := Request("GET", "/v5/domain/domains/example.com", map[string]string{"authorization": "Bearer x", "x-organization-id": "org-a", "": "empty name"})
	raw := Request("POST", "/a", nil)
	raw.Attributes.Request.Http.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
		{Key: "Authorization", RawValue: []byte("Bearer y")}, {Key: "x-organization-id", Value: "org-b"}, {Key: "x-a"},
	}}
	var seeds [][]byte
	for _, m := range []*authv3.CheckRequest{plain, envoytest.Shaped(plain), raw, {}, {Attributes: &authv3.AttributeContext{}}} {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	return append(seeds, duplicateHeaders(), entryWithExtraField())
}

// httpRequest wraps an encoded HttpRequest into a CheckRequest
// (attributes = 1, request = 4, http = 2).
func httpRequest(http []byte) []byte {
	req := protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), http)
	attrs := protowire.AppendBytes(protowire.AppendTag(nil, 4, protowire.BytesType), req)
	return protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), attrs)
}

// entry encodes one headers map entry.
func entry(fields ...[]byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(nil, 3, protowire.BytesType), bytes.Join(fields, nil))
}

func str(n protowire.Number, s string) []byte {
	return protowire.AppendString(protowire.AppendTag(nil, n, protowire.BytesType), s)
}

// duplicateHeaders is an HttpRequest naming authorization twice, and a
// second entry with its value before its key: the generated encoder never
// writes these, a hostile client can.
func duplicateHeaders() []byte {
	return httpRequest(bytes.Join([][]byte{
		str(2, "GET"),
		entry(str(1, "authorization"), str(2, "Bearer first")),
		entry(str(2, "org-a"), str(1, "x-organization-id")),
		entry(str(1, "authorization"), str(2, "Bearer second")),
		str(4, "/a/b"),
	}, nil))
}

// entryWithExtraField is a headers entry carrying a field 3, and its key
// given twice.
func entryWithExtraField() []byte {
	return httpRequest(entry(str(1, "a"), str(3, "ignored"), str(1, "authorization"), str(2, "Bearer z")))
}

// TestReceivedReadsAsEnvoy decodes the seeds both ways: Envoy's message
// and the service's agree on everything the service reads, including a
// header named twice (the last counts) and entries the generated encoder
// never writes.
func TestReceivedReadsAsEnvoy(t *testing.T) {
	for i, b := range receivedSeeds(t) {
		envoy, envoyErr, in, inErr := decodeBoth(b)
		if envoyErr != nil || inErr != nil {
			t.Fatalf("seed %d: Envoy's %v, the service's %v", i, envoyErr, inErr)
		}
		if err := sameAsEnvoy(envoy, in); err != nil {
			t.Errorf("seed %d: %v", i, err)
		}
	}
	_, _, in, _ := decodeBoth(duplicateHeaders())
	if got := headerValue(in.GetAttributes().GetRequest().GetHttp(), "authorization"); got != "Bearer second" {
		t.Errorf("authorization named twice: %q, want the last", got)
	}
}

// TestReceivedRefusesWhatEnvoyRefuses: a field the service reads that is
// not valid (a string that is not UTF-8, a length past the end, a wrong
// wire type's garbage) fails the decoding both ways.
func TestReceivedRefusesWhatEnvoyRefuses(t *testing.T) {
	bad := map[string][]byte{
		"path not UTF-8":         httpRequest(str(4, "/a/\xff")),
		"method not UTF-8":       httpRequest(str(2, "G\xc3")),
		"header name not UTF-8":  httpRequest(entry(str(1, "x-\xff"), str(2, "v"))),
		"header value not UTF-8": httpRequest(entry(str(1, "authorization"), str(2, "Bearer \xff"))),
		"header_map key not UTF-8": httpRequest(protowire.AppendBytes(protowire.AppendTag(nil, 13, protowire.BytesType),
			protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), str(1, "\xff")))),
		"truncated":           httpRequest(str(4, "/a"))[:6],
		"length past the end": append(protowire.AppendTag(nil, 1, protowire.BytesType), 0x7f),
	}
	for name, b := range bad {
		_, envoyErr, _, inErr := decodeBoth(b)
		if envoyErr == nil || inErr == nil {
			t.Errorf("%s: Envoy's decoding %v, the service's %v; want both to fail", name, envoyErr, inErr)
		}
	}
}

// TestReceivedLeavesUnreadFieldsUndecoded pins the one difference: a field
// the service does not read is kept undecoded, so an invalid one there
// (here the source address, not UTF-8) fails Envoy's decoding and not the
// service's, which decides on the same method, path and headers either
// way.
func TestReceivedLeavesUnreadFieldsUndecoded(t *testing.T) {
	good := Request("GET", "/a", map[string]string{"authorization": "Bearer x"})
	b, err := proto.Marshal(good)
	if err != nil {
		t.Fatal(err)
	}
	// AttributeContext.source (1) = Peer{service (3): "\xff"}, appended to
	// the attributes: fields of a message may come in any order.
	peer := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), str(3, "\xff"))
	b = append(b, protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), peer)...)
	_, envoyErr, in, inErr := decodeBoth(b)
	if envoyErr == nil {
		t.Fatal("Envoy's decoding accepted a source that is not UTF-8: the test no longer shows the difference")
	}
	if inErr != nil {
		t.Fatalf("the service's decoding: %v", inErr)
	}
	if err := sameAsEnvoy(good, in); err != nil {
		t.Fatal(err)
	}
	if len(in.GetAttributes().ProtoReflect().GetUnknown()) == 0 {
		t.Error("the source was not kept as an unknown field")
	}
}

// FuzzReceivedReadsAsEnvoy: for any bytes Envoy's CheckRequest decodes,
// the service's decodes too, to the same method, path and headers. And
// whatever the service's decodes, what it read alone (the fields not read
// dropped) is a request Envoy's message decodes, to the same.
func FuzzReceivedReadsAsEnvoy(f *testing.F) {
	for _, b := range receivedSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > MaxCheckRequestSize {
			return
		}
		envoy, envoyErr, in, inErr := decodeBoth(b)
		if envoyErr == nil && inErr != nil {
			t.Fatalf("Envoy's decoding accepts, the service's: %v", inErr)
		}
		if envoyErr == nil {
			if err := sameAsEnvoy(envoy, in); err != nil {
				t.Fatal(err)
			}
		}
		if inErr != nil {
			return
		}
		read := new(extauthzv1.CheckRequest)
		if err := (proto.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(b, read); err != nil {
			t.Fatalf("decoding without the fields not read: %v", err)
		}
		rb, err := proto.Marshal(read)
		if err != nil {
			t.Fatal(err)
		}
		envoy, envoyErr, _, _ = decodeBoth(rb)
		if envoyErr != nil {
			t.Fatalf("what the service read is not a request Envoy's message decodes: %v", envoyErr)
		}
		if err := sameAsEnvoy(envoy, in); err != nil {
			t.Fatalf("what the service read, as Envoy's message: %v", err)
		}
	})
}
