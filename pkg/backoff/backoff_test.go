package backoff

import (
	"testing"
	"time"
)

// TestEqualJitter: each delay lies between half and all of base doubled
// doublings times (capped at max), and the random half varies.
func TestEqualJitter(t *testing.T) {
	for _, tc := range []struct {
		doublings int
		full      time.Duration
	}{{0, 100 * time.Millisecond}, {1, 200 * time.Millisecond}, {3, 800 * time.Millisecond}, {10, 2 * time.Second}, {1000, 2 * time.Second}} {
		seen := map[time.Duration]bool{}
		for range 200 {
			d := EqualJitter(100*time.Millisecond, 2*time.Second, tc.doublings)
			if d < tc.full/2 || d > tc.full {
				t.Fatalf("doublings %d: %v outside [%v, %v]", tc.doublings, d, tc.full/2, tc.full)
			}
			seen[d] = true
		}
		if len(seen) < 2 {
			t.Errorf("doublings %d: no jitter (%v)", tc.doublings, seen)
		}
	}
}
