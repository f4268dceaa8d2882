package token

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"regexp/syntax"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/sigil-auth/sigil/pkg/scope"
)

// docRule is one scanner rule read from docs/secret-scanning.md.
type docRule struct {
	name     string
	re       *regexp.Regexp
	group    int      // the submatch that is the token (0: the whole match)
	keywords []string // literal strings the scanner looks for first
}

func readScanningDoc(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "secret-scanning.md"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// fenced returns the bodies of the fenced blocks of lang in doc.
func fenced(doc, lang string) []string {
	var out []string
	for _, m := range regexp.MustCompile("(?ms)^```"+regexp.QuoteMeta(lang)+"\n(.*?)^```").FindAllStringSubmatch(doc, -1) {
		out = append(out, m[1])
	}
	return out
}

// parseGitleaksTOML reads the gitleaks block. It accepts only the TOML the
// page uses (tables, literal and basic strings, string arrays, booleans)
// and fails on anything else, so that the block stays simple and valid.
func parseGitleaksTOML(t *testing.T, block string) []map[string]any {
	t.Helper()
	var (
		rules []map[string]any
		cur   map[string]any
	)
	kv := regexp.MustCompile(`^([A-Za-z]+) = (.*)$`)
	for _, line := range strings.Split(strings.TrimSpace(block), "\n") {
		switch line = strings.TrimSpace(line); {
		case line == "":
		case line == "[extend]":
			cur = map[string]any{}
		case line == "[[rules]]":
			cur = map[string]any{}
			rules = append(rules, cur)
		default:
			m := kv.FindStringSubmatch(line)
			if m == nil || cur == nil {
				t.Fatalf("gitleaks block: line %q is not a key = value in a table", line)
			}
			v := m[2]
			switch {
			case strings.HasPrefix(v, "'''") && strings.HasSuffix(v, "'''") && len(v) > 6:
				cur[m[1]] = v[3 : len(v)-3]
			case strings.HasPrefix(v, `"`) && strings.HasSuffix(v, `"`) && !strings.ContainsAny(v[1:len(v)-1], `"\`):
				cur[m[1]] = v[1 : len(v)-1]
			case v == "true" || v == "false":
				cur[m[1]] = v == "true"
			case strings.HasPrefix(v, `["`) && strings.HasSuffix(v, `"]`):
				var list []string
				for _, s := range strings.Split(v[2:len(v)-2], `", "`) {
					if strings.ContainsAny(s, `"\`) {
						t.Fatalf("gitleaks block: array %s is not a plain string array", v)
					}
					list = append(list, s)
				}
				cur[m[1]] = list
			default:
				t.Fatalf("gitleaks block: value %s is outside the TOML this test reads", v)
			}
		}
	}
	return rules
}

// docRules reads the three scanners' rules from the page.
func docRules(t *testing.T) []docRule {
	t.Helper()
	doc := readScanningDoc(t)
	var rules []docRule

	tomls := fenced(doc, "toml")
	if len(tomls) != 1 {
		t.Fatalf("%d toml blocks, want the gitleaks one", len(tomls))
	}
	gl := parseGitleaksTOML(t, tomls[0])
	if len(gl) != 1 {
		t.Fatalf("%d gitleaks rules, want 1", len(gl))
	}
	re, _ := gl[0]["regex"].(string)
	kw, _ := gl[0]["keywords"].([]string)
	rules = append(rules, docRule{name: "gitleaks", re: compileCommon(t, "gitleaks", re), keywords: kw})

	yamls := fenced(doc, "yaml")
	if len(yamls) != 1 {
		t.Fatalf("%d yaml blocks, want the TruffleHog one", len(yamls))
	}
	var th struct {
		Detectors []struct {
			Name     string            `yaml:"name"`
			Keywords []string          `yaml:"keywords"`
			Regex    map[string]string `yaml:"regex"`
		} `yaml:"detectors"`
	}
	dec := yaml.NewDecoder(strings.NewReader(yamls[0]))
	dec.KnownFields(true)
	if err := dec.Decode(&th); err != nil {
		t.Fatalf("TruffleHog block: %v", err)
	}
	if len(th.Detectors) != 1 || len(th.Detectors[0].Regex) != 1 {
		t.Fatalf("TruffleHog block: want one detector with one regex, got %+v", th)
	}
	for name, re := range th.Detectors[0].Regex {
		rules = append(rules, docRule{name: "trufflehog/" + name, re: compileCommon(t, "trufflehog", re), keywords: th.Detectors[0].Keywords})
	}

	texts := fenced(doc, "text")
	if len(texts) != 1 {
		t.Fatalf("%d text blocks, want the GitHub custom pattern", len(texts))
	}
	fields := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(texts[0]), "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			t.Fatalf("GitHub block: line %q is not a field", line)
		}
		fields[k] = v
	}
	secret, before, after := fields["Secret format"], fields["Before secret"], fields["After secret"]
	if secret == "" || before == "" || after == "" || len(fields) != 3 {
		t.Fatalf("GitHub block: want Secret format, Before secret and After secret, got %q", fields)
	}
	for _, part := range []string{secret, before, after} {
		compileCommon(t, "github", part)
	}
	// GitHub matches before, secret and after in sequence and reports
	// the secret.
	combined := "(?:" + before + ")(" + secret + ")(?:" + after + ")"
	rules = append(rules, docRule{name: "github", re: compileCommon(t, "github", combined), group: 1, keywords: []string{DefaultPrefix}})
	return rules
}

