package authz

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	sigilv1 "github.com/sigil-auth/sigil/pkg/proto/sigil/v1"
	"github.com/sigil-auth/sigil/pkg/scope"
)

// maxTemplateLen bounds a resource template.
const maxTemplateLen = 512

// maxPathDepth bounds the nesting of a field path.
const maxPathDepth = 16

// Requirement is what one method needs, as declared by its options.
type Requirement struct {
	// Method is the full method name, "/package.Service/Method".
	Method string
	// Public is true for a method marked (sigil.v1.public) = true: no token
	// is read or checked.
	Public bool
	// Permission is the permission the token must grant.
	Permission string
	// Resource is the resource template, e.g. "domains/{domain.fqdn}";
	// empty when the method names no resource.
	Resource string

	tmpl *Template
}

// Template is a compiled resource template: literal text and field paths
// of a request message.
type Template struct {
	src   string
	parts []tmplPart
}

type tmplPart struct {
	literal string
	path    []protoreflect.FieldDescriptor // nil for a literal
	name    string                         // dotted path, for errors
}

// FieldError is a request field that a resource template cannot be filled
// from: missing, empty, or not a valid resource id. It names the field,
// never its value.
type FieldError struct {
	// Field is the dotted field path.
	Field string
	// Rule says what is wrong.
	Rule string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Rule }

// Requirements lists the requirement of every method of sd, in declaration
// order, checking each against catalog (scope.Builtin() when nil): a method
// with no annotation is listed with an empty Permission and Public false
// (it will be denied), a permission the catalog does not know, a resource
// template naming an unknown, repeated, map or non-scalar field, or one that
// cannot render a "collection/id" resource name is an error naming the
// method.
func Requirements(sd protoreflect.ServiceDescriptor, catalog *scope.Catalog) ([]Requirement, error) {
	if catalog == nil {
		catalog = scope.Builtin()
	}
	var reqs []Requirement
	var errs []error
	methods := sd.Methods()
	for i := range methods.Len() {
		md := methods.Get(i)
		r, err := requirementOf(md, catalog)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		reqs = append(reqs, r)
	}
	return reqs, errors.Join(errs...)
}

// fullMethod returns the gRPC method name of md.
func fullMethod(md protoreflect.MethodDescriptor) string {
	return "/" + string(md.Parent().FullName()) + "/" + string(md.Name())
}

func requirementOf(md protoreflect.MethodDescriptor, catalog *scope.Catalog) (Requirement, error) {
	r := Requirement{Method: fullMethod(md)}
	opts, _ := md.Options().(interface{ ProtoReflect() protoreflect.Message })
	if opts == nil {
		return r, nil
	}
	msg := opts.ProtoReflect().Interface()
	public, _ := proto.GetExtension(msg, sigilv1.E_Public).(bool)
	req, _ := proto.GetExtension(msg, sigilv1.E_Requires).(*sigilv1.Requirement)
	hasReq := req != nil && (req.GetPermission() != "" || req.GetResource() != "")
	switch {
	case public && hasReq:
		return r, fmt.Errorf("%s: both (sigil.v1.public) and (sigil.v1.requires) are set", r.Method)
	case public:
		r.Public = true
		return r, nil
	case !hasReq:
		return r, nil
	}
	if req.GetPermission() == "" {
		return r, fmt.Errorf("%s: (sigil.v1.requires).permission is required", r.Method)
	}
	if _, ok := catalog.Lookup(req.GetPermission()); !ok {
		return r, fmt.Errorf("%s: (sigil.v1.requires).permission %q is not in the permission catalog", r.Method, req.GetPermission())
	}
	r.Permission = req.GetPermission()
	r.Resource = req.GetResource()
	if r.Resource != "" {
		t, err := CompileTemplate(md.Input(), r.Resource)
		if err != nil {
			return r, fmt.Errorf("%s: (sigil.v1.requires).resource: %w", r.Method, err)
		}
		r.tmpl = t
	}
	return r, nil
}

// CompileTemplate compiles a resource template against the request message
// md: each "{a.b.c}" must name a singular field path whose last field is a
// string or an integer and whose other fields are messages. The template
// must render a valid resource name ("collection/id").
func CompileTemplate(md protoreflect.MessageDescriptor, src string) (*Template, error) {
	if len(src) > maxTemplateLen {
		return nil, fmt.Errorf("template longer than %d bytes", maxTemplateLen)
	}
	t := &Template{src: src}
	rest := src
	for rest != "" {
		open := strings.IndexByte(rest, '{')
		close := strings.IndexByte(rest, '}')
		if open < 0 {
			if close >= 0 {
				return nil, errors.New("unbalanced '}'")
			}
			t.parts = append(t.parts, tmplPart{literal: rest})
			break
		}
		if close >= 0 && close < open {
			return nil, errors.New("unbalanced '}'")
		}
		if open > 0 {
			t.parts = append(t.parts, tmplPart{literal: rest[:open]})
		}
		end := strings.IndexByte(rest[open:], '}')
		if end < 0 {
			return nil, errors.New("unclosed '{'")
		}
		name := rest[open+1 : open+end]
		path, err := fieldPath(md, name)
		if err != nil {
			return nil, err
		}
		t.parts = append(t.parts, tmplPart{path: path, name: name})
		rest = rest[open+end+1:]
	}
	// The template must render a resource name whatever valid ids the
	// fields hold: render it with a placeholder id.
	var b strings.Builder
	for _, p := range t.parts {
		if p.path == nil {
			b.WriteString(p.literal)
		} else {
			b.WriteString("x")
		}
	}
	if err := scope.ValidateResource(b.String()); err != nil {
		return nil, errors.New("does not render a collection/id resource name")
	}
	return t, nil
}

