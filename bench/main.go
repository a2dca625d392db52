// Command bench runs Berth and CNCF Distribution side by side on the same
// machine and the same data, and prints a markdown table comparing them.
//
//	go run ./bench                                              # full run
//	go run ./bench -layer-mib 64 -small-images 200 -load-duration 3s   # quick
//
// See bench/README.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

const defaultDistributionBin = "/usr/bin/docker-registry"

type config struct {
	berthBin, distributionBin, only, out, workDir, pushMode, berthArgs string
	layerMiB, smallImages, smallKiB, concurrency, loadWorkers, rounds  int
	loadDuration                                                       time.Duration
	wrk, keep, authLoad                                                bool
	mirrorTags                                                         int
	pushStreams                                                        int
	berthFsync                                                         bool
	gcImages                                                           int
	graphImages                                                        int
	storage                                                            string
	triggers                                                           bool
	scan                                                               scanFlags
}

func parseFlags() config {
	var c config
	flag.StringVar(&c.berthBin, "berth-bin", "", "use this prebuilt berth binary instead of building ./cmd/berth")
	flag.StringVar(&c.berthArgs, "berth-args", "--log-level warn", "extra arguments appended to `berth serve ...` (space separated); the default matches Distribution's log level")
	flag.StringVar(&c.distributionBin, "distribution-bin", defaultDistributionBin, "CNCF Distribution binary (Debian package docker-registry)")
	flag.StringVar(&c.only, "only", "", "run against one registry only: berth or distribution")
	flag.StringVar(&c.out, "out", "", "also write the markdown report to this file")
	flag.StringVar(&c.workDir, "work-dir", "", "parent directory for data and the test layer (default: system temp dir)")
	flag.BoolVar(&c.keep, "keep", false, "keep the work directory (data, configs, server logs) at the end")
	flag.IntVar(&c.layerMiB, "layer-mib", 512, "size of the single-stream push/pull layer in MiB")
	flag.StringVar(&c.pushMode, "push-mode", "patch", "big layer upload: patch (POST, one streamed PATCH, PUT ?digest; as docker/ggcr) or put (POST, PUT ?digest with the body)")
	flag.IntVar(&c.smallImages, "small-images", 1000, "number of small images to push per round")
	flag.IntVar(&c.smallKiB, "small-kib", 4, "payload size of each small image's layer in KiB (random, so about as large gzip'd)")
	flag.IntVar(&c.pushStreams, "push-streams", 10, "concurrent push streams, each a distinct layer of layer-mib/8 MiB (0: skip the row)")
	flag.IntVar(&c.concurrency, "concurrency", 10, "concurrent pushers for the small-image workload")
	flag.IntVar(&c.loadWorkers, "load-workers", 64, "concurrent workers (keep-alive connections) for manifest GET under load")
	flag.DurationVar(&c.loadDuration, "load-duration", 10*time.Second, "duration of the manifest GET load test per registry per round")
	flag.IntVar(&c.rounds, "rounds", 3, "repeat the throughput workloads this many times and report the median")
	flag.BoolVar(&c.authLoad, "auth-load", true, "also measure manifest GET with authentication on (a second instance of each registry with token auth)")
	flag.BoolVar(&c.wrk, "wrk", true, "also measure manifest GET with wrk when wrk is on PATH")
	flag.IntVar(&c.gcImages, "gc", 0, "instead of the registry workloads, measure online garbage collection of this many garbage images under a push load (SQLite; PostgreSQL too with -scan-postgres)")
	flag.IntVar(&c.graphImages, "graph", 0, "instead of the registry workloads, measure the base-image graph with this many images on one base: the push rate with the graph on and off, and the time from a base tag move to the last base_image_updated delivery")
	flag.BoolVar(&c.triggers, "triggers", false, "instead of the registry workloads, measure the latency of what Berth triggers: push to webhook delivery at 1, 10 and 100 pushes/s, push to scan complete (Berth only)")
	flag.BoolVar(&c.berthFsync, "berth-fsync", true, "Berth's storage.filesystem.fsync (blob and directory fsyncs, SQLite commits waiting for the flush of its log); false measures what durability costs")
	flag.IntVar(&c.mirrorTags, "mirror", 0, "instead of the registry workloads, compare mirroring this many tags (Berth's mirror vs skopeo sync into Distribution)")
	flag.StringVar(&c.storage, "storage", "filesystem", "filesystem, or s3: push and pull through one versitygw with both registries' S3 drivers (bench/s3.go)")
	c.scan.register(flag.CommandLine)
	flag.Parse()
	if flag.NArg() > 0 {
		fatalf("unexpected arguments: %v", flag.Args())
	}
	switch {
	case c.only != "" && c.only != "berth" && c.only != "distribution":
		fatalf("-only must be berth or distribution, not %q", c.only)
	case c.storage != "filesystem" && c.storage != "s3":
		fatalf("-storage must be filesystem or s3")
	case c.pushMode != "patch" && c.pushMode != "put":
		fatalf("-push-mode must be patch or put")
	case c.layerMiB < 1 || c.smallImages < 1 || c.smallKiB < 1 || c.concurrency < 1 || c.loadWorkers < 1 || c.rounds < 1 || c.loadDuration <= 0:
		fatalf("sizes, counts, rounds and durations must be positive")
	}
	return c
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

var (
	cleanupMu  sync.Mutex
	cleanups   []func()
	cleanedUp  bool
	exitStatus int
)

func atCleanup(f func()) {
	cleanupMu.Lock()
	defer cleanupMu.Unlock()
	cleanups = append(cleanups, f)
}

func cleanup() {
	cleanupMu.Lock()
	defer cleanupMu.Unlock()
	if cleanedUp {
		return
	}
	cleanedUp = true
	for _, f := range slices.Backward(cleanups) {
		f()
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	cleanup()
	os.Exit(1)
}

func nproc() int { return runtime.NumCPU() }

func main() {
	maybeServeFile()
	c := parseFlags()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sigs
		logf("got %v: stopping servers", s)
		cleanup()
		os.Exit(130)
	}()
	defer cleanup()

	work, err := os.MkdirTemp(c.workDir, "berth-bench-")
	if err != nil {
		fatalf("%v", err)
	}
	atCleanup(func() {
		if c.keep {
			logf("kept work directory %s", work)
		} else {
			_ = os.RemoveAll(work)
		}
	})

	// The GC and scanning benchmarks replace the registry workloads.
	for _, alt := range []struct {
		on   bool
		name string
		run  func(context.Context, config, string) (string, error)
	}{{c.gcImages > 0, "gc", runGCBench}, {c.scan.enabled, "scan", runScanBench}, {c.graphImages > 0, "graph", runGraphBench},
		{c.storage == "s3", "s3", runS3Bench}, {c.triggers, "triggers", runTriggerBench}} {
		if !alt.on {
			continue
		}
		report, err := alt.run(context.Background(), c, work)
		if err != nil {
			fatalf("%s: %v", alt.name, err)
		}
		fmt.Print(report)
		if c.out != "" {
			if err := os.WriteFile(c.out, []byte(report), 0o644); err != nil {
				fatalf("writing %s: %v", c.out, err)
			}
		}
		cleanup()
		os.Exit(exitStatus)
	}

	names := []string{"berth", "distribution"}
	if c.only != "" {
		names = []string{c.only}
	}
	want := func(n string) bool { return slices.Contains(names, n) }

	// Prepare binaries before any data or server exists.
	berthBin, distBin := c.berthBin, ""
	if want("berth") && berthBin == "" {
		if berthBin, err = buildBerth(work); err != nil {
			fatalf("%v", err)
		}
	}
	if want("distribution") {
		if distBin, err = ensureDistribution(c.distributionBin); err != nil {
			fatalf("%v", err)
		}
	}

	if c.mirrorTags > 0 {
		report := runMirrorBench(c, work, berthBin, distBin)
		fmt.Print(report)
		if c.out != "" {
			os.WriteFile(c.out, []byte(report), 0o644)
		}
		cleanup()
		os.Exit(exitStatus)
	}

	logf("writing %d MiB random layer", c.layerMiB)
	t0 := time.Now()
	layer, err := makeBigLayer(filepath.Join(work, "layer.bin"), c.layerMiB)
	if err != nil {
		fatalf("making layer: %v", err)
	}
	logf("layer %s ready in %.1fs", layer.digest, time.Since(t0).Seconds())
	streamMiB := max(1, c.layerMiB/8)
	streams, err := makeStreamLayers(work, c.pushStreams, streamMiB)
	if err != nil {
		fatalf("making stream layers: %v", err)
	}

	servers := map[string]*server{}
	for _, n := range names {
		var s *server
		if n == "berth" {
			args := strings.Fields(c.berthArgs)
			if !c.berthFsync {
				p := filepath.Join(work, "berth-nofsync.yaml")
				os.WriteFile(p, []byte("storage:\n  filesystem:\n    fsync: false\n"), 0o644)
				args = append(args, "--config", p)
			}
			s, err = startBerth(berthBin, work, args)
		} else {
			s, err = startDistribution(distBin, work)
		}
		if s != nil {
			atCleanup(s.stop)
		}
		if err != nil {
			fatalf("%v", err)
		}
		servers[n] = s
	}

	// Second instances with token auth, for manifest GET with a Bearer token.
	authed := map[string]*authedServer{}
	if c.authLoad {
		for _, n := range names {
			a, err := startAuthed(n, berthBin, distBin, work, strings.Fields(c.berthArgs))
			if a != nil && a.s != nil {
				atCleanup(a.s.stop)
			}
			if err != nil {
				fatalf("%s with auth: %v", n, err)
			}
			authed[n] = a
		}
	}

	// The pull ceiling: a minimal http.ServeContent server on the same file.
	if s, err := startCeiling(work, layer.path); err != nil {
		logf("no ceiling server: %v", err)
	} else {
		atCleanup(s.stop)
		servers["ceiling"] = s
	}

	res := newResults()
	run(c, names, servers, authed, layer, streams, res)

	for _, n := range names {
		s := servers[n]
		if st, err := s.stats(); err != nil {
			res.fail("rss", n, err)
			res.fail("cpu", n, err)
		} else {
			res.add("rss", n, float64(st.hwmKiB)/1024)
			res.add("cpu", n, st.cpuSecs)
		}
		if du, err := diskUsage(s.dataDir); err != nil {
			res.fail("disk", n, err)
		} else {
			res.add("disk", n, float64(du)/(1<<20))
		}
	}

	facts := machineFacts(c, berthBin, distBin)
	report := renderReport(c, facts, res)
	fmt.Print(report)
	if c.out != "" {
		if err := os.WriteFile(c.out, []byte(report), 0o644); err != nil {
			fatalf("writing %s: %v", c.out, err)
		}
		logf("wrote %s", c.out)
	}
	cleanup()
	os.Exit(exitStatus)
}

// run executes every workload for every round, alternating which registry
// goes first so drift on a shared machine does not favour one of them.
func run(c config, names []string, servers map[string]*server, authed map[string]*authedServer, layer *bigLayer, streams []*bigLayer, res *results) {
	bigClients := map[string]*registry{}
	smallClients := map[string]*registry{}
	streamClients := map[string]*registry{}
	pullNames := names
	if servers["ceiling"] != nil {
		pullNames = append(slices.Clone(names), "ceiling")
	}
	for _, n := range pullNames {
		bigClients[n] = &registry{base: servers[n].baseURL(), client: newClient(2, 256)}
		bigClients[n].client.Timeout = 15 * time.Minute
		smallClients[n] = &registry{base: servers[n].baseURL(), client: newClient(c.concurrency, 32)}
		streamClients[n] = &registry{base: servers[n].baseURL(), client: newClient(max(1, c.pushStreams), 256)}
		streamClients[n].client.Timeout = 15 * time.Minute
		smallClients[n].client.Timeout = 2 * time.Minute
	}

	// The image the load test reads, pushed once up front.
	loadRepo, loadTag := "bench/load", "latest"
	loadImg, err := makeSmallImage(0xfeed, 0, c.smallKiB<<10)
	if err != nil {
		fatalf("%v", err)
	}
	for _, n := range names {
		if err := smallClients[n].pushImage(loadRepo, loadTag, loadImg); err != nil {
			res.fail("load_rps", n, fmt.Errorf("pushing %s:%s: %w", loadRepo, loadTag, err))
		}
	}
	// The ceiling answers the load with the same manifest from memory.
	loadNames := names
	if s := servers["ceiling"]; s != nil {
		if err := os.WriteFile(filepath.Join(s.dataDir, ceilingManifest), loadImg.manifest, 0o644); err != nil {
			logf("no manifest ceiling: %v", err)
		} else {
			loadNames = append(slices.Clone(names), "ceiling")
		}
	}
	for _, n := range names {
		if a := authed[n]; a != nil {
			r := &registry{base: a.s.baseURL(), client: withToken(newClient(2, 32), a.token)}
			if err := r.pushImage(loadRepo, loadTag, loadImg); err != nil {
				res.fail("load_auth_rps", n, fmt.Errorf("pushing %s:%s with a token: %w", loadRepo, loadTag, err))
			} else if err := checkAuthRequired(a.s.baseURL(), loadRepo, loadTag); err != nil {
				res.fail("load_auth_rps", n, err)
			}
		}
	}
	_, wrkErr := whichWrk(c.wrk)

	// step runs one workload on one server, unless the server is gone. When
	// work is given, it also records the server's CPU time per unit of work
	// (cpu seconds / work()) as metric_cpu: that is far less sensitive to a
	// busy machine than wall-clock throughput.
	var stepOn func(metric, n string, s *server, f func() (float64, error), work func() float64)
	step := func(metric, n string, f func() (float64, error), work func() float64) {
		stepOn(metric, n, servers[n], f, work)
	}
	stepOn = func(metric, n string, s *server, f func() (float64, error), work func() float64) {
		if !s.alive() {
			res.fail(metric, n, fmt.Errorf("server exited (%v); log tail:\n%s", s.waitErr, s.logTail()))
			return
		}
		before, statErr := s.stats()
		v, err := f()
		if err != nil {
			logf("  %-12s %-10s error: %v", n, metric, err)
			res.fail(metric, n, err)
			return
		}
		logf("  %-12s %-10s %.1f", n, metric, v)
		res.add(metric, n, v)
		if after, err := s.stats(); work != nil && statErr == nil && err == nil && work() > 0 {
			res.add(metric+"_cpu", n, cpuDelta(before, after)/work())
		}
	}

	for round := range c.rounds {
		order := slices.Clone(names)
		if round%2 == 1 {
			slices.Reverse(order)
		}
		logf("round %d/%d (order: %s)", round+1, c.rounds, strings.Join(order, ", "))
		bigRepo := fmt.Sprintf("bench/big-r%d", round)
		smallRepo := fmt.Sprintf("bench/small-r%d", round)
		imgs, err := makeSmallImages(uint64(round+1), c.smallImages, c.smallKiB<<10)
		if err != nil {
			fatalf("%v", err)
		}
		gb := func() float64 { return float64(layer.size) / 1e9 }
		for _, n := range order {
			step("push", n, func() (float64, error) { return runPush(bigClients[n], bigRepo, layer, c.pushMode) }, gb)
		}
		for _, n := range order {
			step("push_chunked", n, func() (float64, error) { return runChunkedPush(bigClients[n], bigRepo+"-chunked", layer) }, gb)
		}
		if len(streams) > 0 {
			var streamBytes int64
			for _, l := range streams {
				streamBytes += l.size
			}
			for _, n := range order {
				step("push_streams", n, func() (float64, error) { return runConcurrentPush(streamClients[n], bigRepo+"-streams", streams) },
					func() float64 { return float64(streamBytes) / 1e9 })
			}
		}
		if round == 0 {
			// The first read of the layer after its push, before the
			// rounds' pulls: Berth wrote it with direct I/O, so it comes
			// from the disk into page-cache pages allocated for it, where
			// Distribution's push left it in the page cache. Every round
			// pushes the same layer, so only the first round has one.
			for _, n := range order {
				step("pull_first", n, func() (float64, error) { return runPullURL(bigClients[n], pullURL(servers[n], bigRepo, layer), layer) }, gb)
			}
		}
		// Pulls, the ceiling in turn with the registries (rotated each round).
		pullOrder := slices.Clone(pullNames)
		for range round % len(pullOrder) {
			pullOrder = append(pullOrder[1:], pullOrder[0])
		}
		for _, n := range pullOrder {
			step("pull", n, func() (float64, error) { return runPullURL(bigClients[n], pullURL(servers[n], bigRepo, layer), layer) }, gb)
		}
		for _, n := range pullOrder {
			step("pull_curl", n, func() (float64, error) { return runCurlPull(pullURL(servers[n], bigRepo, layer), layer.size) }, gb)
		}
		// The single-core SHA-256 rate, measured between the workloads.
		sha := sha256Rate()
		res.add("sha256", "client", sha)
		if v := res.vals["push"]["berth"]; len(v) == round+1 && sha > 0 {
			res.add("push_sha", "berth", v[round]/sha)
		}
		// And what the disk takes durably, which bounds a push that is
		// flushed before it is acknowledged.
		if dw, err := diskWriteRate(layer); err != nil {
			logf("  disk write: %v", err)
		} else {
			res.add("disk_write", "client", dw)
			for _, n := range names {
				if v := res.vals["push"][n]; len(v) == round+1 {
					res.add("push_disk", n, v[round]/dw)
				}
			}
		}
		for _, n := range order {
			step("small", n, func() (float64, error) {
				var before map[string]float64
				if n == "berth" {
					before, _ = scrapeCounters(servers[n].baseURL(), sqliteCounters...)
				}
				c0 := selfCPU()
				v, err := runSmallPushes(smallClients[n], smallRepo, imgs, c.concurrency)
				if err == nil {
					// The client shares the cores: its CPU per image bounds
					// the rate any server could reach here.
					res.add("small_client_cpu", n, (selfCPU()-c0)*1e3/float64(len(imgs)))
				}
				if err != nil || n != "berth" {
					res.add("small_drained", n, v)
					return v, err
				}
				// Berth scans every pushed image in the background: wait
				// until its scan queue is empty, so the rate and the CPU
				// per image include that work.
				pushed := float64(len(imgs)) / v
				t0 := time.Now()
				if err := waitScanQueue(servers[n].baseURL(), 10*time.Minute); err != nil {
					return v, err
				}
				elapsed := pushed + time.Since(t0).Seconds()
				res.add("small_drained", n, float64(len(imgs))/elapsed)
				// SQLite's writes per image, counted rather than timed: they
				// do not move with the load on the shared cores.
				if after, err := scrapeCounters(servers[n].baseURL(), sqliteCounters...); err == nil && before != nil {
					diff := func(name string) (float64, bool) {
						b, okB := before[name]
						a, okA := after[name]
						return a - b, okA && okB
					}
					per := float64(len(imgs))
					if tx, ok := diff("registry_database_writer_waits_total"); ok {
						res.add("small_tx", n, tx/per)
					}
					if held, ok := diff("registry_database_writer_hold_seconds_total"); ok && elapsed > 0 {
						res.add("small_writer_busy", n, held/elapsed)
					}
					flushes, okF := diff("registry_database_log_flushes_total")
					commits, okC := diff("registry_database_log_flush_commits_total")
					if okF && okC && flushes > 0 {
						res.add("small_flushes", n, flushes/per)
						res.add("small_flush_commits", n, commits/flushes)
					}
				}
				return v, nil
			}, func() float64 { return float64(len(imgs)) / 1e3 })
		}
		loadOrder := slices.Clone(loadNames)
		for range round % len(loadOrder) {
			loadOrder = append(loadOrder[1:], loadOrder[0])
		}
		for _, n := range loadOrder {
			var lr loadResult
			step("load_rps", n, func() (float64, error) {
				var err error
				lr, err = runManifestLoad(servers[n].baseURL(), loadRepo, loadTag, "", c.loadWorkers, c.loadDuration)
				return lr.rps, err
			}, func() float64 { return float64(lr.total) / 1e6 })
			if lr.requests > 0 && lr.rps > 0 {
				res.add("load_p50", n, lr.p50ms)
				res.add("load_p99", n, lr.p99ms)
			}
		}
		for _, n := range order {
			a := authed[n]
			if a == nil || res.errs["load_auth_rps"][n] != "" {
				continue
			}
			var lr loadResult
			// Outside the timed step: a token's password check is not
			// the load's work.
			if err := a.renew(); err != nil {
				res.fail("load_auth_rps", n, err)
				continue
			}
			stepOn("load_auth_rps", n, a.s, func() (float64, error) {
				var err error
				lr, err = runManifestLoad(a.s.baseURL(), loadRepo, loadTag, a.token, c.loadWorkers, c.loadDuration)
				return lr.rps, err
			}, func() float64 { return float64(lr.total) / 1e6 })
			if lr.requests > 0 && lr.rps > 0 {
				res.add("load_auth_p50", n, lr.p50ms)
				res.add("load_auth_p99", n, lr.p99ms)
			}
		}
		if wrkErr == nil {
			for _, n := range loadOrder {
				var wr wrkResult
				step("wrk_rps", n, func() (float64, error) {
					var err error
					wr, err = runWrk(servers[n].baseURL(), loadRepo, loadTag, "", c.loadWorkers, c.loadDuration)
					return wr.rps, err
				}, nil)
				if wr.rps > 0 {
					res.add("wrk_p50", n, wr.p50ms)
					res.add("wrk_p99", n, wr.p99ms)
				}
			}
			for _, n := range order {
				a := authed[n]
				if a == nil || res.errs["load_auth_rps"][n] != "" {
					continue
				}
				var wr wrkResult
				if err := a.renew(); err != nil {
					res.fail("wrk_auth_rps", n, err)
					continue
				}
				stepOn("wrk_auth_rps", n, a.s, func() (float64, error) {
					var err error
					wr, err = runWrk(a.s.baseURL(), loadRepo, loadTag, a.token, c.loadWorkers, c.loadDuration)
					return wr.rps, err
				}, nil)
				if wr.rps > 0 {
					res.add("wrk_auth_p50", n, wr.p50ms)
					res.add("wrk_auth_p99", n, wr.p99ms)
				}
			}
		}
	}
}
