// Package backoff computes retry delays.
package backoff

import (
	"math/rand/v2"
	"time"
)

// EqualJitter is an exponential delay with "equal jitter": base doubled
// doublings times, capped at max, then half of it fixed and half random,
// so that many retrying clients do not retry in step.
func EqualJitter(base, max time.Duration, doublings int) time.Duration {
	d := base
	for i := 0; i < doublings && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	half := d / 2
	return half + rand.N(d-half+1)
}
