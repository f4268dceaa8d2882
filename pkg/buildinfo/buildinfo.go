// Package buildinfo reports what a binary was built from: the module
// version, the source revision and the Go toolchain, as `--version` prints
// them. Go records these in every binary built from a module (the revision
// when built inside a git checkout, as `go tool task build` does).
package buildinfo

import (
	"fmt"
	"runtime/debug"
)

// Info is what a binary was built from. Empty fields are unknown.
type Info struct {
	Version   string // module version, "(devel)" for a build from a checkout
	Revision  string // VCS revision (commit)
	Time      string // commit time, RFC 3339
	Modified  bool   // built from a checkout with uncommitted changes
	GoVersion string
}

// Read returns the running binary's Info.
func Read() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return Info{}
	}
	return fromBuildInfo(bi)
}

func fromBuildInfo(bi *debug.BuildInfo) Info {
	in := Info{Version: bi.Main.Version, GoVersion: bi.GoVersion}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			in.Revision = s.Value
		case "vcs.time":
			in.Time = s.Value
		case "vcs.modified":
			in.Modified = s.Value == "true"
		}
	}
	return in
}

// String is the one line `--version` prints, e.g.
// "authority (devel) commit 1a2b3c4d5e6f (2026-11-30T20:00:00Z, modified) go1.26.8".
func (in Info) String(name string) string {
	s := name + " " + or(in.Version, "unknown")
	if in.Revision != "" {
		rev := in.Revision
		if len(rev) > 12 {
			rev = rev[:12]
		}
		s += " commit " + rev
		switch {
		case in.Time != "" && in.Modified:
			s += fmt.Sprintf(" (%s, modified)", in.Time)
		case in.Time != "":
			s += fmt.Sprintf(" (%s)", in.Time)
		case in.Modified:
			s += " (modified)"
		}
	}
	if in.GoVersion != "" {
		s += " " + in.GoVersion
	}
	return s
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
