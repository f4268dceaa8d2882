package routes

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigil-auth/sigil/pkg/scope"
)

const testPolicy = `
default: deny
routes:
  - name: domain-renew
    method: POST
    template: /v5/domain/domains/{fqdn}/renew
    permission: domain:renew
    resource: domains/{fqdn}
    org_header: X-Org-Id
  - name: domain-record
    method: GET
    template: /v5/domain/domains/{fqdn}/records/{rname}
    permission: domain:view
    resource: domains/{fqdn}/records/{rname}
  - name: domain-search
    method: GET
    template: /v5/domain/domains/search
    permission: domain:view
  - name: domain-view
    method: GET
    template: /v5/domain/domains/{fqdn}
    permission: domain:view
    resource: domains/{fqdn}
  - name: certificates-list
    method: GET
    template: /v5/certificate/issued-certs
    permission: certificate:view
  - name: certificates-list-slash
    method: GET
    template: /v5/certificate/issued-certs/
    permission: certificate:manage
  - name: any-method
    method: "*"
    template: /v5/billing/info
    permission: billing:view
  - name: root
    method: GET
    template: /
    permission: organization:view
`

func mustParse(t testing.TB, src string) *Policy {
	t.Helper()
	p, err := Parse("test.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestMatch(t *testing.T) {
	p := mustParse(t, testPolicy)
	tests := []struct {
		name, method, path string
		want               Outcome
		route, resource    string
	}{
		{"capture", "POST", "/v5/domain/domains/example.com/renew", Matched, "domain-renew", "domains/example.com"},
		{"two captures", "GET", "/v5/domain/domains/example.com/records/www", Matched, "domain-record", "domains/example.com/records/www"},
		{"literal before later capture", "GET", "/v5/domain/domains/search", Matched, "domain-search", ""},
		{"capture after literal route", "GET", "/v5/domain/domains/example.org", Matched, "domain-view", "domains/example.org"},
		{"query ignored", "GET", "/v5/domain/domains/example.org?fields=all&x=/a/b", Matched, "domain-view", "domains/example.org"},
		{"fragment ignored", "GET", "/v5/domain/domains/example.org#top", Matched, "domain-view", "domains/example.org"},
		{"no resource", "GET", "/v5/certificate/issued-certs", Matched, "certificates-list", ""},
		{"trailing slash is its own route", "GET", "/v5/certificate/issued-certs/", Matched, "certificates-list-slash", ""},
		{"trailing slash does not match", "GET", "/v5/domain/domains/example.com/", NoRoute, "", ""},
		{"missing trailing slash does not match slash template", "POST", "/v5/certificate/issued-certs", NoRoute, "", ""},
		{"method mismatch", "GET", "/v5/domain/domains/example.com/renew", NoRoute, "", ""},
		{"method is case-sensitive", "post", "/v5/domain/domains/example.com/renew", NoRoute, "", ""},
		{"star method GET", "GET", "/v5/billing/info", Matched, "any-method", ""},
		{"star method DELETE", "DELETE", "/v5/billing/info", Matched, "any-method", ""},
		{"root", "GET", "/", Matched, "root", ""},
		{"unknown path", "GET", "/v5/unknown", NoRoute, "", ""},
		{"extra segment", "GET", "/v5/domain/domains/example.com/records/www/x", NoRoute, "", ""},
		{"literal is case-sensitive", "GET", "/V5/domain/domains/example.com", NoRoute, "", ""},
		{"percent-encoded capture decoded", "GET", "/v5/domain/domains/ex%61mple.com", Matched, "domain-view", "domains/example.com"},
		{"percent-encoded literal decoded", "GET", "/v5/domain/%64omains/example.com", Matched, "domain-view", "domains/example.com"},
		{"encoded slash in capture rejected", "GET", "/v5/domain/domains/example.com%2Frecords%2Fwww", Invalid, "domain-view", ""},
		{"lower-case encoded slash rejected", "GET", "/v5/domain/domains/a%2fb", Invalid, "domain-view", ""},
		{"encoded dot-dot segment rejected", "GET", "/v5/domain/domains/%2e%2e/renew", Invalid, "", ""},
		{"dot-dot segment rejected", "GET", "/v5/domain/domains/../../billing/info", Invalid, "", ""},
		{"dot segment rejected", "GET", "/v5/./billing/info", Invalid, "", ""},
		{"doubled slash rejected", "GET", "/v5//billing/info", Invalid, "", ""},
		{"bad escape rejected", "GET", "/v5/domain/domains/%zz", Invalid, "", ""},
		{"truncated escape rejected", "GET", "/v5/domain/domains/a%2", Invalid, "", ""},
		{"relative path rejected", "GET", "v5/billing/info", Invalid, "", ""},
		{"empty path rejected", "GET", "", Invalid, "", ""},
		{"capture not an id", "GET", "/v5/domain/domains/a%20b", Invalid, "domain-view", ""},
		{"capture dot-dot id via literal route", "GET", "/v5/domain/domains/example.com/records/%2e", Invalid, "", ""},
		{"capture with non-ascii", "GET", "/v5/domain/domains/%C3%A9.fr", Invalid, "domain-view", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := p.Match(tc.method, tc.path)
			if m.Outcome != tc.want {
				t.Fatalf("Match(%s %s) outcome = %v, want %v", tc.method, tc.path, m.Outcome, tc.want)
			}
			gotRoute := ""
			if m.Route != nil {
				gotRoute = m.Route.Name
			}
			if gotRoute != tc.route {
				t.Errorf("route = %q, want %q", gotRoute, tc.route)
			}
			if m.Resource != tc.resource {
				t.Errorf("resource = %q, want %q", m.Resource, tc.resource)
			}
		})
	}
}

