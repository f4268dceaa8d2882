package flagcheck

import (
	"strings"
	"testing"
	"time"
)

func TestAddr(t *testing.T) {
	for _, tc := range []struct {
		addr, err string // err "" means valid
	}{
		{"127.0.0.1:7001", ""},
		{":0", ""},
		{"localhost:https", ""},
		{"[::1]:80", ""},
		{"localhost", "missing port in address"},
		{"localhost:", "missing port"},
		{"x:y:z", "too many colons"},
		{"host:notaport", "bad port"},
		{"", "missing port in address"},
	} {
		err := Addr(tc.addr)
		if tc.err == "" {
			if err != nil {
				t.Errorf("Addr(%q) = %v", tc.addr, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), `"`+tc.addr+`"`) {
			t.Errorf("Addr(%q) = %v, want an error naming the address and %q", tc.addr, err, tc.err)
		}
	}
}

func TestTokenPrefix(t *testing.T) {
	if err := TokenPrefix("sigil_pat_"); err != nil {
		t.Fatalf("default prefix: %v", err)
	}
	if err := TokenPrefix(""); err == nil || err.Error() != "must not be empty" {
		t.Fatalf("empty prefix: %v", err)
	}
	err := TokenPrefix("sigil-pat")
	if err == nil || strings.HasPrefix(err.Error(), "token: ") {
		t.Fatalf("prefix with a dash: %v, want the codec's reason without its package name", err)
	}
}

func TestProblems(t *testing.T) {
	var none Problems
	none.Check("listen", nil)
	none.Positive("max-wait", time.Second)
	none.Pair("tls-cert", "c", "tls-key", "k")
	none.ServerTLS("c", "k", "ca")
	none.ServerTLS("", "", "")
	if err := none.Err(); err != nil {
		t.Fatalf("no problem, got %v", err)
	}

	var p Problems
	p.Add("cache-size", "must be between 1 and %d, got %d", 10, 0)
	p.Check("listen", Addr("localhost"))
	p.Positive("max-wait", 0)
	p.Pair("authority-cert", "", "authority-key", "k")
	p.ServerTLS("c", "", "")
	p.ServerTLS("", "", "ca")
	err := p.Err()
	if err == nil {
		t.Fatal("problems recorded, Err is nil")
	}
	want := []string{
		"--cache-size: must be between 1 and 10, got 0",
		`--listen: address "localhost": address localhost: missing port in address`,
		"--max-wait: must be positive, got 0s",
		"--authority-cert: --authority-cert and --authority-key go together",
		"--tls-cert: --tls-cert and --tls-key go together",
		"--tls-client-ca: needs --tls-cert and --tls-key",
	}
	if got := err.Error(); got != "config: "+strings.Join(want, "\n") {
		t.Fatalf("Err =\n%s\nwant\nconfig: %s", got, strings.Join(want, "\n"))
	}
}
