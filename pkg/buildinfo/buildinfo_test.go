package buildinfo

import (
	"runtime/debug"
	"testing"
)

func TestString(t *testing.T) {
	tests := []struct {
		name string
		bi   debug.BuildInfo
		want string
	}{
		{
			name: "release",
			bi: debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.3"},
				Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.time", Value: "2026-11-30T20:00:00Z"}, {Key: "vcs.modified", Value: "false"}}},
			want: "authority v1.2.3 commit 0123456789ab (2026-11-30T20:00:00Z) go1.26.8",
		},
		{
			name: "modified checkout",
			bi: debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"},
				Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc"}, {Key: "vcs.modified", Value: "true"}}},
			want: "authority (devel) commit abc (modified) go1.26.8",
		},
		{
			name: "nothing known",
			bi:   debug.BuildInfo{},
			want: "authority unknown",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := fromBuildInfo(&tc.bi).String("authority"); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestReadInTest checks that a test binary, too, knows its Go version.
func TestReadInTest(t *testing.T) {
	if Read().GoVersion == "" {
		t.Error("no Go version in the build info")
	}
}
