package token

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/sigil-auth/sigil/pkg/scope"
)

// scanTokens mints two different real tokens with codec.
func scanTokens(t testing.TB, codec *Codec) (string, string) {
	t.Helper()
	a := testClaims()
	b := testClaims()
	b.ID[0] ^= 0xff
	b.Grants = []scope.Grant{{Permissions: []string{"domain:view"}}}
	return mustMint(t, codec, a, testKey), mustMint(t, codec, b, testKey)
}

func tokensOf(cs []Candidate) []string {
	out := []string{}
	for _, c := range cs {
		out = append(out, c.Token)
	}
	return out
}

func TestScanFindsTokensInText(t *testing.T) {
	tok, tok2 := scanTokens(t, defaultCodec(t))
	cases := []struct {
		name string
		text string
		want []string
	}{
		{"alone", tok, []string{tok}},
		{"url query", "https://example.com/callback?token=" + tok + "&next=%2Fhome", []string{tok}},
		{"url path", "https://example.com/v1/" + tok + "/x", []string{tok}},
		{"json", `{"name":"ci","token":"` + tok + `","n":1}`, []string{tok}},
		{"env file", "# ci\nSIGIL_TOKEN=" + tok + "\nOTHER=1\n", []string{tok}},
		{"crlf lines", "first line\r\n" + tok + "\r\nlast\r\n", []string{tok}},
		{"quoted shell", "export TOKEN='" + tok + "'", []string{tok}},
		{"glued after letters", "MYTOKEN" + tok + " rest", []string{tok}},
		{"trailing underscore", "*" + tok + "_*", []string{tok}},
		{"trailing dash and letters", tok + "-and-more", []string{tok}},
		{"two tokens", "a=" + tok + "\nb=" + tok2 + "\n", []string{tok, tok2}},
		{"two tokens glued", tok + tok2, []string{tok, tok2}},
		{"same token twice", tok + " " + tok, []string{tok, tok}},
		{"after a fake prefix", DefaultPrefix + " " + tok, []string{tok}},
		{"yaml", "auth:\n  token: " + tok + "\n", []string{tok}},
		{"nothing", "no token here, only sigil_pat_ and text", []string{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := Scan([]byte(tc.text))
			if !reflect.DeepEqual(tokensOf(got), tc.want) {
				t.Fatalf("Scan found %d candidates %q, want %q", len(got), tokensOf(got), tc.want)
			}
			for _, c := range got {
				if tc.text[c.Offset:c.Offset+len(c.Token)] != c.Token {
					t.Errorf("offset %d does not point at the candidate", c.Offset)
				}
			}
		})
	}
}

func TestScanRejectsNearMisses(t *testing.T) {
	tok, _ := scanTokens(t, defaultCodec(t))
	body := tok[len(DefaultPrefix) : len(tok)-checksumLen]
	flip := func(s string, i int) string {
		c := byte('A')
		if s[i] == 'A' {
			c = 'B'
		}
		return s[:i] + string(c) + s[i+1:]
	}
	cases := map[string]string{
		"body char changed":     flip(tok, len(DefaultPrefix)+len(body)/2),
		"first body char":       flip(tok, len(DefaultPrefix)),
		"checksum char changed": flip(tok, len(tok)-1),
		"truncated by one":      tok[:len(tok)-1],
		"checksum cut off":      tok[:len(tok)-checksumLen],
		"wrong prefix":          "sigil_pak_" + tok[len(DefaultPrefix):],
		"upper-case prefix":     strings.ToUpper(DefaultPrefix) + tok[len(DefaultPrefix):],
		"prefix without _":      "sigilpat_" + tok[len(DefaultPrefix):],
		"broken across lines":   tok[:40] + "\n" + tok[40:],
		"space inside":          tok[:50] + " " + tok[50:],
		"standard base64":       strings.NewReplacer("-", "+", "_", "/").Replace(tok[:len(DefaultPrefix)]) + strings.NewReplacer("-", "+", "_", "/").Replace(tok[len(DefaultPrefix):]),
	}
	if !strings.ContainsAny(body, "-_") {
		delete(cases, "standard base64")
	}
	for name, text := range cases {
		t.Run(name, func(t *testing.T) {
			for _, wrap := range []string{"%s", "token=%s\n", `{"t":"%s"}`} {
				if got := Scan([]byte(fmt.Sprintf(wrap, text))); len(got) != 0 {
					t.Fatalf("Scan(%q) found %q", wrap, tokensOf(got))
				}
			}
		})
	}
}

func TestScanForgedChecksumIsACandidate(t *testing.T) {
	// The checksum is public: a look-alike whose checksum holds is a
	// candidate (only Verify, with the keys, rejects it). The scanner's
	// job is to drop what cannot be a token, cheaply.
	tok, _ := scanTokens(t, defaultCodec(t))
	forged := rechecksum(tok[:30] + "A" + tok[31:])
	if tok[30] == 'A' {
		forged = rechecksum(tok[:30] + "B" + tok[31:])
	}
	got := tokensOf(Scan([]byte("x " + forged + " y")))
	if !reflect.DeepEqual(got, []string{forged}) {
		t.Fatalf("Scan = %q, want the forged look-alike", got)
	}
	if _, err := defaultCodec(t).Verify(forged, testKeys()); err == nil {
		t.Fatal("the look-alike verifies")
	}
}

