package decision

import "testing"

// TestDecideCachedDoesNotAllocate pins the hot path: a cached token's
// decision, allowed or denied, allocates nothing. The race detector adds
// allocations, so under -race the test is skipped rather than passed.
func TestDecideCachedDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector; `go tool task test` runs this without -race")
	}
	f := newFixture(t)
	tok := f.mint(t, baseClaims(t), "")
	cases := []struct {
		name, permission, resource, org string
		allowed                         bool
	}{
		{"allowed child resource", "domain:renew", "domains/example.com/records/www", "org-a", true},
		{"permission not granted", "cloud:manage", "", "org-a", false},
		{"org mismatch", "domain:renew", "domains/example.com", "org-b", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if d := f.dec.Decide(tok, tc.permission, tc.resource, tc.org); d.Allowed() != tc.allowed {
				t.Fatalf("setup: allowed = %v (%v), want %v", d.Allowed(), d.Reason, tc.allowed)
			}
			allocs := testing.AllocsPerRun(200, func() {
				f.dec.Decide(tok, tc.permission, tc.resource, tc.org)
			})
			if allocs != 0 {
				t.Fatalf("cached decision allocates %.1f times per call", allocs)
			}
		})
	}
}
