package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/internal/gc"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
	berthregistry "github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/storage/fs"
	"github.com/berth-dev/berth/internal/wire"
)

// gcDelay is the collection delay of the GC benchmark: the garbage is made
// older than it, the pushes of the load are younger.
const gcDelay = 3 * time.Second

// gcResult is one run of the GC benchmark on one database.
type gcResult struct {
	label            string
	garbageImages    int
	collected        gc.Collected
	passTook         time.Duration
	pushAlone        float64 // images/s with no collection running
	pushDuringGC     float64 // images/s while the pass ran
	pushFailures     int64
	manifestsPerSec  float64
	blobsPerSec      float64
	megabytesPerSec  float64
	loadConcurrency  int
	garbageLayerKiB  int
	pushesDuringPass int64
}

// runGCBench measures online garbage collection on SQLite (and PostgreSQL
// when -scan-postgres names one): populate images, untag them so they are
// garbage, then time a full pass while small-image pushes run, and compare
// the push rate during the pass with the rate without one.
func runGCBench(ctx context.Context, c config, work string) (string, error) {
	backends := [][2]string{{"SQLite", filepath.Join(work, "gc-sqlite", "meta.db")}}
	if c.scan.postgres != "" {
		dsn, _, drop, err := createPostgresDB(ctx, c.scan.postgres)
		if err != nil {
			return "", err
		}
		defer drop()
		backends = append(backends, [2]string{"PostgreSQL", dsn})
	}
	var results []gcResult
	for _, b := range backends {
		r, err := runGCBackend(ctx, b[0], b[1], filepath.Join(work, "gc-"+strings.ToLower(b[0])), c.gcImages, c.concurrency)
		if err != nil {
			return "", fmt.Errorf("%s: %w", b[0], err)
		}
		results = append(results, r)
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "## Online garbage collection (%s)\n\n", time.Now().UTC().Format("2006-01-02"))
	fmt.Fprintf(&sb, "%d garbage images (a unique 16 KiB layer and config each, untagged) collected in one pass while %d clients push small images; gc.delay %s.\n\n",
		c.gcImages, c.concurrency, gcDelay)
	sb.WriteString("| | " + strings.Join(func() []string {
		var l []string
		for _, r := range results {
			l = append(l, r.label)
		}
		return l
	}(), " | ") + " |\n|---|" + strings.Repeat("---:|", len(results)) + "\n")
	row := func(name string, f func(r gcResult) string) {
		cells := []string{}
		for _, r := range results {
			cells = append(cells, f(r))
		}
		fmt.Fprintf(&sb, "| %s | %s |\n", name, strings.Join(cells, " | "))
	}
	row("pass took", func(r gcResult) string { return r.passTook.Round(time.Millisecond).String() })
	row("manifests / blobs collected", func(r gcResult) string {
		return fmt.Sprintf("%d / %d", r.collected.Manifests, r.collected.Blobs)
	})
	row("manifests/s", func(r gcResult) string { return fmt.Sprintf("%.0f", r.manifestsPerSec) })
	row("blobs/s", func(r gcResult) string { return fmt.Sprintf("%.0f", r.blobsPerSec) })
	row("MB/s reclaimed", func(r gcResult) string { return fmt.Sprintf("%.1f", r.megabytesPerSec) })
	row("push rate, no GC (images/s)", func(r gcResult) string { return fmt.Sprintf("%.1f", r.pushAlone) })
	row("push rate during the pass (images/s)", func(r gcResult) string { return fmt.Sprintf("%.1f", r.pushDuringGC) })
	row("ratio (during ÷ without)", func(r gcResult) string { return fmt.Sprintf("%.2f×", r.pushDuringGC/r.pushAlone) })
	row("failed pushes", func(r gcResult) string { return fmt.Sprint(r.pushFailures) })
	sb.WriteString("\n")
	return sb.String(), nil
}

