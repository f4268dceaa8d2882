// Package routes parses the authorizer's route policy (the --routes file) and
// matches HTTP requests against it: which permission, on which resource, an
// HTTP request needs. It knows nothing of gRPC or Envoy.
//
// Matching rules, chosen to fail closed:
//   - the query string (from '?') and a fragment (from '#') are ignored;
//   - the path is split on '/' first, then each segment is percent-decoded,
//     so an encoded slash (%2F) never creates a segment;
//   - a path that is not absolute, has a malformed escape, an empty segment
//     other than a trailing one ("//"), or a "." or ".." segment (also when
//     encoded, "%2e%2e") is rejected whatever the routes say: an upstream
//     that normalizes paths could otherwise serve a route the policy did not
//     check;
//   - a trailing slash is significant: "/a/b/" does not match the template
//     "/a/b", and the template "/a/b/" matches only "/a/b/";
//   - literal segments compare with the decoded segment, byte for byte
//     (case-sensitive); a capture matches exactly one non-empty segment;
//   - methods compare case-sensitively; a route's method "*" matches any;
//   - routes are tried in file order and the first whose method and segments
//     match is the route of the request. If one of its captures holds a '/'
//     once decoded, or the rendered resource is not a valid resource name,
//     the request is rejected (Invalid): it never falls through to a later
//     route or to the default;
//   - a request no route matches gets the policy's default (deny unless the
//     file says "default: allow").
package routes

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/sigil-auth/sigil/pkg/scope"
)

// MaxFileSize bounds the route policy file.
const MaxFileSize = 1 << 20

// MaxRoutes bounds the number of routes of a policy.
const MaxRoutes = 10000

// MaxPathLen bounds a request path (query excluded) that is matched; a
// longer one is Invalid.
const MaxPathLen = 8192

// maxSegments bounds the segments of a template and of a matched path.
const maxSegments = 64

// Default is what happens to a request that no route matches.
type Default int

const (
	// DefaultDeny denies unmatched requests (403, reason "no_route").
	DefaultDeny Default = iota
	// DefaultAllow lets unmatched requests through without any token check.
	DefaultAllow
)

// Policy is a parsed route policy. It is immutable and safe for concurrent use.
type Policy struct {
	// Default applies to requests no route matches.
	Default Default
	// Routes in file order.
	Routes []*Route
}

// Route is one entry of the policy.
type Route struct {
	// Index is the route's position in the file, from 0.
	Index int
	// Name labels the route in metrics and logs.
	Name string
	// Method is an upper-case HTTP method or "*".
	Method string
	// Template is the path template, e.g. "/v5/domain/domains/{fqdn}".
	Template string
	// Permission is the permission the request needs.
	Permission string
	// Resource is the resource template, e.g. "domains/{fqdn}"; empty means
	// no resource (the grant must not be restricted to resources).
	Resource string
	// OrgHeader is the lower-case name of the header carrying the
	// organization id, or empty.
	OrgHeader string

	segs []segment // of Template
	res  []part    // of Resource
}

// segment is a literal path segment or a capture.
type segment struct {
	literal string
	capture int // index into the captures, or -1 for a literal
}

// part is a literal piece of the resource template or a capture reference.
type part struct {
	literal string
	capture int // -1 for a literal
}

// Outcome is the result of matching a request.
type Outcome int

const (
	// NoRoute: no route matches; the policy's Default applies.
	NoRoute Outcome = iota
	// Matched: Route and Resource are set.
	Matched
	// Invalid: the path is malformed, or the first route whose shape it
	// matches got an unacceptable capture. Always a denial.
	Invalid
)

// Match is the answer of Policy.Match.
type Match struct {
	Outcome Outcome
	// Route is the matching route (Matched), the route whose capture was
	// rejected (Invalid, may be nil when the path itself is malformed), or nil.
	Route *Route
	// Resource is the rendered resource name (Matched; may be empty when the
	// route has no resource).
	Resource string
}

// Load reads and parses the policy file at path.
func Load(path string) (*Policy, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("routes %s: %w", path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("routes %s: %w", path, err)
	}
	return Parse(path, data)
}

