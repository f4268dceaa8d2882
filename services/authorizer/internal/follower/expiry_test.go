package follower

import (
	"testing"
	"time"
)

// A revocation is kept at least until its token expires: the expiry is
// stored in whole seconds rounded up, never down.
func TestExpirySecondsRoundsUp(t *testing.T) {
	base := time.Unix(1_800_000_000, 0)
	for _, c := range []struct {
		exp  time.Time
		want int64
	}{
		{base, base.Unix()},
		{base.Add(time.Nanosecond), base.Unix() + 1},
		{base.Add(999 * time.Millisecond), base.Unix() + 1},
		{base.Add(-time.Nanosecond), base.Unix()},
		{farFuture, farFuture.Unix()},
	} {
		if got := expirySeconds(c.exp); got != c.want {
			t.Errorf("expirySeconds(%v) = %d, want %d", c.exp, got, c.want)
		}
		if got := expirySeconds(c.exp); time.Unix(got, 0).Before(c.exp) {
			t.Errorf("expirySeconds(%v) = %d: before the expiry", c.exp, got)
		}
	}
}
