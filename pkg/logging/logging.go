// Package logging makes the structured loggers of Sigil's services: JSON
// lines on one writer, a level from the command line, and the service name
// on every line. Callers never log a token or a credential.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// ParseLevel parses a log level name: debug, info (or empty), warn
// (or warning), error; case-insensitive.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("unknown level %q (want debug, info, warn or error)", s)
}

// New returns a JSON logger writing to w at level, with a "service"
// attribute on every line. Durations are written as text ("1.5s"), not
// as the integer nanoseconds slog's JSON handler would write.
func New(w io.Writer, level slog.Level, service string) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level, ReplaceAttr: durationText})).With("service", service)
}

func durationText(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.String(a.Key, a.Value.Duration().String())
	}
	return a
}
