package mirror_test

import (
	"context"
	"io"
	stdlog "log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/gc"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/mirror"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/storage"
	"github.com/berth-dev/berth/internal/storage/fs"
	"github.com/berth-dev/berth/internal/wire"
)

// gcDelay is garbage collection's delay in these tests: a copy blocked
// longer than it outlives it.
const gcDelay = time.Second

// slowUpstream is an upstream registry one of whose GETs (the first to a
// path ending in its target, or the second if failFirst: the first is
// answered 404) blocks until released: a copy that waits on it runs
// longer than garbage collection's delay.
type slowUpstream struct {
	repo      name.Repository
	target    atomic.Value // string
	failFirst atomic.Bool
	blocked   chan struct{}
	release   chan struct{}
	once      sync.Once
	mu        sync.Mutex
	gets      map[string]int // GETs per path
}

func newSlowUpstream(t *testing.T) *slowUpstream {
	t.Helper()
	u := &slowUpstream{blocked: make(chan struct{}), release: make(chan struct{}), gets: map[string]int{}}
	u.target.Store("\x00")
	reg := ggcrregistry.New(ggcrregistry.Logger(stdlog.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			u.mu.Lock()
			u.gets[r.URL.Path]++
			u.mu.Unlock()
			if strings.HasSuffix(r.URL.Path, u.target.Load().(string)) {
				if u.failFirst.CompareAndSwap(true, false) {
					http.Error(w, "not yet", http.StatusNotFound)
					return
				}
				first := false
				u.once.Do(func() { first = true; close(u.blocked) })
				if first {
					<-u.release
				}
			}
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(u.unblock)
	u.repo, _ = name.NewRepository(strings.TrimPrefix(srv.URL, "http://")+"/library/slow", name.Insecure)
	return u
}

func (u *slowUpstream) unblock() {
	select {
	case <-u.release:
	default:
		close(u.release)
	}
}

// blobGets is how many times the upstream served blob d.
func (u *slowUpstream) blobGets(d digest.Digest) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.gets["/v2/library/slow/blobs/"+d.String()]
}

// imageBlobs are an image's config and layers.
func imageBlobs(t *testing.T, img v1.Image) []digest.Digest {
	t.Helper()
	cfg, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	out := []digest.Digest{digest.Digest(cfg.String())}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		d, _ := l.Digest()
		out = append(out, digest.Digest(d.String()))
	}
	return out
}

// TestCopyOutlivesGCDelay: a copy (an import, a mirror sync) that runs
// longer than gc.delay finishes whole, with a collection pass running
// while it waits on the upstream. It blocks on an image's second layer
// (its config and first layer linked before) or an index's second child
// (its first child stored, untagged, before). A copier told the delay
// keeps what it stored fresh, so the pass takes nothing of it, also what
// an earlier failed copy stored and it finds there (skipped); one that
// was not (its confirmations too rare for the delay) fetches what the
// pass took again. Before, the copy failed: "manifest references unknown
// blob" (or manifest), a failed import deleting its repository and the
// next sync failing the same way.
func TestCopyOutlivesGCDelay(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		for _, index := range []bool{false, true} {
			for _, how := range []string{"renewed", "skipped", "fetched-again"} {
				kind := "image"
				if index {
					kind = "index"
				}
				t.Run(dialect+"/"+kind+"/"+how, func(t *testing.T) { testCopyOutlivesGCDelay(t, dialect, index, how) })
			}
		}
	}
}

func testCopyOutlivesGCDelay(t *testing.T, dialect string, index bool, how string) {
	told := how != "fetched-again"
	ctx := context.Background()
	db := metatest.Open(t, dialect)
	driver, err := fs.New(t.TempDir(), fs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	policy := oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	copier := mirror.NewCopier(wire.CopierStores(db), driver, policy, 0, quiet)
	if told {
		copier.WithGCDelay(gcDelay)
	}
	collector := gc.New(wire.GCStores(db, 0), driver, gc.Options{Delay: gcDelay, UploadExpiry: time.Hour, Logger: quiet})

	up := newSlowUpstream(t)
	var images []v1.Image
	var children []digest.Digest
	var top v1.Hash
	if index {
		idx, err := random.Index(512, 2, 2)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.WriteIndex(up.repo.Tag("v1"), idx); err != nil {
			t.Fatal(err)
		}
		top, _ = idx.Digest()
		im, _ := idx.IndexManifest()
		for _, desc := range im.Manifests {
			img, err := idx.Image(desc.Digest)
			if err != nil {
				t.Fatal(err)
			}
			images = append(images, img)
			children = append(children, digest.Digest(desc.Digest.String()))
		}
		up.target.Store("/manifests/" + children[1].String()) // the second child
	} else {
		img, err := random.Image(512, 2)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(up.repo.Tag("v1"), img); err != nil {
			t.Fatal(err)
		}
		top, _ = img.Digest()
		images = []v1.Image{img}
		up.target.Store("/blobs/" + imageBlobs(t, img)[2].String()) // the second layer
	}

	req := mirror.Request{Source: up.repo.Tag("v1"), Repo: "acme/slow", Tags: []string{"v1"}, Actor: "importer"}
	if how == "skipped" {
		// A copy that failed midway left what it stored before.
		up.failFirst.Store(true)
		if _, _, err := copier.Copy(ctx, req); err == nil {
			t.Fatal("the copy did not fail on the upstream's 404")
		}
	}
	type result struct {
		d   digest.Digest
		err error
	}
	done := make(chan result, 1)
	go func() {
		d, _, err := copier.Copy(ctx, req)
		done <- result{d, err}
	}()
	select {
	case <-up.blocked:
	case r := <-done:
		t.Fatalf("the copy ended before the upstream blocked: %v", r.err)
	}
	time.Sleep(gcDelay + 300*time.Millisecond)
	rep, err := collector.Pass(ctx, false)
	if err != nil {
		t.Fatalf("collection pass: %v", err)
	}
	up.unblock()
	r := <-done
	if r.err != nil {
		t.Fatalf("copy that outlived gc.delay, a collection pass (%+v) run meanwhile: %v", rep.Collected, r.err)
	}
	if r.d != digest.Digest(top.String()) {
		t.Fatalf("copied %s, want %s", r.d, top)
	}
	if told && rep.Collected != (gc.Collected{}) {
		t.Errorf("the pass collected %+v of a copy in progress that keeps it fresh, want nothing", rep.Collected)
	}
	if !told && rep.Collected.Links == 0 {
		t.Errorf("the pass collected %+v, want what the copy stored before it blocked (else this test tests nothing)", rep.Collected)
	}
	tagged, err := db.Manifests().GetManifest(ctx, "acme/slow", "v1", "", false)
	if err != nil || tagged.Digest != r.d {
		t.Fatalf("tag v1: %v %v, want %s", tagged.Digest, err, r.d)
	}
	for _, c := range children {
		if _, err := db.Manifests().GetManifest(ctx, "acme/slow", "", c, false); err != nil {
			t.Errorf("child %s: %v", c, err)
		}
	}
	for _, img := range images {
		for _, d := range imageBlobs(t, img) {
			if _, err := db.Blobs().RepositoryBlob(ctx, "acme/slow", d); err != nil {
				t.Errorf("blob %s not linked: %v", d, err)
			}
			rc, err := driver.Reader(ctx, storage.BlobPath(d), 0)
			if err != nil {
				t.Errorf("bytes of blob %s: %v", d, err)
				continue
			}
			rc.Close()
			if n := up.blobGets(d); how == "renewed" && n != 1 {
				t.Errorf("blob %s fetched %d times, want once", d, n)
			}
		}
	}
}
