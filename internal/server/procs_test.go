package server

import (
	"io"
	"log/slog"
	"runtime"
	"testing"
)

func TestExtraProcsCases(t *testing.T) {
	for _, c := range []struct {
		name                 string
		extra, current, cpus int
		set                  bool
		want                 int
	}{
		{"added to Go's setting", 1, 4, 4, false, 5},
		{"two", 2, 2, 2, false, 4},
		{"off", 0, 4, 4, false, 4},
		{"negative is off", -3, 4, 4, false, 4},
		{"GOMAXPROCS in the environment", 1, 4, 4, true, 4},
		{"under a CPU limit", 1, 3, 8, false, 3},
		{"a setting above the cores (set by hand before)", 1, 8, 4, false, 9},
	} {
		if got := extraProcs(c.extra, c.current, c.cpus, c.set); got != c.want {
			t.Errorf("%s: extraProcs(%d, %d, %d, %v) = %d, want %d", c.name, c.extra, c.current, c.cpus, c.set, got, c.want)
		}
	}
}

// TestExtraProcs changes the test process's GOMAXPROCS: not parallel.
func TestExtraProcs(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cpus := runtime.NumCPU()
	orig := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(orig) })
	noEnv := func(string) string { return "" }
	runtime.SetDefaultGOMAXPROCS()
	def := runtime.GOMAXPROCS(0)

	// Go's setting at the cores: one more, and restore gives Go's default
	// back.
	runtime.GOMAXPROCS(cpus)
	restore := ExtraProcs(1, noEnv, log)
	if got := runtime.GOMAXPROCS(0); got != cpus+1 {
		t.Fatalf("GOMAXPROCS = %d after ExtraProcs(1) on %d cores, want %d", got, cpus, cpus+1)
	}
	restore()
	if got := runtime.GOMAXPROCS(0); got != def {
		t.Fatalf("GOMAXPROCS = %d after restore, want Go's default %d", got, def)
	}

	// Left alone: off, chosen in the environment.
	runtime.GOMAXPROCS(cpus)
	for _, c := range []struct {
		extra  int
		getenv func(string) string
	}{
		{0, noEnv},
		{1, func(k string) string {
			if k == "GOMAXPROCS" {
				return "3"
			}
			return ""
		}},
	} {
		restore := ExtraProcs(c.extra, c.getenv, log)
		if got := runtime.GOMAXPROCS(0); got != cpus {
			t.Errorf("ExtraProcs(%d) changed GOMAXPROCS to %d, want %d", c.extra, got, cpus)
		}
		restore()
		if got := runtime.GOMAXPROCS(0); got != cpus {
			t.Errorf("ExtraProcs(%d)'s restore changed GOMAXPROCS to %d, want %d", c.extra, got, cpus)
		}
	}

	// Under a limit below the cores (as a container's CPU quota sets it).
	if cpus >= 2 {
		runtime.GOMAXPROCS(cpus - 1)
		restore := ExtraProcs(1, noEnv, log)
		if got := runtime.GOMAXPROCS(0); got != cpus-1 {
			t.Errorf("GOMAXPROCS = %d under a limit of %d, want it left alone", got, cpus-1)
		}
		restore()
	}
}
