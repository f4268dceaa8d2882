package gcfloor

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		floor, live uint64
		base, want  int
	}{
		{32 * mib, 8 * mib, 100, 400},   // goal 8·(1+4) = 40 MiB = live+floor
		{32 * mib, 4 * mib, 100, 800},   // goal 4·9 = 36 MiB; minimum 4·8 = 32 MiB
		{32 * mib, 6 * mib, 100, 533},   // rounded down: never more than live+floor
		{32 * mib, 2 * mib, 100, 850},   // the scaled minimum (4·8.5 = 34 MiB) binds, not 2·17
		{32 * mib, 0, 100, 800},         // no cycle yet: the minimum alone, 32 MiB
		{32 * mib, 32 * mib, 100, 100},  // heap as large as the floor: GOGC=100
		{32 * mib, 512 * mib, 100, 100}, // large heap: the base, never less
		{32 * mib, 8 * mib, 1000, 1000}, // a larger base wins
		{4096 * mib, 1, 100, maxPercent},
	} {
		if got := Percent(c.floor, c.live, c.base); got != c.want {
			t.Errorf("Percent(%d MiB, %d MiB, %d) = %d, want %d", c.floor/mib, c.live/mib, c.base, got, c.want)
		}
	}
}

// TestPercentGoalWithinFloor checks the property Percent exists for: the
// runtime's goal at the GOGC it returns is at most live+floor (when it is
// above the base), whatever the live heap.
func TestPercentGoalWithinFloor(t *testing.T) {
	const floor = 32 << 20
	for live := uint64(0); live < 64<<20; live += 64 << 10 {
		g := uint64(Percent(floor, live, 100))
		goal := max(live+live*g/100, heapMinimum*g/100)
		if g > 100 && goal > live+floor {
			t.Fatalf("live %d: GOGC %d gives a goal of %d > live+floor %d", live, g, goal, live+floor)
		}
		if g > 100 && goal+(2<<20) < live+floor {
			t.Fatalf("live %d: GOGC %d gives a goal of %d, well under live+floor %d", live, g, goal, live+floor)
		}
	}
}

// waitAdjusted runs collections until f has adjusted GOGC n more times
// (it does so in a cleanup, after a cycle), failing after a bounded number
// of tries.
func waitAdjusted(t *testing.T, f *Floor, n int) {
	t.Helper()
	want := f.adjustments() + n
	for range 200 {
		if f.adjustments() >= want {
			return
		}
		runtime.GC()
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%d adjustments after 200 collections, want %d", f.adjustments(), want)
}

func TestSmallHeapGetsTheFloor(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	f := Start(256 << 20)
	waitAdjusted(t, f, 2)
	got := GOGC()
	// A test binary's live heap is a few MiB: 256 MiB of growth needs
	// GOGC in the thousands.
	if got < 1000 {
		t.Errorf("GOGC = %d with a 256 MiB floor and a small heap", got)
	}
	f.Stop()
	if v := GOGC(); v != 100 {
		t.Errorf("GOGC after Stop = %d, want the base 100", v)
	}
	// Stopped: later cycles leave GOGC alone.
	debug.SetGCPercent(150)
	for range 3 {
		runtime.GC()
		time.Sleep(5 * time.Millisecond)
	}
	if v := GOGC(); v != 150 {
		t.Errorf("GOGC = %d after Stop and SetGCPercent(150)", v)
	}
}

func TestLargeHeapKeepsTheBase(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	// 64 MiB live against a 32 MiB floor: GOGC=100 already allows more.
	live := make([][]byte, 64)
	for i := range live {
		live[i] = make([]byte, 1<<20)
	}
	f := Start(32 << 20)
	defer f.Stop()
	// Adjusted after collections that saw the large heap, not only at Start.
	waitAdjusted(t, f, 2)
	if v := GOGC(); v != 100 {
		t.Errorf("GOGC = %d with 64 MiB live and a 32 MiB floor, want 100", v)
	}
	runtime.KeepAlive(live)
}

func TestOffStaysOff(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	f := Start(32 << 20)
	defer f.Stop()
	if v := GOGC(); v != -1 {
		t.Fatalf("GOGC = %d, want off (-1) kept", v)
	}
}

func TestEnabled(t *testing.T) {
	t.Setenv("GOGC", "")
	if Enabled() {
		t.Error("Enabled with GOGC set (even empty)")
	}
}
