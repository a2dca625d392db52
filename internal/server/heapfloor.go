package server

import (
	"log/slog"
	"runtime"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"sync"
)

// maxFloorPercent bounds the GC percent the floor sets. The percent set
// after one collection applies to the live heap the next one finds, which
// at start-up or in a burst can be several times larger: the bound keeps
// that one goal within 2.5 times GOGC's (a bound of 10,000 % let a server
// under load reach 464 MB where it peaks at 60 MB without the floor).
const maxFloorPercent = 400

// HeapFloor keeps the garbage collector's heap goal at floor bytes or
// more while the live heap is small, and leaves it to the GC percent
// (GOGC, 100 by default) once the live heap is large enough for that to
// give more: the goal is the larger of GOGC's and the floor, the floor
// bounded to about five times the live heap (maxFloorPercent).
//
// Why: Berth's live heap is a few MiB, and Go's goal for such a heap is
// about twice that, so a server under load collects many times a second,
// each cycle's fixed cost (scanning every goroutine's stack, turning the
// write barrier on and off, assists) spread over a few MiB of garbage.
// Under 64 connections of manifest GETs, 4 MiB live, it collected 23 times
// a second. A floor of tens of MiB makes that several times fewer
// collections for that much more memory, and changes nothing for a large
// heap. It is Go's own minimum heap goal (4 MiB × GOGC/100), raised
// without raising GOGC for every heap size.
//
// After every collection (a cleanup of an object allocated for the
// purpose, so no polling), it reads the live heap and sets the GC percent
// to the larger of the base percent and the one that puts the goal at
// floor (at most maxFloorPercent). The base percent is the runtime's at
// the start. With GOGC set in the environment (getenv), the operator has
// chosen, and HeapFloor does nothing; with a floor of 0 or less neither.
// stop restores the base percent.
func HeapFloor(floor int64, getenv func(string) string, log *slog.Logger) (stop func()) {
	if floor <= 0 || getenv("GOGC") != "" {
		return func() {}
	}
	h := &heapFloor{floor: uint64(floor), samples: []rtmetrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/gc/gogc:percent"}}}
	rtmetrics.Read(h.samples)
	if h.samples[0].Value.Kind() != rtmetrics.KindUint64 || h.samples[1].Value.Kind() != rtmetrics.KindUint64 {
		log.Warn("the runtime does not report its live heap: no heap floor")
		return func() {}
	}
	h.base = int(h.samples[1].Value.Uint64())
	h.applied = h.base
	h.adjust()
	h.arm()
	log.Debug("heap floor", "bytes", floor, "gogc", h.base)
	return h.stop
}

type heapFloor struct {
	floor uint64
	base  int // the GC percent above the floor

	mu      sync.Mutex // adjust against stop
	stopped bool
	applied int // the GC percent last set
	samples []rtmetrics.Sample
}

// sentinel is what the cleanup watches: large enough not to share a block
// with other tiny objects, whose cleanups could wait for all of them.
type sentinel [64]byte

// arm runs collected after the next collection that finds the sentinel
// unreachable: the next one.
func (h *heapFloor) arm() {
	runtime.AddCleanup(new(sentinel), (*heapFloor).collected, h)
}

func (h *heapFloor) collected() {
	if h.adjust() {
		h.arm()
	}
}

// adjust sets the GC percent for the live heap of the last collection;
// false once stopped.
func (h *heapFloor) adjust() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		return false
	}
	rtmetrics.Read(h.samples)
	if p := floorPercent(h.samples[0].Value.Uint64(), h.floor, h.base); p != h.applied {
		debug.SetGCPercent(p)
		h.applied = p
	}
	return true
}

func (h *heapFloor) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		return
	}
	h.stopped = true
	if h.applied != h.base {
		debug.SetGCPercent(h.base)
	}
}

// floorPercent is the GC percent that puts the heap goal of a live heap at
// floor, or base if that gives more. The goal is about live × (1 +
// percent/100) (the runtime also counts the stacks and globals to scan,
// which only raises it).
func floorPercent(live, floor uint64, base int) int {
	if base < 0 { // GC off: nothing to raise
		return base
	}
	live = max(live, 1)
	if floor <= live {
		return base
	}
	p := min((floor-live)*100/live, maxFloorPercent)
	return max(base, int(p))
}
