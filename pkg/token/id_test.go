package token

import (
	"errors"
	"strings"
	"testing"
)

func TestNewID(t *testing.T) {
	seen := make(map[ID]bool)
	for range 100 {
		id, err := NewID()
		if err != nil {
			t.Fatalf("NewID: %v", err)
		}
		if id.IsZero() {
			t.Fatal("NewID returned the zero ID")
		}
		if seen[id] {
			t.Fatalf("NewID returned %s twice", id)
		}
		seen[id] = true
	}
}

func TestIDText(t *testing.T) {
	id := ID{0x00, 0x01, 0x0a, 0xff, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xa0, 0xb0, 0xcd}
	const text = "00010aff102030405060708090a0b0cd"
	if got := id.String(); got != text {
		t.Errorf("String() = %q, want %q", got, text)
	}
	tests := []struct {
		name string
		s    string
		want ID
		err  bool
	}{
		{name: "valid", s: text, want: id},
		{name: "zero", s: strings.Repeat("0", 32), want: ID{}},
		{name: "all f", s: strings.Repeat("f", 32), want: ID{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{name: "empty", s: "", err: true},
		{name: "31 characters", s: text[:31], err: true},
		{name: "33 characters", s: text + "0", err: true},
		{name: "upper case", s: strings.ToUpper(text), err: true},
		{name: "one upper-case character", s: text[:31] + "D", err: true},
		{name: "not hex", s: text[:31] + "g", err: true},
		{name: "0x prefix", s: "0x" + text[2:], err: true},
		{name: "space", s: text[:31] + " ", err: true},
		{name: "UUID form", s: "00010aff-1020-3040-5060-708090a0b0cd", err: true},
		{name: "non-ASCII", s: text[:30] + "é", err: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseID(tc.s)
			if tc.err {
				if !errors.Is(err, ErrInvalidID) {
					t.Fatalf("ParseID: %v, want %v", err, ErrInvalidID)
				}
				if tc.s != "" && strings.Contains(err.Error(), tc.s) {
					t.Errorf("error %q contains the input", err)
				}
				if got != (ID{}) {
					t.Errorf("ParseID returned %s with an error", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseID: %v", err)
			}
			if got != tc.want {
				t.Errorf("ParseID = %s, want %s", got, tc.want)
			}
			if got.String() != tc.s {
				t.Errorf("round trip gave %q", got.String())
			}
		})
	}
}

// Every byte at every position: accepted exactly when it is a lower-case
// hex digit, with its value.
func TestParseIDEveryByte(t *testing.T) {
	const digits = "0123456789abcdef"
	for pos := range 32 {
		for c := range 256 {
			b := []byte(strings.Repeat("0", 32))
			b[pos] = byte(c)
			got, err := ParseID(string(b))
			v := strings.IndexByte(digits, byte(c))
			if v < 0 {
				if !errors.Is(err, ErrInvalidID) || got != (ID{}) {
					t.Fatalf("byte %#x at %d: %s, %v; want an error", c, pos, got, err)
				}
				continue
			}
			var want ID
			want[pos/2] = byte(v) << (4 * (1 - pos%2))
			if err != nil || got != want {
				t.Fatalf("byte %q at %d: %s, %v; want %s", rune(c), pos, got, err, want)
			}
		}
	}
}

// BenchmarkParseID parses random ids, as a follower loading a snapshot does.
//
//	go test ./pkg/token -run '^$' -bench ParseID -count=6
func BenchmarkParseID(b *testing.B) {
	ids := make([]string, 4096)
	for i := range ids {
		id, err := NewID()
		if err != nil {
			b.Fatal(err)
		}
		ids[i] = id.String()
	}
	b.ResetTimer()
	for i := range b.N {
		if _, err := ParseID(ids[i%len(ids)]); err != nil {
			b.Fatal(err)
		}
	}
}