// compileCommon compiles re with Go's RE2 and checks that it keeps to what
// RE2, PCRE and Hyperscan read alike: no lookaround or backreference (RE2
// would not compile them), no \b, no lazy quantifier, no count of 1000 or
// more (RE2 refuses them), no flags.
func compileCommon(t *testing.T, name, re string) *regexp.Regexp {
	t.Helper()
	if re == "" {
		t.Fatalf("%s: empty regex", name)
	}
	parsed, err := syntax.Parse(re, syntax.Perl)
	if err != nil {
		t.Fatalf("%s: %q does not compile with RE2: %v", name, re, err)
	}
	if strings.Contains(strings.ReplaceAll(re, "(?:", ""), "(?") {
		t.Errorf("%s: %q uses a (? group other than (?: (flags or named groups differ between dialects)", name, re)
	}
	var walk func(r *syntax.Regexp)
	walk = func(r *syntax.Regexp) {
		switch r.Op {
		case syntax.OpWordBoundary, syntax.OpNoWordBoundary:
			t.Errorf("%s: %q uses \\b or \\B", name, re)
		case syntax.OpRepeat:
			if r.Min >= 1000 || r.Max >= 1000 {
				t.Errorf("%s: %q has a count of 1000 or more", name, re)
			}
		}
		if r.Flags&syntax.NonGreedy != 0 && (r.Op == syntax.OpStar || r.Op == syntax.OpPlus || r.Op == syntax.OpQuest || r.Op == syntax.OpRepeat) {
			t.Errorf("%s: %q uses a lazy quantifier", name, re)
		}
		for _, s := range r.Sub {
			walk(s)
		}
	}
	walk(parsed)
	return regexp.MustCompile(re)
}

// found returns what rule finds in text.
func (r docRule) found(text string) []string {
	out := []string{}
	for _, m := range r.re.FindAllStringSubmatch(text, -1) {
		out = append(out, m[r.group])
	}
	return out
}

