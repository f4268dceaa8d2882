package config

import (
	"io"
	"strings"
	"testing"
	"time"
)

func TestMaxClockSkew(t *testing.T) {
	parse := func(args ...string) Config {
		t.Helper()
		c, err := Parse(args, func(string) (string, bool) { return "", false }, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if got := parse().ClockSkewBound(); got != 30*time.Second {
		t.Fatalf("default bound %s, want the 30s leeway", got)
	}
	if got := parse("--clock-leeway", "0s").ClockSkewBound(); got != time.Second {
		t.Fatalf("bound with no leeway %s, want 1s", got)
	}
	if got := parse("--max-clock-skew", "2m").ClockSkewBound(); got != 2*time.Minute {
		t.Fatalf("bound %s, want 2m", got)
	}
	for _, args := range [][]string{
		{"--max-clock-skew", "-1s"},
		{"--max-clock-skew", "6m"},
		{"--max-clock-skew", "5m", "--clock-leeway", "5m"},
	} {
		err := parse(args...).Validate()
		if err == nil || !strings.Contains(err.Error(), "max-clock-skew") {
			t.Fatalf("%v: %v, want an error naming max-clock-skew", args, err)
		}
	}
	if err := parse("--max-clock-skew", "5m", "--clock-leeway", "4m").Validate(); err != nil {
		t.Fatal(err)
	}
}