// file is the YAML layout of a policy.
type file struct {
	Default string      `yaml:"default"`
	Routes  []routeFile `yaml:"routes"`
}

type routeFile struct {
	Name       string `yaml:"name"`
	Method     string `yaml:"method"`
	Template   string `yaml:"template"`
	Permission string `yaml:"permission"`
	Resource   string `yaml:"resource"`
	OrgHeader  string `yaml:"org_header"`
}

// Parse parses a policy; name (the file's path) prefixes every error.
func Parse(name string, data []byte) (*Policy, error) {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("routes %s: %s", name, fmt.Sprintf(format, args...))
	}
	if len(data) > MaxFileSize {
		return nil, fail("larger than %d bytes", MaxFileSize)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var f file
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fail("empty file")
		}
		return nil, fail("%v", err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fail("more than one YAML document")
	}
	p := &Policy{}
	switch f.Default {
	case "", "deny":
		p.Default = DefaultDeny
	case "allow":
		p.Default = DefaultAllow
	default:
		return nil, fail("default: must be deny or allow")
	}
	if len(f.Routes) == 0 && p.Default == DefaultDeny {
		return nil, fail("routes: at least one route is required")
	}
	if len(f.Routes) > MaxRoutes {
		return nil, fail("routes: at most %d routes", MaxRoutes)
	}
	names := map[string]int{}
	for i, rf := range f.Routes {
		r, field, err := newRoute(i, rf)
		if err != nil {
			return nil, fail("routes[%d].%s: %v", i, field, err)
		}
		if j, dup := names[r.Name]; dup {
			return nil, fail("routes[%d].name: %q already names routes[%d]", i, r.Name, j)
		}
		names[r.Name] = i
		for _, earlier := range p.Routes {
			if earlier.shadows(r) {
				return nil, fail("routes[%d].template: never reached, routes[%d] (%s %s) matches every request it would", i, earlier.Index, earlier.Method, earlier.Template)
			}
		}
		p.Routes = append(p.Routes, r)
	}
	return p, nil
}

// newRoute validates one route; on error it returns the field at fault.
func newRoute(i int, rf routeFile) (*Route, string, error) {
	r := &Route{Index: i, Name: rf.Name, Method: rf.Method, Template: rf.Template,
		Permission: rf.Permission, Resource: rf.Resource, OrgHeader: strings.ToLower(rf.OrgHeader)}
	if r.Name == "" {
		r.Name = fmt.Sprintf("route-%d", i)
	} else if err := checkName(r.Name); err != nil {
		return nil, "name", err
	}
	if err := checkMethod(r.Method); err != nil {
		return nil, "method", err
	}
	captures, err := r.parseTemplate()
	if err != nil {
		return nil, "template", err
	}
	if err := scope.ValidatePermission(r.Permission); err != nil {
		return nil, "permission", errors.New(reasonOf(err))
	}
	if err := r.parseResource(captures); err != nil {
		return nil, "resource", err
	}
	if rf.OrgHeader != "" {
		if err := checkHeaderName(r.OrgHeader); err != nil {
			return nil, "org_header", err
		}
	}
	return r, "", nil
}

// reasonOf returns a scope validation error's reason without its value.
func reasonOf(err error) string {
	var ve *scope.ValidationError
	if errors.As(err, &ve) {
		return ve.Reason
	}
	return err.Error()
}

func checkName(n string) error {
	if len(n) > 64 {
		return errors.New("at most 64 characters")
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return fmt.Errorf("%q: only a-z 0-9 _ - . (it is a metric label)", n)
		}
	}
	return nil
}

func checkMethod(m string) error {
	if m == "*" {
		return nil
	}
	if m == "" {
		return errors.New("is required (an upper-case HTTP method or *)")
	}
	if len(m) > 32 {
		return errors.New("at most 32 characters")
	}
	for i := 0; i < len(m); i++ {
		if m[i] < 'A' || m[i] > 'Z' {
			return fmt.Errorf("%q: must be upper case A-Z, or *", m)
		}
	}
	return nil
}

