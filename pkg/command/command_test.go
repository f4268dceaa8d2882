package command

import (
	"context"
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
)

func TestMainExitCodes(t *testing.T) {
	var ran bool
	svc := func(parseErr, runErr error) Service[string] {
		return Service[string]{
			Name: "test", HealthAddr: "127.0.0.1:1",
			Parse:    func([]string, io.Writer) (string, error) { return "info", parseErr },
			LogLevel: func(c string) string { return c },
			Run:      func(context.Context, string) error { ran = true; return runErr },
		}
	}
	tests := []struct {
		name    string
		s       Service[string]
		args    []string
		want    int
		wantRan bool
	}{
		{"runs", svc(nil, nil), nil, 0, true},
		{"run fails", svc(nil, errors.New("boom")), nil, 1, true},
		{"bad configuration", svc(errors.New("--listen: bad"), nil), nil, 2, false},
		{"help", svc(flag.ErrHelp, nil), []string{"-h"}, 0, false},
		{"version", svc(nil, nil), []string{"--version"}, 0, false},
		{"healthcheck with nothing listening", svc(nil, nil), []string{"healthcheck", "--timeout", "100ms"}, 1, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ran = false
			if got := Main(tc.s, tc.args); got != tc.want || ran != tc.wantRan {
				t.Errorf("exit %d, ran %v; want %d, %v", got, ran, tc.want, tc.wantRan)
			}
		})
	}
}

// TestSubcommands: a declared subcommand runs with the arguments after its
// name and its exit code is the binary's; the configuration is not parsed;
// the help lists every subcommand with its summary.
func TestSubcommands(t *testing.T) {
	var gotArgs []string
	parsed := false
	s := Service[string]{
		Name: "test", HealthAddr: "127.0.0.1:1",
		Parse:    func([]string, io.Writer) (string, error) { parsed = true; return "info", nil },
		LogLevel: func(c string) string { return c },
		Run:      func(context.Context, string) error { return nil },
		Subcommands: map[string]Subcommand{
			"tidy": {Summary: "[--dir DIR]: tidy up", Run: func(args []string, _, _ io.Writer) int {
				gotArgs = args
				return 3
			}},
			"count": {Summary: "count things", Run: func([]string, io.Writer, io.Writer) int { return 0 }},
		},
	}
	if code := Main(s, []string{"tidy", "--dir", "x"}); code != 3 || parsed || len(gotArgs) != 2 || gotArgs[1] != "x" {
		t.Fatalf("exit %d, parsed %v, args %q; want 3, false, [--dir x]", code, parsed, gotArgs)
	}
	var help strings.Builder
	s.usage(&help)
	for _, want := range []string{"test healthcheck ", "test count count things", "test tidy [--dir DIR]: tidy up"} {
		if !strings.Contains(help.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, help.String())
		}
	}
	if strings.Index(help.String(), "test count") > strings.Index(help.String(), "test tidy") {
		t.Errorf("subcommands not in name order:\n%s", help.String())
	}
}