// fieldPath resolves a dotted field path in md.
func fieldPath(md protoreflect.MessageDescriptor, name string) ([]protoreflect.FieldDescriptor, error) {
	if name == "" {
		return nil, errors.New("empty field path {}")
	}
	segs := strings.Split(name, ".")
	if len(segs) > maxPathDepth {
		return nil, fmt.Errorf("field path %q deeper than %d", name, maxPathDepth)
	}
	var path []protoreflect.FieldDescriptor
	cur := md
	for i, s := range segs {
		if cur == nil {
			return nil, fmt.Errorf("field path %q: %q is not a message", name, strings.Join(segs[:i], "."))
		}
		fd := cur.Fields().ByName(protoreflect.Name(s))
		if fd == nil {
			return nil, fmt.Errorf("field path %q: no field %q in %s", name, s, cur.FullName())
		}
		if fd.IsList() || fd.IsMap() {
			return nil, fmt.Errorf("field path %q: %q is repeated; only singular fields may fill a resource", name, s)
		}
		path = append(path, fd)
		last := i == len(segs)-1
		switch {
		case fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind:
			if last {
				return nil, fmt.Errorf("field path %q: %q is a message, not a string or integer", name, s)
			}
			cur = fd.Message()
		case !last:
			cur = nil
		default:
			switch fd.Kind() {
			case protoreflect.StringKind, protoreflect.Int32Kind, protoreflect.Int64Kind, protoreflect.Uint32Kind, protoreflect.Uint64Kind,
				protoreflect.Sint32Kind, protoreflect.Sint64Kind, protoreflect.Fixed32Kind, protoreflect.Fixed64Kind,
				protoreflect.Sfixed32Kind, protoreflect.Sfixed64Kind:
			default:
				return nil, fmt.Errorf("field path %q: %q is %s, not a string or integer", name, s, fd.Kind())
			}
		}
	}
	return path, nil
}

// Fill renders the template from msg. A field that is unset or empty
// (proto3 presence: "" and 0 are empty), or whose value makes the resource
// invalid (e.g. holds a '/'), is a *FieldError naming the field path.
func (t *Template) Fill(msg protoreflect.Message) (string, error) {
	var b strings.Builder
	for _, p := range t.parts {
		if p.path == nil {
			b.WriteString(p.literal)
			continue
		}
		v, ok := value(msg, p.path)
		if !ok {
			return "", &FieldError{Field: p.name, Rule: "is required"}
		}
		if !validID(v) {
			return "", &FieldError{Field: p.name, Rule: "must be an id of A-Z a-z 0-9 . _ ~ : @ + -"}
		}
		b.WriteString(v)
	}
	res := b.String()
	if err := scope.ValidateResource(res); err != nil {
		// An id such as "." or "..": name the first field.
		for _, p := range t.parts {
			if p.path != nil {
				return "", &FieldError{Field: p.name, Rule: "does not make a valid resource name"}
			}
		}
		return "", &FieldError{Field: "resource", Rule: "does not make a valid resource name"}
	}
	return res, nil
}

// String returns the template's source.
func (t *Template) String() string { return t.src }

// value reads a scalar at path, ok false when unset or empty.
func value(msg protoreflect.Message, path []protoreflect.FieldDescriptor) (string, bool) {
	for i, fd := range path {
		if !msg.IsValid() || !msg.Has(fd) {
			return "", false
		}
		v := msg.Get(fd)
		if i < len(path)-1 {
			msg = v.Message()
			continue
		}
		switch fd.Kind() {
		case protoreflect.StringKind:
			s := v.String()
			return s, s != ""
		case protoreflect.Uint32Kind, protoreflect.Uint64Kind, protoreflect.Fixed32Kind, protoreflect.Fixed64Kind:
			return strconv.FormatUint(v.Uint(), 10), true
		default:
			return strconv.FormatInt(v.Int(), 10), true
		}
	}
	return "", false
}

// validID reports whether s may stand as (part of) a resource id: bounded
// and made of the id bytes, so that a value never adds a '/' segment.
func validID(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("._~:@+-", c) >= 0:
		default:
			return false
		}
	}
	return true
}