// TestSecretScanningDoc runs the rules of docs/secret-scanning.md, read
// from the page itself, against real minted tokens and near-misses.
func TestSecretScanningDoc(t *testing.T) {
	codec := defaultCodec(t)
	short := mustMint(t, codec, testClaims(), testKey)
	claims := testClaims()
	claims.ID[0] ^= 0x55
	claims.Grants = []scope.Grant{{Permissions: []string{strings.Repeat("p", 2500)}, Resources: []string{"domains/example.com"}}}
	long := mustMint(t, codec, claims, testKey)
	if len(long) < 3000 {
		t.Fatalf("long token is %d bytes", len(long))
	}
	rules := docRules(t)
	if len(rules) != 3 {
		t.Fatalf("%d rules, want 3", len(rules))
	}
	// The documented shape is the format's: the shortest body and the
	// checksum width come from the code, not from the page.
	for _, r := range rules {
		if !strings.Contains(r.re.String(), fmt.Sprintf("%s[A-Za-z0-9_-]{%d,}[0-9A-Za-z]{%d}", DefaultPrefix, minBodyLen, checksumLen)) {
			t.Errorf("%s: %q is not prefix, at least %d body characters, %d checksum characters", r.name, r.re, minBodyLen, checksumLen)
		}
		if !reflect.DeepEqual(r.keywords, []string{DefaultPrefix}) {
			t.Errorf("%s: keywords %q, want [%q]", r.name, r.keywords, DefaultPrefix)
		}
	}

	for _, tok := range []string{short, long} {
		texts := map[string]string{
			"alone":    tok,
			"env file": "# deploy\nSIGIL_TOKEN=" + tok + "\nREGION=eu\n",
			"crlf":     "a\r\n" + tok + "\r\nb",
			"json":     `{"name":"ci","token":"` + tok + `"}`,
			"url":      "https://example.com/hook?token=" + tok + "&x=1",
			"yaml":     "auth:\n  token: '" + tok + "'\n",
			"shell":    `curl -H "Authorization: Bearer ` + tok + `" https://api.example.com`,
		}
		for _, r := range rules {
			for name, text := range texts {
				if got := r.found(text); !reflect.DeepEqual(got, []string{tok}) {
					t.Errorf("%s, %d-byte token, %s: found %d matches, want the token", r.name, len(tok), name, len(got))
				}
			}
		}
	}

	body := short[len(DefaultPrefix) : len(short)-checksumLen]
	misses := map[string]string{
		"wrong prefix":          "sigil_pak_" + short[len(DefaultPrefix):],
		"upper-case prefix":     strings.ToUpper(DefaultPrefix) + short[len(DefaultPrefix):],
		"body too short":        DefaultPrefix + body[:minBodyLen-1] + short[len(short)-checksumLen:],
		"broken across lines":   short[:60] + "\n" + short[60:],
		"space inside":          short[:40] + " " + short[40:],
		"standard base64 chars": DefaultPrefix + strings.Repeat("ab+/", 30) + "AAAAAA",
	}
	for _, r := range rules {
		for name, text := range misses {
			if got := r.found(" " + text + " "); len(got) != 0 {
				t.Errorf("%s, %s: found %d matches, want none", r.name, name, len(got))
			}
		}
	}

	// What a regex cannot see, the checksum does: one character changed
	// still has the shape, and Scan drops it.
	i := len(DefaultPrefix) + 10
	changed := short[:i] + map[bool]string{true: "B", false: "A"}[short[i] == 'A'] + short[i+1:]
	for _, r := range rules {
		if got := r.found(" " + changed + " "); !reflect.DeepEqual(got, []string{changed}) {
			t.Errorf("%s: a one-character change no longer has the shape (%d matches)", r.name, len(got))
		}
	}
	if got := Scan([]byte(" " + changed + " ")); len(got) != 0 {
		t.Error("Scan keeps a token with one character changed")
	}
	// A checksum of token characters that are not base62: the greedy rules
	// backtrack into the body and match a look-alike, GitHub's
	// after-pattern refuses it, and Scan drops it.
	notBase62 := " " + short[:len(short)-checksumLen] + "-----_ "
	for _, r := range rules {
		if got := r.found(notBase62); (r.name == "github") != (len(got) == 0) {
			t.Errorf("%s: %d matches for a checksum that is not base62", r.name, len(got))
		}
	}
	if got := Scan([]byte(notBase62)); len(got) != 0 {
		t.Error("Scan keeps a token whose checksum is not base62")
	}

	// Glued to more token characters: GitHub's after-pattern refuses it;
	// the others give back the token (backtracking drops the tail).
	glued := " " + short + "_ "
	for _, r := range rules {
		got := r.found(glued)
		switch r.name {
		case "github":
			if len(got) != 0 {
				t.Errorf("github: found %d matches glued to '_', want none", len(got))
			}
		default:
			if !reflect.DeepEqual(got, []string{short}) {
				t.Errorf("%s: glued to '_', found %d matches, want the token", r.name, len(got))
			}
		}
	}
}
