package config

import (
	"io"
	"slices"
	"strings"
	"testing"
)

func TestParseAuthority(t *testing.T) {
	tests := []struct {
		in    string
		addrs []string
		dns   string
	}{
		{"127.0.0.1:7001", []string{"127.0.0.1:7001"}, ""},
		{"a:7001,b:7001", []string{"a:7001", "b:7001"}, ""},
		{" a:7001 , b:7001,c:7002 ", []string{"a:7001", "b:7001", "c:7002"}, ""},
		{"[::1]:7001,127.0.0.1:7001", []string{"[::1]:7001", "127.0.0.1:7001"}, ""},
		{"dns:///authority.sigil.svc:7001", nil, "authority.sigil.svc:7001"},
	}
	for _, tc := range tests {
		a, err := ParseAuthority(tc.in)
		if err != nil {
			t.Fatalf("ParseAuthority(%q): %v", tc.in, err)
		}
		if !slices.Equal(a.Addrs, tc.addrs) || a.DNS != tc.dns {
			t.Fatalf("ParseAuthority(%q) = %+v, want addrs %q dns %q", tc.in, a, tc.addrs, tc.dns)
		}
		targets := a.Targets()
		if tc.dns != "" {
			if !slices.Equal(targets, []string{"dns:///" + tc.dns}) {
				t.Fatalf("targets %q", targets)
			}
		} else if !slices.Equal(targets, tc.addrs) {
			t.Fatalf("targets %q", targets)
		}
	}
}

func TestParseAuthorityErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "must not be empty"},
		{"  ", "must not be empty"},
		{"a:1,,b:1", "element 2 of the comma-separated list is empty"},
		{"a:1,", "element 2 of the comma-separated list is empty"},
		{",a:1", "element 1 of the comma-separated list is empty"},
		{"a:1,b:1,a:1", "element 3 (a:1) repeats element 1"},
		{"A:1,a:1", "repeats element 1"},
		{"a:1,b", "element 2"},
		{"a:1,b:port-of-nothing", "bad port"},
		{"dns:///", "dns:/// target"},
		{"dns:///host", "missing port in address"},
		{"dns:///:7001", "missing host"},
		{"dns:///host:", "missing port"},
		{"dns:///a:1,b:1", "names one host:port"},
		{"http://a:1", "the only scheme accepted is dns:///"},
		{"dns://8.8.8.8/a:1", "the only scheme accepted is dns:///"},
		{strings.Repeat("a:1,", MaxAuthorityReplicas) + "z:1", "at most 16"},
		{strings.Repeat("x", 5000), "longer than"},
	}
	for _, tc := range tests {
		_, err := ParseAuthority(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseAuthority(%.40q) = %v, want an error containing %q", tc.in, err, tc.want)
		}
	}
}

// TestValidateAuthorityList: the errors of a bad --authority name the flag,
// a good list or dns:/// target validates, and the environment sets it too.
func TestValidateAuthorityList(t *testing.T) {
	for _, tc := range []struct{ value, want string }{
		{"127.0.0.1:7001,127.0.0.1:7011", ""},
		{"dns:///authority:7001", ""},
		{"127.0.0.1:7001,", "--authority: element 2 of the comma-separated list is empty"},
		{"127.0.0.1:7001,127.0.0.1:7001", "--authority: element 2 (127.0.0.1:7001) repeats element 1"},
	} {
		c, err := Parse(nil, env(map[string]string{"SIGIL_AUTHORIZER_AUTHORITY": tc.value}), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if c.Authority != tc.value {
			t.Fatalf("SIGIL_AUTHORIZER_AUTHORITY not applied: %q", c.Authority)
		}
		err = c.Validate()
		if tc.want == "" {
			if err != nil {
				t.Fatalf("%q: %v", tc.value, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%q: err = %v, want %q", tc.value, err, tc.want)
		}
	}
}

// FuzzParseAuthority: any input either fails or gives addresses that each
// validate on their own, without duplicates, or one dns:/// host:port.
func FuzzParseAuthority(f *testing.F) {
	for _, s := range []string{"127.0.0.1:7001", "a:1,b:2", "dns:///x:1", "a:1,,b:1", "dns:///", ",", "[::1]:1,[::1]:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAuthority(s)
		if err != nil {
			return
		}
		if (a.DNS == "") == (len(a.Addrs) == 0) {
			t.Fatalf("%q: %+v: exactly one of DNS and Addrs must be set", s, a)
		}
		if len(a.Addrs) > MaxAuthorityReplicas {
			t.Fatalf("%q: %d addresses", s, len(a.Addrs))
		}
		seen := map[string]bool{}
		for _, addr := range a.Addrs {
			if addr == "" || strings.Contains(addr, ",") || seen[strings.ToLower(addr)] {
				t.Fatalf("%q: bad element %q in %q", s, addr, a.Addrs)
			}
			seen[strings.ToLower(addr)] = true
		}
		if len(a.Targets()) == 0 {
			t.Fatalf("%q: no target", s)
		}
	})
}