func checkHeaderName(h string) error {
	if len(h) > 128 {
		return errors.New("at most 128 characters")
	}
	if h[0] == ':' || h == "authorization" || strings.HasPrefix(h, "x-sigil-") {
		return fmt.Errorf("%q: not a header the client may set for this", h)
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("%q: only letters, digits, - and _", h)
		}
	}
	return nil
}

// parseTemplate fills r.segs and returns the capture names in order.
func (r *Route) parseTemplate() ([]string, error) {
	t := r.Template
	if t == "" {
		return nil, errors.New("is required")
	}
	if t[0] != '/' {
		return nil, errors.New("must start with /")
	}
	if len(t) > MaxPathLen {
		return nil, fmt.Errorf("at most %d bytes", MaxPathLen)
	}
	raw := strings.Split(t[1:], "/")
	if len(raw) > maxSegments {
		return nil, fmt.Errorf("at most %d segments", maxSegments)
	}
	var captures []string
	for i, s := range raw {
		last := i == len(raw)-1
		switch {
		case s == "":
			if !last {
				return nil, fmt.Errorf("segment %d is empty (doubled /)", i+1)
			}
			r.segs = append(r.segs, segment{literal: "", capture: -1})
		case s[0] == '{':
			if s[len(s)-1] != '}' || len(s) < 3 {
				return nil, fmt.Errorf("segment %d: a capture is a whole segment {name}", i+1)
			}
			name := s[1 : len(s)-1]
			if err := checkCaptureName(name); err != nil {
				return nil, fmt.Errorf("segment %d: %v", i+1, err)
			}
			for _, c := range captures {
				if c == name {
					return nil, fmt.Errorf("capture {%s} appears twice", name)
				}
			}
			r.segs = append(r.segs, segment{capture: len(captures)})
			captures = append(captures, name)
		default:
			if strings.ContainsAny(s, "{}") {
				return nil, fmt.Errorf("segment %d: a capture is a whole segment {name}", i+1)
			}
			if strings.ContainsAny(s, "%?#") {
				return nil, fmt.Errorf("segment %d: literal segments are written decoded, without %% ? #", i+1)
			}
			if s == "." || s == ".." {
				return nil, fmt.Errorf("segment %d: . and .. are not allowed", i+1)
			}
			r.segs = append(r.segs, segment{literal: s, capture: -1})
		}
	}
	return captures, nil
}

func checkCaptureName(n string) error {
	if len(n) > 32 {
		return fmt.Errorf("capture name %q: at most 32 characters", n)
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !(c >= 'a' && c <= 'z' || c == '_' || i > 0 && c >= '0' && c <= '9') {
			return fmt.Errorf("capture name %q: a-z and _, then also digits", n)
		}
	}
	return nil
}

// parseResource fills r.res; every capture it names must be in captures.
func (r *Route) parseResource(captures []string) error {
	t := r.Resource
	if t == "" {
		return nil
	}
	for len(t) > 0 {
		open := strings.IndexByte(t, '{')
		if open < 0 {
			if strings.IndexByte(t, '}') >= 0 {
				return errors.New("unmatched }")
			}
			r.res = append(r.res, part{literal: t, capture: -1})
			break
		}
		if open > 0 {
			if strings.IndexByte(t[:open], '}') >= 0 {
				return errors.New("unmatched }")
			}
			r.res = append(r.res, part{literal: t[:open], capture: -1})
		}
		end := strings.IndexByte(t[open:], '}')
		if end < 0 {
			return errors.New("unclosed {")
		}
		name := t[open+1 : open+end]
		idx := -1
		for i, c := range captures {
			if c == name {
				idx = i
			}
		}
		if idx < 0 {
			return fmt.Errorf("{%s} is not a capture of the template", name)
		}
		r.res = append(r.res, part{capture: idx})
		t = t[open+end+1:]
	}
	// With a plain value in every capture, the template must give a valid
	// resource name: captures stand for ids, not for structure.
	sample := make([]string, len(captures))
	for i := range sample {
		sample[i] = "x"
	}
	if err := scope.ValidateResource(r.render(sample)); err != nil {
		return fmt.Errorf("does not render a resource name: %s", reasonOf(err))
	}
	return nil
}

