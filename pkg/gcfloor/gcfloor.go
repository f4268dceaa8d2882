// Package gcfloor keeps the Go garbage collector from running more often
// than once per a given amount of allocation while the live heap is small.
//
// With the default GOGC=100 the collector runs each time the heap has grown
// by as much as was live after the previous cycle. A service whose live heap
// is a few MiB but which allocates a few KiB per request, as the authorizer
// does on every gRPC call, then collects dozens of times a second: under
// load a third of its CPU went to marking, assists and regrowing the worker
// stacks each cycle shrinks (see BENCHMARKS.md). A floor on the growth
// between cycles removes most of that for a bounded, predictable amount of
// memory: at most Floor bytes of garbage beyond what GOGC=100 would keep.
// Once the live heap is itself larger than the floor the collector runs
// exactly as with GOGC=100.
//
// The floor is applied by setting GOGC after each cycle so that the next
// goal is live+floor (see Percent), never below base, the GOGC in force at
// Start.
// That keeps Go's own heap accounting true (no ballast allocation inflates
// the heap metrics) and lets a GOMEMLIMIT still bound the heap.
//
// An operator who sets GOGC or GOMEMLIMIT in the environment has made the
// choice: Enabled reports false and the caller should not Start.
package gcfloor

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// DefaultFloor is the growth allowed between two collections when the live
// heap is small: 16 MiB.
const DefaultFloor = 16 << 20

// maxPercent bounds the GOGC set, so that a nearly empty heap does not get
// an absurd value (the floor still applies up to this bound).
const maxPercent = 10000

// Enabled reports whether the environment leaves the garbage collector's
// tuning to the program: neither GOGC nor GOMEMLIMIT is set.
func Enabled() bool {
	_, gogc := os.LookupEnv("GOGC")
	_, limit := os.LookupEnv("GOMEMLIMIT")
	return !gogc && !limit
}

// Floor adjusts GOGC after every garbage collection; see the package
// documentation.
type Floor struct {
	floor uint64
	base  int

	mu      sync.Mutex
	stopped bool
	sample  []metrics.Sample
	adjusts int // adjustments made, for tests
}

// sentinel is allocated to learn when a collection has happened: its
// cleanup runs after the cycle that found it unreachable. It holds a pointer
// so that it is not batched by the tiny allocator, whose blocks may outlive
// their objects.
type sentinel struct{ _ *byte }

// Start sets GOGC for a floor of floor bytes (DefaultFloor when zero) now
// and after every collection until Stop. It reads the current GOGC as the
// base, which Stop restores.
func Start(floor uint64) *Floor {
	if floor == 0 {
		floor = DefaultFloor
	}
	f := &Floor{floor: floor, base: GOGC(), sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
	if f.base < 0 {
		// GOGC=off set by the program: nothing to raise.
		f.stopped = true
		return f
	}
	f.adjust()
	f.arm()
	return f
}

// arm allocates a sentinel whose cleanup, after the next collection,
// adjusts GOGC and arms again.
func (f *Floor) arm() {
	runtime.AddCleanup(&sentinel{}, func(f *Floor) {
		if f.adjust() {
			f.arm()
		}
	}, f)
}

// adjust sets GOGC from the live heap of the last cycle. It reports false
// once stopped.
func (f *Floor) adjust() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return false
	}
	metrics.Read(f.sample)
	debug.SetGCPercent(Percent(f.floor, f.sample[0].Value.Uint64(), f.base))
	f.adjusts++
	return true
}

// adjustments returns how many times GOGC was set.
func (f *Floor) adjustments() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.adjusts
}

// Stop restores the GOGC found at Start and stops adjusting it.
func (f *Floor) Stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return
	}
	f.stopped = true
	debug.SetGCPercent(f.base)
}

// GOGC returns the GOGC in force (-1: off).
func GOGC() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 100
	}
	// Off is -1, which the metric carries as its two's complement.
	return int(s[0].Value.Uint64())
}

// heapMinimum is the Go runtime's smallest heap goal at GOGC=100 (4 MiB),
// which it scales with GOGC.
const heapMinimum = 4 << 20

// Percent is the GOGC that lets the heap grow to live+floor bytes after a
// collection that left live bytes live, and never less than base (nor more
// than maxPercent). The runtime's goal is the larger of live·(1+GOGC/100)
// and heapMinimum·GOGC/100, both growing with GOGC: the smaller of the two
// values that reach live+floor keeps both at or under it.
func Percent(floor, live uint64, base int) int {
	p := uint64(maxPercent)
	if live > 0 {
		p = min(p, floor*100/live)
	}
	p = min(p, (live+floor)*100/heapMinimum)
	return max(base, int(p))
}
