package authz

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	domainsv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/examples/domains/v1"
	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
)

func field(name string, num int32, typ descriptorpb.FieldDescriptorProto_Type, label descriptorpb.FieldDescriptorProto_Label, typeName string) *descriptorpb.FieldDescriptorProto {
	f := &descriptorpb.FieldDescriptorProto{Name: proto.String(name), Number: proto.Int32(num), Type: typ.Enum(), Label: label.Enum(), JsonName: proto.String(name)}
	if typeName != "" {
		f.TypeName = proto.String(typeName)
	}
	return f
}

const (
	opt = descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL
	rep = descriptorpb.FieldDescriptorProto_LABEL_REPEATED
	str = descriptorpb.FieldDescriptorProto_TYPE_STRING
	msg = descriptorpb.FieldDescriptorProto_TYPE_MESSAGE
)

// method makes a method whose options carry requires (nil: none) and public.
func method(name string, requires *sigilv1.Requirement, public bool) *descriptorpb.MethodDescriptorProto {
	o := &descriptorpb.MethodOptions{}
	if requires != nil {
		proto.SetExtension(o, sigilv1.E_Requires, requires)
	}
	if public {
		proto.SetExtension(o, sigilv1.E_Public, true)
	}
	return &descriptorpb.MethodDescriptorProto{Name: proto.String(name), InputType: proto.String(".t.Req"), OutputType: proto.String(".t.Req"), Options: o}
}