func TestScanCustomPrefix(t *testing.T) {
	acme, err := NewCodec("acme_")
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := scanTokens(t, acme)
	def, _ := scanTokens(t, defaultCodec(t))
	text := []byte("a=" + tok + "\nb=" + def + "\n")
	if got := tokensOf(acme.Scan(text)); !reflect.DeepEqual(got, []string{tok}) {
		t.Errorf("acme codec found %q, want only its own token", got)
	}
	if got := tokensOf(Scan(text)); !reflect.DeepEqual(got, []string{def}) {
		t.Errorf("default Scan found %q, want only the default-prefix token", got)
	}
}

func TestScanLongestToken(t *testing.T) {
	// The longest grants a token can carry: Scan must find tokens up to
	// MaxLen, and nothing past it.
	claims := testClaims()
	claims.Grants = []scope.Grant{{Permissions: []string{strings.Repeat("p", 2800)}}}
	tok := mustMint(t, defaultCodec(t), claims, testKey)
	if len(tok) < 3000 {
		t.Fatalf("token is only %d bytes", len(tok))
	}
	if got := tokensOf(Scan([]byte("[" + tok + "]"))); !reflect.DeepEqual(got, []string{tok}) {
		t.Fatalf("Scan did not find the long token")
	}
}

func TestScanHostileInputFindsTheTokenAfter(t *testing.T) {
	tok, _ := scanTokens(t, defaultCodec(t))
	hostile := [][]byte{
		bytes.Repeat([]byte(DefaultPrefix), 10_000),
		bytes.Repeat([]byte(DefaultPrefix+"A"), 10_000),
		bytes.Repeat([]byte("A"), 100_000),
		bytes.Repeat([]byte(tok[:len(tok)-1]), 100),
	}
	for i, h := range hostile {
		text := append(append(append([]byte{}, h...), ' '), tok...)
		if got := tokensOf(Scan(text)); !reflect.DeepEqual(got, []string{tok}) {
			t.Errorf("input %d: Scan = %d candidates, want the one token after the noise", i, len(got))
		}
	}
}

// FuzzScan checks that Scan never panics, that every candidate is where it
// says, passes LooksLike and does not overlap the previous one, and that a
// real token set apart by spaces is always found whatever precedes it.
func FuzzScan(f *testing.F) {
	tok, tok2 := scanTokens(f, defaultCodec(f))
	f.Add([]byte("token=" + tok + "\n"))
	f.Add([]byte(tok + tok2))
	f.Add([]byte(DefaultPrefix + DefaultPrefix + tok))
	f.Add([]byte(tok[:len(tok)-1]))
	f.Add([]byte(rechecksum(tok[:30] + "x" + tok[31:])))
	f.Add(bytes.Repeat([]byte(DefaultPrefix), 50))
	codec := defaultCodec(f)
	f.Fuzz(func(t *testing.T, text []byte) {
		prev := 0
		for _, c := range Scan(text) {
			if c.Offset < prev {
				t.Fatalf("candidate at %d overlaps the previous one ending at %d", c.Offset, prev)
			}
			if string(text[c.Offset:c.Offset+len(c.Token)]) != c.Token {
				t.Fatal("candidate is not at its offset")
			}
			if !codec.LooksLike(c.Token) {
				t.Fatal("candidate fails LooksLike")
			}
			prev = c.Offset + len(c.Token)
		}
		withTok := append(append(append([]byte{}, text...), ' '), tok...)
		withTok = append(withTok, ' ')
		got := Scan(withTok)
		if len(got) == 0 || got[len(got)-1].Token != tok || got[len(got)-1].Offset != len(text)+1 {
			t.Fatalf("a real token after the input is not found")
		}
	})
}

// BenchmarkScan measures Scan on 1 MiB of ordinary text holding tokens and
// on hostile text built to make it work hardest: the throughput of each
// shows that the work stays linear.
func BenchmarkScan(b *testing.B) {
	tok, _ := scanTokens(b, defaultCodec(b))
	const size = 1 << 20
	fill := func(unit string) []byte {
		return bytes.Repeat([]byte(unit), size/len(unit)+1)[:size]
	}
	// Shortest strings whose checksum holds, glued together: each is a
	// candidate, after which Scan still looks up to MaxLen ahead.
	lookAlike := withChecksum(DefaultPrefix + strings.Repeat("A", minBodyLen))
	inputs := []struct {
		name string
		text []byte
	}{
		{"prose with a token every 4KiB", fill(strings.Repeat("lorem ipsum dolor sit amet, ", 140) + "TOKEN=" + tok + "\n")},
		{"no prefix", fill("abcdefghij")},
		{"prefix repeated", fill(DefaultPrefix)},
		{"prefix then one long run", append([]byte(DefaultPrefix), fill("A")...)},
		{"valid-checksum look-alikes glued", fill(lookAlike)},
	}
	for _, in := range inputs {
		b.Run(in.name, func(b *testing.B) {
			b.SetBytes(int64(len(in.text)))
			for b.Loop() {
				Scan(in.text)
			}
		})
	}
}
