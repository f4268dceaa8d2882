package command

import (
	"context"
	"errors"
	"flag"
	"io"
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
