package main

// The pull ceiling: a minimal Go file server, the bench binary itself
// started again with BENCH_SERVE_FILE set, serving the big layer with
// http.ServeContent (which sends an *os.File with sendfile). It is what a
// client on this machine reads over loopback from a server that does
// nothing else, so it bounds what a registry's pull can reach here.
// /buffered serves the same file through a reader that hides the file, so
// ServeContent copies it through a buffer instead (as Distribution does).
//
// It also answers every manifest GET with the load test's manifest, read
// once from the file the bench writes before that test and then served
// from memory: no lookup, no negotiation, no authentication. What the
// bench's load client sees from it bounds a registry's manifest GET rate
// and latency on this machine, as the file bounds its pull.

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

const serveFileEnv, serveAddrEnv, serveManifestEnv = "BENCH_SERVE_FILE", "BENCH_SERVE_ADDR", "BENCH_SERVE_MANIFEST"

// ceilingManifest is the file, in the ceiling's directory, that holds the
// manifest the ceiling answers manifest GETs with.
const ceilingManifest = "manifest.json"

// maybeServeFile runs the ceiling server and never returns when the bench
// was started as one.
func maybeServeFile() {
	path := os.Getenv(serveFileEnv)
	if path == "" {
		return
	}
	mux := http.NewServeMux()
	serve := func(hide bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			f, err := os.Open(path)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			defer f.Close()
			fi, err := f.Stat()
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			w.Header().Set("Content-Type", "application/octet-stream")
			var content io.ReadSeeker = f
			if hide {
				content = struct{ io.ReadSeeker }{f}
			}
			http.ServeContent(w, r, "", fi.ModTime(), content)
		}
	}
	mux.HandleFunc("GET /file", serve(false))
	mux.HandleFunc("GET /buffered", serve(true))
	type manifest struct {
		body           []byte
		digest, length string
	}
	// Read once it is there (the bench writes it after starting this
	// server), then answered from memory.
	var cached atomic.Pointer[manifest]
	load := func() (*manifest, error) {
		if m := cached.Load(); m != nil {
			return m, nil
		}
		b, err := os.ReadFile(os.Getenv(serveManifestEnv))
		if err != nil {
			return nil, err
		}
		m := &manifest{b, sha(b), strconv.Itoa(len(b))}
		cached.Store(m)
		return m, nil
	}
	mux.HandleFunc("GET /v2/{path...}", func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.URL.Path, "/manifests/") {
			return // GET /v2/
		}
		m, err := load()
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		h := w.Header()
		h.Set("Content-Type", mtOCIManifest)
		h.Set("Docker-Content-Digest", m.digest)
		h.Set("Content-Length", m.length)
		w.Write(m.body)
	})
	if err := http.ListenAndServe(os.Getenv(serveAddrEnv), mux); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// startCeiling starts the ceiling server on the layer file.
func startCeiling(work, layer string) (*server, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(work, "ceiling")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	env := append(os.Environ(), serveFileEnv+"="+layer, serveAddrEnv+"="+addr, serveManifestEnv+"="+filepath.Join(dir, ceilingManifest))
	s := &server{name: "ceiling", addr: addr, dataDir: dir, logPath: filepath.Join(dir, "server.log")}
	return s, s.start(exe, nil, env)
}

// pullURL is where a server serves the big layer.
func pullURL(s *server, repo string, layer *bigLayer) string {
	if s.name == "ceiling" {
		return s.baseURL() + "/file"
	}
	return s.baseURL() + "/v2/" + repo + "/blobs/" + layer.digest
}

// runPullURL GETs url with the bench's client, hashing as it streams.
func runPullURL(r *registry, url string, layer *bigLayer) (float64, error) {
	settle()
	buf := make([]byte, 1<<20)
	start := time.Now()
	n, err := r.pullURL(url, layer.digest, buf)
	if err != nil {
		return 0, err
	}
	if n != layer.size {
		return 0, fmt.Errorf("pulled %d bytes, want %d", n, layer.size)
	}
	return float64(n) / 1e6 / time.Since(start).Seconds(), nil
}

// runCurlPull reads url with curl into /dev/null (no hashing: the client
// costs as little as it can); returns MB/s.
func runCurlPull(url string, size int64) (float64, error) {
	bin, err := exec.LookPath("curl")
	if err != nil {
		return 0, fmt.Errorf("curl not on PATH")
	}
	settle()
	var out bytes.Buffer
	cmd := exec.Command(bin, "-sS", "--fail", "-o", os.DevNull, "-w", "%{size_download} %{time_total}", url)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("curl: %v: %s", err, tail(out.String(), 500))
	}
	f := strings.Fields(out.String())
	if len(f) != 2 {
		return 0, fmt.Errorf("curl: unexpected output %q", out.String())
	}
	n, _ := strconv.ParseInt(f[0], 10, 64)
	secs, _ := strconv.ParseFloat(f[1], 64)
	if n != size || secs <= 0 {
		return 0, fmt.Errorf("curl read %d bytes in %ss, want %d", n, f[1], size)
	}
	return float64(n) / 1e6 / secs, nil
}
