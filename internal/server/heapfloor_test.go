package server

import (
	"fmt"
	"io"
	"log/slog"
	"runtime"
	rtmetrics "runtime/metrics"
	"testing"
	"time"
)

func TestFloorPercent(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		live, floor uint64
		base, want  int
	}{
		{8 * mib, 32 * mib, 100, 300},  // goal 32 MiB
		{16 * mib, 32 * mib, 100, 100}, // GOGC's goal is the floor already
		{40 * mib, 32 * mib, 100, 100}, // above the floor: GOGC alone
		{4 * mib, 32 * mib, 100, 400},  // 700 % would reach the floor: bounded
		{0, 32 * mib, 100, 400},        // nothing live yet
		{8 * mib, 24 * mib, 250, 250},  // a higher base gives more
		{1 * mib, 32 * mib, 500, 500},  // above the bound too
		{8 * mib, 32 * mib, -1, -1},    // GC off stays off
	} {
		if got := floorPercent(tc.live, tc.floor, tc.base); got != tc.want {
			t.Errorf("floorPercent(live %d MiB, floor %d MiB, base %d) = %d, want %d", tc.live/mib, tc.floor/mib, tc.base, got, tc.want)
		}
	}
}

// gcPercent is the runtime's GC percent now.
func gcPercent(t *testing.T) int {
	t.Helper()
	s := []rtmetrics.Sample{{Name: "/gc/gogc:percent"}}
	rtmetrics.Read(s)
	return int(s[0].Value.Uint64())
}

// percentAfterGC collects until the GC percent is want (the floor adjusts
// after a collection, in the runtime's cleanup goroutine) or wait passes,
// and returns the last percent seen.
func percentAfterGC(t *testing.T, want int, wait time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		runtime.GC()
		time.Sleep(5 * time.Millisecond)
		if p := gcPercent(t); p == want || time.Now().After(deadline) {
			return p
		}
	}
}

// TestHeapFloor raises the GC percent of this test process, whose live
// heap is far below a 1 GiB floor, so it is not parallel; every case
// restores it.
func TestHeapFloor(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	noEnv := func(string) string { return "" }
	base := gcPercent(t)
	if base != 100 {
		t.Skipf("GC percent is %d (GOGC set for the tests?): the cases expect 100", base)
	}

	t.Run("follows the live heap after each collection, restored by stop", func(t *testing.T) {
		// 64 MiB live against a 96 MiB floor: GOGC's 100 % gives more.
		held := make([]byte, 64<<20)
		runtime.GC()
		stop := HeapFloor(96<<20, noEnv, log)
		t.Cleanup(stop)
		if p := percentAfterGC(t, base, time.Second); p != base {
			t.Fatalf("GC percent %d with 64 MiB live and a 96 MiB floor, want %d", p, base)
		}
		runtime.KeepAlive(held)
		// The live heap falls; the next collections find it small and
		// raise the percent, as far as the bound.
		if p := percentAfterGC(t, maxFloorPercent, 5*time.Second); p != maxFloorPercent {
			t.Fatalf("GC percent %d once the live heap is small, want %d", p, maxFloorPercent)
		}
		stop()
		if p := gcPercent(t); p != base {
			t.Fatalf("GC percent %d after stop, want %d", p, base)
		}
		// The cleanup armed before stop must not raise it again.
		for range 3 {
			runtime.GC()
			time.Sleep(5 * time.Millisecond)
		}
		if p := gcPercent(t); p != base {
			t.Fatalf("GC percent %d after collections following stop, want %d", p, base)
		}
	})

	t.Run("GOGC in the environment wins", func(t *testing.T) {
		stop := HeapFloor(1<<30, func(k string) string {
			if k == "GOGC" {
				return "100"
			}
			return ""
		}, log)
		t.Cleanup(stop)
		if p := percentAfterGC(t, maxFloorPercent, 300*time.Millisecond); p != base {
			t.Fatalf("GC percent %d with GOGC set, want it left at %d", p, base)
		}
	})

	t.Run("a floor below the live heap changes nothing", func(t *testing.T) {
		stop := HeapFloor(1, noEnv, log)
		t.Cleanup(stop)
		if p := percentAfterGC(t, maxFloorPercent, 300*time.Millisecond); p != base {
			t.Fatalf("GC percent %d with a 1-byte floor, want %d", p, base)
		}
	})

	// A floor of 0 gives GOGC's percent through floorPercent anyway; a
	// negative one, were it taken, would be a floor of 16 EiB.
	for _, floor := range []int64{0, -1} {
		t.Run(fmt.Sprintf("floor %d is off", floor), func(t *testing.T) {
			stop := HeapFloor(floor, noEnv, log)
			t.Cleanup(stop)
			if p := percentAfterGC(t, maxFloorPercent, 300*time.Millisecond); p != base {
				t.Fatalf("GC percent %d with floor %d, want %d", p, floor, base)
			}
		})
	}
}