func TestMatchFirstRouteWins(t *testing.T) {
	p := mustParse(t, `
routes:
  - {name: specific, method: GET, template: "/a/{x}", permission: domain:view, resource: "domains/{x}"}
  - {name: general, method: "*", template: "/a/{y}", permission: domain:renew, resource: "domains/{y}"}
`)
	if m := p.Match("GET", "/a/b"); m.Route == nil || m.Route.Name != "specific" || m.Route.Permission != "domain:view" {
		t.Fatalf("GET: %+v", m)
	}
	if m := p.Match("PUT", "/a/b"); m.Route == nil || m.Route.Name != "general" || m.Resource != "domains/b" {
		t.Fatalf("PUT: %+v", m)
	}
}

func TestInvalidCaptureNeverFallsThrough(t *testing.T) {
	// With default: allow, a path that a protected route's shape matches
	// but whose capture is refused must not be let through.
	p := mustParse(t, `
default: allow
routes:
  - {method: GET, template: "/d/{fqdn}", permission: domain:view, resource: "domains/{fqdn}"}
`)
	if m := p.Match("GET", "/d/a%2Fb"); m.Outcome != Invalid {
		t.Fatalf("outcome %v, want Invalid", m.Outcome)
	}
	if m := p.Match("GET", "/other"); m.Outcome != NoRoute {
		t.Fatalf("outcome %v, want NoRoute", m.Outcome)
	}
	if p.Default != DefaultAllow {
		t.Fatal("default not allow")
	}
	if p.Routes[0].Name != "route-0" {
		t.Fatalf("default name %q", p.Routes[0].Name)
	}
}

