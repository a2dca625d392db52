package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// runGraphBench measures the base-image graph through the built binary:
// the push rate of c.graphImages images built on one base with the graph
// on and off (the graph's cost per push), and, with it on, the time from
// the push that moves the base tag to the last base_image_updated delivery
// (one per dependent) at a webhook receiver.
func runGraphBench(_ context.Context, c config, work string) (string, error) {
	berthBin := c.berthBin
	if berthBin == "" {
		var err error
		if berthBin, err = buildBerth(work); err != nil {
			return "", err
		}
	}
	base, err := random.Image(64<<10, 3)
	if err != nil {
		return "", err
	}
	deps := make([]v1.Image, c.graphImages)
	for i := range deps {
		l, err := random.Layer(4<<10, types.DockerLayer)
		if err != nil {
			return "", err
		}
		if deps[i], err = mutate.AppendLayers(base, l); err != nil {
			return "", err
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "## Base-image graph: %d images on one base\n\n", c.graphImages)
	fmt.Fprintf(&b, "%s; Go %s; commit %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"), runtime.Version(), gitRev())
	fmt.Fprintf(&b, "| | graph on | graph off | cost of the graph |\n|---|---|---|---|\n")
	rates := map[bool]float64{}
	var moveToLast, moveToFirst time.Duration
	var indexed time.Duration
	for _, on := range []bool{true, false} {
		dir := filepath.Join(work, fmt.Sprintf("graph-%v", on))
		os.MkdirAll(dir, 0o755)
		cfg := filepath.Join(dir, "berth.yaml")
		os.WriteFile(cfg, []byte(fmt.Sprintf("notifications:\n  allowedHosts: [loopback]\n  workers: 8\ngraph:\n  enabled: %v\nscan:\n  enabled: false\n", on)), 0o644)
		s, err := startBerth(berthBin, dir, []string{"--config", cfg, "--log-level", "warn"})
		if err != nil {
			return "", err
		}
		host := s.addr
		push := func(ref string, img v1.Image) error {
			r, err := name.ParseReference(host+"/"+ref, name.Insecure)
			if err != nil {
				return err
			}
			return remote.Write(r, img)
		}
		if err := push("base/runtime:1.9", base); err != nil {
			s.stop()
			return "", err
		}
		bd, _ := base.Digest()
		var received atomic.Int64
		var first, last atomic.Int64
		receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			now := time.Now().UnixNano()
			if received.Add(1) == 1 {
				first.Store(now)
			}
			last.Store(now)
			w.WriteHeader(http.StatusNoContent)
		}))
		if on {
			if st, m, err := apiCall(s.baseURL(), "POST", "/api/v1/superuser/notification/", map[string]any{"event": "base_image_updated",
				"method": "webhook", "title": "bench", "config": map[string]any{"url": receiver.URL}}); err != nil || st != 201 {
				receiver.Close()
				s.stop()
				return "", fmt.Errorf("create notification: %d %v %v", st, m, err)
			}
		}
		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, len(deps))
		sem := make(chan struct{}, 10)
		for i, img := range deps {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				if err := push(fmt.Sprintf("apps/app-%d:1", i), img); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		took := time.Since(start)
		close(errs)
		if err := <-errs; err != nil {
			receiver.Close()
			s.stop()
			return "", err
		}
		rates[on] = float64(len(deps)) / took.Seconds()
		if on {
			// Every dependent indexed before the base moves.
			deadline := time.Now().Add(10 * time.Minute)
			for {
				_, m, err := apiCall(s.baseURL(), "GET", "/api/v1/repository/base/runtime/manifest/"+bd.String()+"/dependents", nil)
				if d, _ := m["dependents"].([]any); err == nil && len(d) == len(deps) {
					break
				}
				if time.Now().After(deadline) {
					receiver.Close()
					s.stop()
					return "", fmt.Errorf("dependents not indexed after 10 minutes: %v", err)
				}
				time.Sleep(50 * time.Millisecond)
			}
			indexed = time.Since(start)
			patched, _ := random.Image(64<<10, 3)
			moved := time.Now()
			if err := push("base/runtime:1.9", patched); err != nil {
				receiver.Close()
				s.stop()
				return "", err
			}
			deadline = time.Now().Add(10 * time.Minute)
			for received.Load() < int64(len(deps)) {
				if time.Now().After(deadline) {
					receiver.Close()
					s.stop()
					return "", fmt.Errorf("%d of %d deliveries after 10 minutes", received.Load(), len(deps))
				}
				time.Sleep(5 * time.Millisecond)
			}
			time.Sleep(time.Second)
			if n := received.Load(); n != int64(len(deps)) {
				receiver.Close()
				s.stop()
				return "", fmt.Errorf("%d deliveries for %d dependents", n, len(deps))
			}
			moveToFirst = time.Duration(first.Load() - moved.UnixNano())
			moveToLast = time.Duration(last.Load() - moved.UnixNano())
		}
		receiver.Close()
		s.stop()
	}
	fmt.Fprintf(&b, "| push of the images (10 concurrent), images/s | %.1f | %.1f | %.2fx |\n", rates[true], rates[false], rates[false]/rates[true])
	fmt.Fprintf(&b, "| first push to every image indexed | %s | | |\n", indexed.Round(time.Millisecond))
	fmt.Fprintf(&b, "| base tag moved to first base_image_updated delivery | %s | | |\n", moveToFirst.Round(time.Millisecond))
	fmt.Fprintf(&b, "| base tag moved to last of %d deliveries | %s | | |\n", len(deps), moveToLast.Round(time.Millisecond))
	fmt.Fprintf(&b, "\nCommand: `go run ./bench -graph %d`\n", c.graphImages)
	return b.String(), nil
}
