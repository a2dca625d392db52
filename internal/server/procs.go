package server

import (
	"log/slog"
	"runtime"
)

// ExtraProcs adds extra to GOMAXPROCS, the number of threads that run Go
// code at once, and returns what gives Go its own setting back.
//
// Why: a goroutine in a system call the runtime cannot hand to its network
// poller (an fsync, a direct write, SQLite's reads and writes of its files)
// keeps its thread's share of GOMAXPROCS until the runtime's monitor,
// which wakes every 20 µs at best, takes it back; with GOMAXPROCS equal to
// the cores, the cores wait meanwhile. Berth's pushes are such calls end
// to end (a blob's direct writes and flush, the database's log), and one
// extra share keeps the cores busy while one thread waits. Measured on 2
// cores, one extra against none (runs alternating, fresh servers; the
// figures in docs/deployment.md): small image pushes 1.02× to 1.28× the
// images per second in eight pairs of eight; manifest GETs under `wrk
// -c64` a lower p99 in twelve pairs of twelve and more requests per second
// in ten; a 1 GiB push by curl faster in six pairs of six; pulls by curl
// did not move. The extra shares do not size anything: the caller sizes
// its pools first, on Go's own setting.
//
// It does nothing when extra is 0 or less, when GOMAXPROCS is set in the
// environment (getenv: the operator has chosen), or when Go's setting is
// below the machine's cores (a CPU limit, such as a container's quota,
// which more running threads would only exhaust sooner).
func ExtraProcs(extra int, getenv func(string) string, log *slog.Logger) (restore func()) {
	current := runtime.GOMAXPROCS(0)
	n := extraProcs(extra, current, runtime.NumCPU(), getenv("GOMAXPROCS") != "")
	if n == current {
		return func() {}
	}
	runtime.GOMAXPROCS(n)
	log.Debug("GOMAXPROCS raised for blocking system calls", "gomaxprocs", n, "cpus", runtime.NumCPU())
	// Go's default again, with its updates when the CPU limit changes,
	// which setting GOMAXPROCS turned off.
	return runtime.SetDefaultGOMAXPROCS
}

// extraProcs is the GOMAXPROCS ExtraProcs sets: current, Go's setting,
// plus extra, unless extra is not positive, GOMAXPROCS was set in the
// environment (set), or current is below the machine's cpus.
func extraProcs(extra, current, cpus int, set bool) int {
	if extra <= 0 || set || current < cpus {
		return current
	}
	return current + extra
}
