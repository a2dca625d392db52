package scan_test

import (
	"fmt"
	"testing"

	"github.com/berth-dev/berth/internal/scan/index"
)

// BenchmarkScanSmallImage is the background cost the scanner adds to each
// push of a small image (one 4 KiB file layer, no packages): the scan job
// with its SBOM and events, pushes excluded.
func BenchmarkScanSmallImage(b *testing.B) {
	t := &testing.T{}
	e := newEnv(t, "sqlite", index.Limits{})
	e.t = t
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		e.push("bench/small", fmt.Sprint("t", i), layer(t, map[string]string{"app/data": fmt.Sprintf("%04096d", i)}))
		b.StartTimer()
		e.drain()
	}
}