func runGCBackend(ctx context.Context, label, dsn, dir string, images, conc int) (gcResult, error) {
	res := gcResult{label: label, garbageImages: images, loadConcurrency: conc, garbageLayerKiB: 16}
	db, err := meta.Open(ctx, dsn)
	if err != nil {
		return res, err
	}
	defer db.Close()
	driver, err := fs.New(filepath.Join(dir, "blobs"), fs.Options{Fsync: true})
	if err != nil {
		return res, err
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	policy := oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}
	srv := httptest.NewServer(berthregistry.New(wire.RegistryStores(db), driver, berthregistry.Options{Policy: policy, Logger: log, GCDelay: gcDelay}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	push := func(repo, tag string, kib int) error {
		b := make([]byte, kib<<10)
		rand.Read(b)
		img, err := mutate.AppendLayers(empty.Image, static.NewLayer(b, types.OCILayer))
		if err != nil {
			return err
		}
		img = mutate.MediaType(img, types.OCIManifestSchema1)
		ref, err := name.ParseReference(host+"/"+repo+":"+tag, name.Insecure)
		if err != nil {
			return err
		}
		return remote.Write(ref, img, remote.WithContext(ctx))
	}
	// The garbage: images pushed, then untagged.
	logf("gc bench %s: pushing %d images", label, images)
	if err := parallel(images, conc, func(i int) error { return push("garbage/app", fmt.Sprint("g", i), res.garbageLayerKiB) }); err != nil {
		return res, err
	}
	for i := range images {
		if err := db.Manifests().DeleteTag(ctx, "garbage/app", fmt.Sprint("g", i), "bench"); err != nil {
			return res, err
		}
	}
	time.Sleep(gcDelay + 500*time.Millisecond)
	collector := gc.New(wire.GCStores(db, 0), driver, gc.Options{Delay: gcDelay, UploadExpiry: 24 * time.Hour, Logger: log})
	// The push load: small images until stopped, counted.
	load := func(stop <-chan struct{}, done, failed *atomic.Int64) *sync.WaitGroup {
		var wg sync.WaitGroup
		for w := range conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					if err := push("load/app", fmt.Sprintf("w%d-%d", w, i), 4); err != nil {
						failed.Add(1)
						continue
					}
					done.Add(1)
				}
			}()
		}
		return &wg
	}
	// The push rate alone, over a fixed time.
	var done, failed atomic.Int64
	stop := make(chan struct{})
	wg := load(stop, &done, &failed)
	start := time.Now()
	time.Sleep(5 * time.Second)
	close(stop)
	wg.Wait()
	res.pushAlone = float64(done.Load()) / time.Since(start).Seconds()
	// The pass, with the same load running.
	done.Store(0)
	stop = make(chan struct{})
	wg = load(stop, &done, &failed)
	start = time.Now()
	rep, err := collector.Pass(ctx, false)
	res.passTook = time.Since(start)
	pushed := done.Load()
	close(stop)
	wg.Wait()
	if err != nil {
		return res, err
	}
	res.collected = rep.Collected
	res.pushesDuringPass = pushed
	res.pushDuringGC = float64(pushed) / res.passTook.Seconds()
	res.pushFailures = failed.Load()
	secs := res.passTook.Seconds()
	res.manifestsPerSec = float64(rep.Collected.Manifests) / secs
	res.blobsPerSec = float64(rep.Collected.Blobs) / secs
	res.megabytesPerSec = float64(rep.Collected.Bytes) / 1e6 / secs
	logf("gc bench %s: %+v in %s", label, rep.Collected, res.passTook)
	// Every load image still pulls (nothing of theirs was collected).
	return res, verifyLoadImages(ctx, host)
}

// parallel runs f(0..n-1) on conc workers and returns the first error.
func parallel(n, conc int, f func(int) error) error {
	var next atomic.Int64
	var first error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// verifyLoadImages pulls every tag of the load repository whole.
func verifyLoadImages(ctx context.Context, host string) error {
	repo, err := name.NewRepository(host+"/load/app", name.Insecure)
	if err != nil {
		return err
	}
	tags, err := remote.List(repo, remote.WithContext(ctx))
	if err != nil {
		return err
	}
	for _, tag := range tags {
		img, err := remote.Image(repo.Tag(tag), remote.WithContext(ctx))
		if err != nil {
			return fmt.Errorf("load image %s after the pass: %w", tag, err)
		}
		layers, err := img.Layers()
		if err != nil {
			return err
		}
		for _, l := range layers {
			if err := readLayer(l); err != nil {
				return fmt.Errorf("load image %s after the pass: %w", tag, err)
			}
		}
	}
	return nil
}

func readLayer(l v1.Layer) error {
	rc, err := l.Compressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.Copy(io.Discard, rc)
	return err
}