// testFile builds package t: Req {fqdn, inner, tags (repeated), labels
// (map), id int64, flag bool, inners (repeated Inner), n uint32}, Inner
// {name, deep}, Deep {leaf}, and service S with the given methods.
func testFile(t testing.TB, methods ...*descriptorpb.MethodDescriptorProto) protoreflect.FileDescriptor {
	t.Helper()
	entry := &descriptorpb.DescriptorProto{
		Name:    proto.String("LabelsEntry"),
		Field:   []*descriptorpb.FieldDescriptorProto{field("key", 1, str, opt, ""), field("value", 2, str, opt, "")},
		Options: &descriptorpb.MessageOptions{MapEntry: proto.Bool(true)},
	}
	fdp := &descriptorpb.FileDescriptorProto{
		Name: proto.String("t.proto"), Package: proto.String("t"), Syntax: proto.String("proto3"),
		Dependency: []string{"sigil/v1/annotations.proto"},
		MessageType: []*descriptorpb.DescriptorProto{
			{Name: proto.String("Req"), Field: []*descriptorpb.FieldDescriptorProto{
				field("fqdn", 1, str, opt, ""),
				field("inner", 2, msg, opt, ".t.Inner"),
				field("tags", 3, str, rep, ""),
				field("labels", 4, msg, rep, ".t.Req.LabelsEntry"),
				field("id", 5, descriptorpb.FieldDescriptorProto_TYPE_INT64, opt, ""),
				field("flag", 6, descriptorpb.FieldDescriptorProto_TYPE_BOOL, opt, ""),
				field("inners", 7, msg, rep, ".t.Inner"),
				field("n", 8, descriptorpb.FieldDescriptorProto_TYPE_UINT32, opt, ""),
			}, NestedType: []*descriptorpb.DescriptorProto{entry}},
			{Name: proto.String("Inner"), Field: []*descriptorpb.FieldDescriptorProto{field("name", 1, str, opt, ""), field("deep", 2, msg, opt, ".t.Deep")}},
			{Name: proto.String("Deep"), Field: []*descriptorpb.FieldDescriptorProto{field("leaf", 1, str, opt, "")}},
		},
	}
	if len(methods) > 0 {
		fdp.Service = []*descriptorpb.ServiceDescriptorProto{{Name: proto.String("S"), Method: methods}}
	}
	fd, err := protodesc.NewFile(fdp, protoregistry.GlobalFiles)
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

func reqDesc(t testing.TB) protoreflect.MessageDescriptor {
	return testFile(t).Messages().ByName("Req")
}

func TestCompileTemplate(t *testing.T) {
	md := reqDesc(t)
	for _, c := range []struct {
		tmpl, wantErr string
	}{
		{"domains/{fqdn}", ""},
		{"domains/{inner.name}", ""},
		{"domains/{inner.deep.leaf}", ""},
		{"domains/{fqdn}-{n}", ""},
		{"accounts/{id}", ""},
		{"domains/example.com", ""},
		{"domains/{tags}", `"tags" is repeated`},
		{"domains/{labels}", `"labels" is repeated`},
		{"domains/{inners.name}", `"inners" is repeated`},
		{"domains/{missing}", `no field "missing" in t.Req`},
		{"domains/{inner.missing}", `no field "missing" in t.Inner`},
		{"domains/{inner}", `"inner" is a message`},
		{"domains/{fqdn.x}", `"fqdn" is not a message`},
		{"domains/{flag}", `"flag" is bool`},
		{"domains/{}", "empty field path"},
		{"domains/{fqdn", "unclosed '{'"},
		{"domains/fqdn}", "unbalanced '}'"},
		{"{fqdn}", "collection/id"},
		{"domains/{fqdn}/x", "collection/id"},
		{"domains/{fqdn}/records/www", ""},
		{"Domains/{fqdn}", "collection/id"},
		{"domains/" + strings.Repeat("a", maxTemplateLen), "longer than"},
	} {
		_, err := CompileTemplate(md, c.tmpl)
		switch {
		case c.wantErr == "" && err != nil:
			t.Errorf("%q: %v", c.tmpl, err)
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
			t.Errorf("%q: error %v, want one containing %q", c.tmpl, err, c.wantErr)
		}
	}
}

func TestFill(t *testing.T) {
	md := reqDesc(t)
	inner := md.Fields().ByName("inner").Message()
	deep := inner.Fields().ByName("deep").Message()
	build := func(set func(m *dynamicpb.Message)) *dynamicpb.Message {
		m := dynamicpb.NewMessage(md)
		set(m)
		return m
	}
	withInner := func(name, leaf string) func(m *dynamicpb.Message) {
		return func(m *dynamicpb.Message) {
			in := dynamicpb.NewMessage(inner)
			if name != "" {
				in.Set(inner.Fields().ByName("name"), protoreflect.ValueOfString(name))
			}
			if leaf != "" {
				d := dynamicpb.NewMessage(deep)
				d.Set(deep.Fields().ByName("leaf"), protoreflect.ValueOfString(leaf))
				in.Set(inner.Fields().ByName("deep"), protoreflect.ValueOfMessage(d))
			}
			m.Set(md.Fields().ByName("inner"), protoreflect.ValueOfMessage(in))
		}
	}
	setStr := func(name, v string) func(m *dynamicpb.Message) {
		return func(m *dynamicpb.Message) {
			m.Set(md.Fields().ByName(protoreflect.Name(name)), protoreflect.ValueOfString(v))
		}
	}
	for _, c := range []struct {
		name, tmpl string
		msg        *dynamicpb.Message
		want       string
		wantField  string // FieldError.Field when an error is expected
	}{
		{"top-level", "domains/{fqdn}", build(setStr("fqdn", "example.com")), "domains/example.com", ""},
		{"nested", "domains/{inner.name}", build(withInner("example.org", "")), "domains/example.org", ""},
		{"two levels", "domains/{inner.deep.leaf}", build(withInner("", "a.b")), "domains/a.b", ""},
		{"integer", "accounts/{id}", build(func(m *dynamicpb.Message) { m.Set(md.Fields().ByName("id"), protoreflect.ValueOfInt64(-42)) }), "accounts/-42", ""},
		{"unsigned", "n/{n}", build(func(m *dynamicpb.Message) { m.Set(md.Fields().ByName("n"), protoreflect.ValueOfUint32(7)) }), "n/7", ""},
		{"two fields", "domains/{fqdn}/records/{inner.name}", build(func(m *dynamicpb.Message) { setStr("fqdn", "e.com")(m); withInner("www", "")(m) }), "domains/e.com/records/www", ""},
		{"missing top-level", "domains/{fqdn}", build(func(*dynamicpb.Message) {}), "", "fqdn"},
		{"empty string", "domains/{fqdn}", build(setStr("fqdn", "")), "", "fqdn"},
		{"zero integer", "accounts/{id}", build(func(*dynamicpb.Message) {}), "", "id"},
		{"missing parent", "domains/{inner.name}", build(func(*dynamicpb.Message) {}), "", "inner.name"},
		{"missing leaf", "domains/{inner.name}", build(withInner("", "x")), "", "inner.name"},
		{"missing deep parent", "domains/{inner.deep.leaf}", build(withInner("n", "")), "", "inner.deep.leaf"},
		{"slash in value", "domains/{fqdn}", build(setStr("fqdn", "example.com/records")), "", "fqdn"},
		{"space in value", "domains/{fqdn}", build(setStr("fqdn", "a b")), "", "fqdn"},
		{"dot-dot id", "domains/{fqdn}", build(setStr("fqdn", "..")), "", "fqdn"},
		{"second field missing", "domains/{fqdn}/records/{inner.name}", build(setStr("fqdn", "e.com")), "", "inner.name"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tm, err := CompileTemplate(md, c.tmpl)
			if err != nil {
				t.Fatal(err)
			}
			got, err := tm.Fill(c.msg)
			if c.wantField == "" {
				if err != nil || got != c.want {
					t.Fatalf("Fill = %q, %v; want %q", got, err, c.want)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != c.wantField {
				t.Fatalf("Fill = %q, %v; want a FieldError on %s", got, err, c.wantField)
			}
			if v := c.msg.Get(md.Fields().ByName("fqdn")).String(); v != "" && strings.Contains(err.Error(), v) {
				t.Fatalf("error %q echoes the request value", err)
			}
		})
	}
}

func TestRequirementsOfTheDomainsExample(t *testing.T) {
	sd := domainsv1.File_sigil_examples_domains_v1_domains_proto.Services().ByName("DomainService")
	reqs, err := Requirements(sd, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Requirement{}
	for _, r := range reqs {
		got[r.Method] = r
	}
	want := map[string]Requirement{
		"/sigil.examples.domains.v1.DomainService/ListDomains": {Permission: "domain:view"},
		"/sigil.examples.domains.v1.DomainService/GetDomain":   {Permission: "domain:view", Resource: "domains/{fqdn}"},
		"/sigil.examples.domains.v1.DomainService/RenewDomain": {Permission: "domain:renew", Resource: "domains/{domain.fqdn}"},
		"/sigil.examples.domains.v1.DomainService/Ping":        {Public: true},
	}
	if len(got) != len(want) {
		t.Fatalf("requirements %v, want %v", got, want)
	}
	for m, w := range want {
		g := got[m]
		if g.Public != w.Public || g.Permission != w.Permission || g.Resource != w.Resource {
			t.Errorf("%s = %+v, want %+v", m, g, w)
		}
	}
}

func TestRequirementsStartUpErrors(t *testing.T) {
	for _, c := range []struct {
		name    string
		m       *descriptorpb.MethodDescriptorProto
		wantErr string
	}{
		{"valid", method("Ok", &sigilv1.Requirement{Permission: "domain:renew", Resource: "domains/{inner.deep.leaf}"}, false), ""},
		{"no annotation", method("None", nil, false), ""},
		{"typo in permission", method("Typo", &sigilv1.Requirement{Permission: "domain:renw"}, false), `"domain:renw" is not in the permission catalog`},
		{"resource without permission", method("NoPerm", &sigilv1.Requirement{Resource: "domains/{fqdn}"}, false), "permission is required"},
		{"repeated field", method("Rep", &sigilv1.Requirement{Permission: "domain:view", Resource: "domains/{tags}"}, false), `"tags" is repeated`},
		{"repeated parent", method("RepParent", &sigilv1.Requirement{Permission: "domain:view", Resource: "domains/{inners.name}"}, false), `"inners" is repeated`},
		{"unknown field", method("Unknown", &sigilv1.Requirement{Permission: "domain:view", Resource: "domains/{fqnd}"}, false), `no field "fqnd"`},
		{"public and requires", method("Both", &sigilv1.Requirement{Permission: "domain:view"}, true), "both"},
	} {
		t.Run(c.name, func(t *testing.T) {
			sd := testFile(t, c.m).Services().ByName("S")
			_, err := Requirements(sd, nil)
			if c.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.wantErr) || !strings.Contains(err.Error(), "/t.S/"+c.m.GetName()) {
				t.Fatalf("error %v, want one naming /t.S/%s and containing %q", err, c.m.GetName(), c.wantErr)
			}
			if _, err := New(Options{Services: []protoreflect.ServiceDescriptor{sd}, Checker: fakeChecker{}}); err == nil {
				t.Fatal("New accepted it")
			}
		})
	}
}

// FuzzFill fills a template from arbitrary field values: it never panics,
// and a rendered resource is always a valid resource name holding each
// value as one id, never with a value's '/' splitting it.
func FuzzFill(f *testing.F) {
	f.Add("example.com", "www", int64(1))
	f.Add("a/b", "", int64(0))
	f.Add("..", "%2F", int64(-1))
	f.Add("", "x", int64(9))
	md := reqDesc(f)
	inner := md.Fields().ByName("inner").Message()
	tm, err := CompileTemplate(md, "domains/{fqdn}/records/{inner.name}/v/{id}")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, fqdn, name string, id int64) {
		m := dynamicpb.NewMessage(md)
		m.Set(md.Fields().ByName("fqdn"), protoreflect.ValueOfString(fqdn))
		in := dynamicpb.NewMessage(inner)
		in.Set(inner.Fields().ByName("name"), protoreflect.ValueOfString(name))
		m.Set(md.Fields().ByName("inner"), protoreflect.ValueOfMessage(in))
		m.Set(md.Fields().ByName("id"), protoreflect.ValueOfInt64(id))
		res, err := tm.Fill(m)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v is not a FieldError", err)
			}
			return
		}
		segs := strings.Split(res, "/")
		if len(segs) != 6 || segs[1] != fqdn || segs[3] != name || segs[0] != "domains" {
			t.Fatalf("resource %q from fqdn %q name %q", res, fqdn, name)
		}
	})
}
