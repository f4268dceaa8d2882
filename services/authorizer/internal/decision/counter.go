package decision

import "sync/atomic"

// counter is a monotonic counter padded to its own cache line, so that the
// hit counter bumped on every check does not share a line with the miss
// counter.
type counter struct {
	n atomic.Uint64
	_ [56]byte
}

func (c *counter) inc()         { c.n.Add(1) }
func (c *counter) load() uint64 { return c.n.Load() }