// render returns the resource name with captures in place, in one
// allocation.
func (r *Route) render(captures []string) string {
	n := 0
	for _, p := range r.res {
		if p.capture < 0 {
			n += len(p.literal)
		} else {
			n += len(captures[p.capture])
		}
	}
	var b strings.Builder
	b.Grow(n)
	for _, p := range r.res {
		if p.capture < 0 {
			b.WriteString(p.literal)
		} else {
			b.WriteString(captures[p.capture])
		}
	}
	return b.String()
}

// shadows reports whether r matches every request that later would: then
// later is unreachable, which the policy rejects.
func (r *Route) shadows(later *Route) bool {
	if r.Method != "*" && r.Method != later.Method {
		return false
	}
	if len(r.segs) != len(later.segs) {
		return false
	}
	for i, s := range r.segs {
		l := later.segs[i]
		if s.capture >= 0 {
			// A capture matches any non-empty segment; the trailing empty
			// segment of a template ending in '/' is a literal "".
			if l.capture < 0 && l.literal == "" {
				return false
			}
			continue
		}
		if l.capture >= 0 || l.literal != s.literal {
			return false
		}
	}
	return true
}

// Match finds the route of a request. method is the HTTP method as sent;
// path is the request target's path, possibly with a query string.
func (p *Policy) Match(method, path string) Match {
	var segBuf [maxSegments]string // the segments, without a heap allocation
	segs, ok := splitPath(path, &segBuf)
	if !ok {
		return Match{Outcome: Invalid}
	}
	var buf [8]string
	for _, r := range p.Routes {
		if r.Method != "*" && r.Method != method {
			continue
		}
		if len(r.segs) != len(segs) {
			continue
		}
		captures := buf[:0]
		matched := true
		for i, s := range r.segs {
			if s.capture >= 0 {
				if segs[i] == "" {
					matched = false
					break
				}
				captures = append(captures, segs[i])
				continue
			}
			if segs[i] != s.literal {
				matched = false
				break
			}
		}
		if !matched {
			continue
		}
		for _, c := range captures {
			if strings.IndexByte(c, '/') >= 0 {
				return Match{Outcome: Invalid, Route: r}
			}
		}
		res := r.render(captures)
		if res != "" && scope.ValidateResource(res) != nil {
			return Match{Outcome: Invalid, Route: r}
		}
		return Match{Outcome: Matched, Route: r, Resource: res}
	}
	return Match{Outcome: NoRoute}
}

// splitPath cuts the query and fragment, splits on '/' and decodes each
// segment, into buf. It fails on anything an upstream could read another
// way, and on more than maxSegments segments.
func splitPath(path string, buf *[maxSegments]string) ([]string, bool) {
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		path = path[:i]
	}
	if len(path) == 0 || path[0] != '/' || len(path) > MaxPathLen {
		return nil, false
	}
	segs := buf[:0]
	for rest := path[1:]; ; {
		s, after, more := strings.Cut(rest, "/")
		if len(segs) == maxSegments {
			return nil, false
		}
		switch {
		case s == "":
			if more { // an empty segment other than the trailing one
				return nil, false
			}
		default:
			d, ok := unescape(s)
			if !ok || d == "." || d == ".." {
				return nil, false
			}
			s = d
		}
		segs = append(segs, s)
		if !more {
			return segs, true
		}
		rest = after
	}
}

// unescape percent-decodes s. It rejects malformed escapes and bytes that
// are never legal in a path (controls, space, non-ASCII are left to the
// resource check, which refuses them in ids).
func unescape(s string) (string, bool) {
	if strings.IndexByte(s, '%') < 0 {
		return s, true
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b = append(b, s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", false
		}
		h, ok1 := unhex(s[i+1])
		l, ok2 := unhex(s[i+2])
		if !ok1 || !ok2 {
			return "", false
		}
		b = append(b, h<<4|l)
		i += 2
	}
	return string(b), true
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
