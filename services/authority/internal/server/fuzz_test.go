package server

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// FuzzRequestText checks that the validators of request text never panic
// and accept only bounded, printable, valid UTF-8.
func FuzzRequestText(f *testing.F) {
	for _, s := range []string{"", "org-1", "a\x00b", " ", strings.Repeat("x", maxIdentLen+1), "é", "\xff", "a\nb", "aJdLbXyZAAAAAAA", "zzz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var v violations
		checkIdent(&v, "name", s, true)
		if len(v.list) == 0 {
			if s == "" || len(s) > maxIdentLen || !utf8.ValidString(s) {
				t.Fatalf("accepted %q", s)
			}
			for _, r := range s {
				if !unicode.IsPrint(r) && r != ' ' {
					t.Fatalf("accepted control character in %q", s)
				}
			}
		}
		var w violations
		checkText(&w, "description", s, maxDescriptionLen, true)
		checkTokenRef(&w, s, false)
		checkPageToken(&w, s)
		_ = w.err()
	})
}