func TestParseErrors(t *testing.T) {
	route := func(fields string) string { return "routes:\n" + block(fields) }
	ok := "method: GET, template: /a/{x}, permission: domain:view, resource: domains/{x}"
	tests := []struct {
		name, src, want string
	}{
		{"empty file", "", "empty file"},
		{"unknown top-level field", "defaults: deny\n" + route(ok), "field defaults not found"},
		{"unknown route field", route(ok + ", permissions: x"), "field permissions not found"},
		{"bad default", "default: maybe\n" + route(ok), "default: must be deny or allow"},
		{"no routes", "default: deny\n", "at least one route"},
		{"two documents", route(ok) + "---\n" + route(ok), "more than one YAML document"},
		{"missing method", route("template: /a, permission: domain:view"), "routes[0].method: is required"},
		{"lower-case method", route("method: get, template: /a, permission: domain:view"), "routes[0].method"},
		{"missing template", route("method: GET, permission: domain:view"), "routes[0].template: is required"},
		{"relative template", route("method: GET, template: a/b, permission: domain:view"), "routes[0].template: must start with /"},
		{"empty segment", route("method: GET, template: /a//b, permission: domain:view"), "routes[0].template: segment 2 is empty"},
		{"unclosed brace", route("method: GET, template: /a/{x, permission: domain:view"), "routes[0].template: segment 2"},
		{"partial capture", route("method: GET, template: /a/x{y}, permission: domain:view"), "routes[0].template: segment 2"},
		{"empty capture", route("method: GET, template: /a/{}, permission: domain:view"), "routes[0].template"},
		{"bad capture name", route("method: GET, template: /a/{X-1}, permission: domain:view"), "capture name"},
		{"duplicate capture", route("method: GET, template: /a/{x}/{x}, permission: domain:view"), "routes[0].template: capture {x} appears twice"},
		{"encoded literal", route("method: GET, template: /a%2Fb, permission: domain:view"), "routes[0].template"},
		{"dot-dot literal", route("method: GET, template: /a/.., permission: domain:view"), "routes[0].template"},
		{"bad permission", route("method: GET, template: /a, permission: domain"), "routes[0].permission: must be product:action"},
		{"missing permission", route("method: GET, template: /a"), "routes[0].permission"},
		{"unknown capture in resource", route("method: GET, template: /a/{x}, permission: domain:view, resource: domains/{y}"), "routes[0].resource: {y} is not a capture"},
		{"unclosed resource brace", route("method: GET, template: /a/{x}, permission: domain:view, resource: domains/{x"), "routes[0].resource: unclosed {"},
		{"stray resource brace", route("method: GET, template: /a/{x}, permission: domain:view, resource: domains/x}"), "routes[0].resource: unmatched }"},
		{"resource not a name", route("method: GET, template: /a/{x}, permission: domain:view, resource: domains/{x}/records"), "routes[0].resource: does not render"},
		{"bad org header", route(ok + ", org_header: 'x org'"), "routes[0].org_header"},
		{"org header is authorization", route(ok + ", org_header: Authorization"), "routes[0].org_header"},
		{"bad name", route(ok + ", name: 'Has Space'"), "routes[0].name"},
		{"duplicate name", "routes:\n" + block("name: a, "+ok) + block("name: a, method: PUT, template: /b, permission: domain:view"), "routes[1].name"},
		{"shadowed route", "routes:\n" + block("method: *, template: /a/{x}, permission: domain:view") + block("method: GET, template: /a/b, permission: domain:renew"), "routes[1].template: never reached, routes[0]"},
		{"exact duplicate", "routes:\n" + block(ok) + block(ok), "routes[1].template: never reached"},
		{"yaml syntax", "routes: [", "test.yaml"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("test.yaml", []byte(tc.src))
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			if !strings.HasPrefix(err.Error(), "routes test.yaml: ") {
				t.Errorf("error %q does not name the file", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

// block writes "k: v, k: v" as one YAML list item, every value quoted.
func block(fields string) string {
	var b strings.Builder
	for i, kv := range strings.Split(fields, ", ") {
		k, v, _ := strings.Cut(kv, ": ")
		v = strings.Trim(v, "'")
		prefix := "    "
		if i == 0 {
			prefix = "  - "
		}
		b.WriteString(prefix + k + ": '" + strings.ReplaceAll(v, "'", "''") + "'\n")
	}
	return b.String()
}

func TestParseAcceptsNonShadowingOverlap(t *testing.T) {
	// The literal first, the capture second: both reachable.
	p := mustParse(t, `
routes:
  - {method: GET, template: /a/b, permission: domain:renew}
  - {method: GET, template: "/a/{x}", permission: domain:view}
  - {method: GET, template: "/a/{x}/", permission: domain:view}
`)
	if len(p.Routes) != 3 {
		t.Fatal(len(p.Routes))
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "routes.yaml")
	if err := os.WriteFile(good, []byte(testPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	if p, err := Load(good); err != nil || len(p.Routes) != 8 {
		t.Fatalf("Load = %v, %v", p, err)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("missing file: %v", err)
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, []byte(testPolicy+"#"+strings.Repeat("x", MaxFileSize)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big); err == nil || !strings.Contains(err.Error(), "big.yaml: larger than") {
		t.Fatalf("big file: %v", err)
	}
}

func TestExampleRoutesFileLoads(t *testing.T) {
	p, err := Load(filepath.Join("..", "..", "..", "..", "deploy", "envoy", "routes.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Default != DefaultDeny {
		t.Error("the example policy should deny unmatched requests")
	}
	if m := p.Match("POST", "/v5/domain/domains/example.com/renew"); m.Outcome != Matched || m.Route.Permission != "domain:renew" || m.Resource != "domains/example.com" {
		t.Errorf("renew: %+v", m)
	}
}

func FuzzMatch(f *testing.F) {
	p := mustParse(f, testPolicy)
	for _, s := range []string{
		"/v5/domain/domains/example.com/renew", "/v5/domain/domains/a%2Fb", "/v5/domain/domains/%2e%2e/renew",
		"/v5/domain/domains/example.com/records/www", "/v5/certificate/issued-certs/", "/", "", "//", "/%", "/v5/billing/info?x",
		"/v5/domain/domains/%252F", "/v5/domain/domains/ex%00", "/v5/domain/domains/a%2f..%2fb/renew",
	} {
		f.Add("GET", s)
		f.Add("POST", s)
	}
	f.Fuzz(func(t *testing.T, method, path string) {
		m := p.Match(method, path)
		switch m.Outcome {
		case Matched:
			if m.Route == nil {
				t.Fatal("matched without a route")
			}
			if m.Resource != "" {
				if err := scope.ValidateResource(m.Resource); err != nil {
					t.Fatalf("rendered resource %q invalid: %v", m.Resource, err)
				}
			} else if m.Route.Resource != "" {
				t.Fatal("route has a resource template but rendered nothing")
			}
			// Captures never hold '/': the rendered resource has exactly
			// the template's segments.
			if strings.Count(m.Resource, "/") != strings.Count(m.Route.Resource, "/") {
				t.Fatalf("resource %q has more segments than %q", m.Resource, m.Route.Resource)
			}
			if m.Route.Method != "*" && m.Route.Method != method {
				t.Fatalf("method %q matched route %q", method, m.Route.Method)
			}
		case NoRoute, Invalid:
			if m.Resource != "" {
				t.Fatal("resource without a match")
			}
		default:
			t.Fatalf("outcome %v", m.Outcome)
		}
	})
}

// FuzzParse feeds arbitrary policy files to the parser: it must never
// panic, and a policy it accepts must match its own templates' shapes
// without panicking.
func FuzzParse(f *testing.F) {
	f.Add([]byte(testPolicy))
	f.Add([]byte("default: allow\n"))
	f.Add([]byte("routes:\n  - {method: GET, template: \"/a/{x}/\", permission: a:b, resource: \"c/{x}\"}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse("fuzz.yaml", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "routes fuzz.yaml: ") {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		for _, r := range p.Routes {
			path := strings.NewReplacer("{", "", "}", "").Replace(r.Template)
			_ = p.Match(r.Method, path)
		}
	})
}

// A path of maxSegments segments is matched; one more is Invalid, however
// the segments look.
func TestMatchSegmentBound(t *testing.T) {
	p := mustParse(t, testPolicy)
	atBound := strings.Repeat("/a", maxSegments)
	if m := p.Match("GET", atBound); m.Outcome != NoRoute {
		t.Fatalf("%d segments: outcome %v, want NoRoute", maxSegments, m.Outcome)
	}
	for _, path := range []string{atBound + "/a", atBound + "/", atBound + "/a?q=1"} {
		if m := p.Match("GET", path); m.Outcome != Invalid {
			t.Fatalf("%d segments (%q...): outcome %v, want Invalid", maxSegments+1, path[len(path)-6:], m.Outcome)
		}
	}
}

// Matching allocates nothing but the rendered resource: the path is split
// into a buffer on the stack.
func TestMatchAllocations(t *testing.T) {
	p := mustParse(t, testPolicy)
	for _, tc := range []struct {
		method, path string
		want         float64
	}{
		{"POST", "/v5/domain/domains/example.com/renew?x=1", 1}, // "domains/example.com"
		{"GET", "/v5/certificate/issued-certs", 0},
		{"GET", "/v5/unknown/path/of/a/few/segments", 0},
		{"GET", "/v5//billing/info", 0},
	} {
		if got := testing.AllocsPerRun(100, func() { p.Match(tc.method, tc.path) }); got > tc.want {
			t.Errorf("Match(%s %s): %v allocations, want at most %v", tc.method, tc.path, got, tc.want)
		}
	}
}
