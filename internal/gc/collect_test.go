package gc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/storage"
)

// world is a registry and a collector on one store.
type world struct {
	*env
	t   *testing.T
	url string
}

func newWorld(t *testing.T, dialect string, delay time.Duration) *world {
	t.Helper()
	return newWorldWith(t, dialect, Options{Delay: delay, UploadExpiry: 24 * time.Hour})
}

// newWorldWith is newWorld with the collector's options.
func newWorldWith(t *testing.T, dialect string, opts Options) *world {
	t.Helper()
	e := newEnv(t, dialect, opts)
	reg := registry.New(registry.Stores{Blobs: e.db.Blobs(), Uploads: e.db.Uploads(), Manifests: e.db.Manifests(), Referrers: e.db.Manifests(),
		Catalog: e.db.Repositories()}, e.store, registry.Options{GCDelay: opts.Delay, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Policy: oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}})
	srv := httptest.NewServer(reg)
	t.Cleanup(srv.Close)
	return &world{env: e, t: t, url: srv.URL}
}

func (w *world) do(method, path string, body []byte, headers ...string) (int, []byte) {
	w.t.Helper()
	req, _ := http.NewRequest(method, w.url+path, bytes.NewReader(body))
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (w *world) blob(repo string, content []byte) digest.Digest {
	w.t.Helper()
	d := digest.FromBytes(content)
	if st, b := w.do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+d.String(), content); st != 201 {
		w.t.Fatalf("push blob: %d %s", st, b)
	}
	return d
}

// image pushes a config and layers and the manifest (tag may be a digest
// reference: then it is pushed untagged).
func (w *world) image(repo, tag string, layers ...[]byte) (digest.Digest, []byte) {
	w.t.Helper()
	cfg := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","n":%q}`, repo+tag))
	m := map[string]any{"schemaVersion": 2, "mediaType": oci.MediaTypeImageManifest,
		"config": map[string]any{"mediaType": oci.MediaTypeImageConfig, "digest": w.blob(repo, cfg), "size": len(cfg)}}
	ls := []map[string]any{}
	for _, l := range layers {
		ls = append(ls, map[string]any{"mediaType": oci.MediaTypeLayerGzip, "digest": w.blob(repo, l), "size": len(l)})
	}
	m["layers"] = ls
	raw, _ := json.Marshal(m)
	d := digest.FromBytes(raw)
	if tag == "" {
		tag = d.String()
	}
	if st, b := w.do("PUT", "/v2/"+repo+"/manifests/"+tag, raw, "Content-Type", oci.MediaTypeImageManifest); st != 201 {
		w.t.Fatalf("push manifest: %d %s", st, b)
	}
	return d, raw
}

// pullable checks a manifest and every blob it names pull whole.
func (w *world) pullable(repo, ref string) error {
	st, body := w.do("GET", "/v2/"+repo+"/manifests/"+ref, nil)
	if st != 200 {
		return fmt.Errorf("manifest %s:%s: %d", repo, ref, st)
	}
	var m oci.Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		return err
	}
	for _, b := range m.Blobs() {
		st, content := w.do("GET", "/v2/"+repo+"/blobs/"+b.Digest.String(), nil)
		if st != 200 || digest.FromBytes(content) != b.Digest {
			return fmt.Errorf("blob %s of %s:%s: %d", b.Digest, repo, ref, st)
		}
	}
	for _, c := range m.Manifests {
		if err := w.pullable(repo, c.Digest.String()); err != nil {
			return err
		}
	}
	return nil
}

func (w *world) stored(d digest.Digest) bool { return w.exists(storage.BlobPath(d)) }

// TestCollect: what no tag, index or subject keeps goes after the delay,
// with its blobs' bytes; what is kept pulls whole; what is younger than
// the delay stays.
func TestCollect(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			const delay = 300 * time.Millisecond
			w := newWorld(t, dialect, delay)
			shared, onlyC, onlyM := []byte("shared base layer"), []byte("layer of C only"), []byte("layer of M only")
			w.image("app", "v1", shared)
			w.image("other", "v1", shared)
			w.image("app", "v2", onlyC)
			m, mraw := w.image("app", "", onlyM) // pushed by digest, then listed by an index
			index, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": oci.MediaTypeImageIndex,
				"manifests": []map[string]any{{"mediaType": oci.MediaTypeImageManifest, "digest": m, "size": len(mraw)}}})
			if st, b := w.do("PUT", "/v2/app/manifests/multi", index, "Content-Type", oci.MediaTypeImageIndex); st != 201 {
				t.Fatalf("index: %d %s", st, b)
			}
			stray := w.blob("app", []byte("uploaded, never referenced"))
			// Untag C and the index: both dangle.
			for _, tag := range []string{"v2", "multi"} {
				if st, _ := w.do("DELETE", "/v2/app/manifests/"+tag, nil); st != 202 {
					t.Fatalf("untag %s: %d", tag, st)
				}
			}
			time.Sleep(delay + 50*time.Millisecond)
			young := w.blob("app", []byte("uploaded just now"))
			// The passes below run "now", however long they take on a
			// loaded machine: the young blob stays younger than the delay.
			frozen := time.Now()
			w.c.now = func() time.Time { return frozen }

			dry, err := w.c.Pass(ctx, true)
			if err != nil {
				t.Fatal(err)
			}
			if dry.Collected.Manifests != 2 || !w.stored(digest.FromBytes(onlyC)) {
				t.Fatalf("dry run: %+v", dry.Collected)
			}
			rep, err := w.c.Pass(ctx, false)
			if err != nil {
				t.Fatal(err)
			}
			// C, the index, then M (freed by the index); their unique layers,
			// configs and the stray blob.
			if rep.Collected.Manifests != 3 || rep.Collected.Blobs != 5 {
				t.Fatalf("collected %+v", rep.Collected)
			}
			for _, gone := range []digest.Digest{digest.FromBytes(onlyC), digest.FromBytes(onlyM), stray} {
				if w.stored(gone) {
					t.Fatalf("blob %s still in storage", gone)
				}
				if st, _ := w.do("HEAD", "/v2/app/blobs/"+gone.String(), nil); st != 404 {
					t.Fatalf("collected blob %s answers %d", gone, st)
				}
			}
			if st, _ := w.do("HEAD", "/v2/app/manifests/"+m.String(), nil); st != 404 {
				t.Fatal("the index's child survived the index")
			}
			for _, ref := range [][2]string{{"app", "v1"}, {"other", "v1"}} {
				if err := w.pullable(ref[0], ref[1]); err != nil {
					t.Fatalf("kept image broken: %v", err)
				}
			}
			if !w.stored(young) {
				t.Fatal("a blob younger than the delay was collected")
			}
			if pending, _ := w.db.Collector().PendingBlobDeletes(ctx, 10); len(pending) != 0 {
				t.Fatalf("deletions left pending: %v", pending)
			}
			// A second pass finds nothing more.
			if rep, err = w.c.Pass(ctx, false); err != nil || rep.Collected != (Collected{}) {
				t.Fatalf("second pass: %+v %v", rep.Collected, err)
			}
		})
	}
}

// TestReuploadWhileDeleting: a blob condemned by the collector and
// uploaded again before its bytes are deleted keeps the new bytes: the
// upload settles the pending deletion itself, under the digest's lock.
func TestReuploadWhileDeleting(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			w := newWorld(t, dialect, time.Millisecond)
			content := []byte("condemned, then uploaded again")
			d := w.blob("app", content)
			time.Sleep(5 * time.Millisecond)
			cutoff := time.Now()
			if ok, err := one(w.db.Collector().CollectLinks(ctx, []meta.GCCandidate{{RepositoryID: linkRepoID(t, w, "app"), Digest: d}}, cutoff, cutoff)); !ok || err != nil {
				t.Fatalf("collect link: %v %v", ok, err)
			}
			if ok, err := one(w.db.Collector().CondemnBlobs(ctx, []digest.Digest{d}, cutoff)); !ok || err != nil {
				t.Fatalf("condemn: %v %v", ok, err)
			}
			// The collector is between its two steps: the row is gone, the
			// bytes are not. A client uploads the same blob.
			w.blob("app", content)
			if ok, err := one(w.db.Collector().FinishBlobDeletes(ctx, []digest.Digest{d}, func(ctx context.Context, d digest.Digest) error { return storage.DeleteBlob(ctx, w.store, d) })); ok || err != nil {
				t.Fatalf("the collector deleted after the re-upload: %v %v", ok, err)
			}
			if st, got := w.do("GET", "/v2/app/blobs/"+d.String(), nil); st != 200 || !bytes.Equal(got, content) {
				t.Fatalf("re-uploaded blob: %d", st)
			}
		})
	}
}

func linkRepoID(t *testing.T, w *world, repo string) int64 {
	t.Helper()
	ri, err := w.db.Repositories().Repository(context.Background(), repo)
	if err != nil {
		t.Fatal(err)
	}
	return ri.ID
}

// TestPushRacesCollection races manifest pushes that name stale blobs
// against the collector removing those blobs' links: every push either
// succeeds and stays pullable, or is refused with MANIFEST_BLOB_UNKNOWN
// before it is acknowledged.
func TestPushRacesCollection(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			w := newWorld(t, dialect, time.Millisecond)
			var acked []string
			for i := range 20 {
				layer := []byte(fmt.Sprintf("stale layer %d", i))
				cfg := []byte(fmt.Sprintf(`{"n":%d}`, i))
				ld, cd := w.blob("race", layer), w.blob("race", cfg)
				raw, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": oci.MediaTypeImageManifest,
					"config": map[string]any{"mediaType": oci.MediaTypeImageConfig, "digest": cd, "size": len(cfg)},
					"layers": []map[string]any{{"mediaType": oci.MediaTypeLayerGzip, "digest": ld, "size": len(layer)}}})
				time.Sleep(5 * time.Millisecond) // the blobs are stale now
				var wg sync.WaitGroup
				var st int
				var body []byte
				wg.Add(2)
				go func() {
					defer wg.Done()
					st, body = w.do("PUT", fmt.Sprintf("/v2/race/manifests/t%d", i), raw, "Content-Type", oci.MediaTypeImageManifest)
				}()
				go func() {
					defer wg.Done()
					if _, err := w.c.Pass(ctx, false); err != nil {
						t.Error(err)
					}
				}()
				wg.Wait()
				switch {
				case st == 201:
					acked = append(acked, fmt.Sprintf("t%d", i))
				case st == 400 && bytes.Contains(body, []byte(registry.CodeManifestBlobUnknown)):
				default:
					t.Fatalf("push %d: %d %s", i, st, body)
				}
			}
			// Once more, with nothing racing: the acknowledged stay whole.
			if _, err := w.c.Pass(ctx, false); err != nil {
				t.Fatal(err)
			}
			for _, tag := range acked {
				if err := w.pullable("race", tag); err != nil {
					t.Fatalf("acknowledged push %s broken: %v", tag, err)
				}
			}
			t.Logf("%d of 20 pushes won the race", len(acked))
		})
	}
}

// TestConfirmedBlobSurvives: a blob a client asked for (HEAD) is confirmed
// in its repository, so a manifest naming it, pushed after the delay would
// have run out, still finds it (the window GitLab's collector leaves).
func TestConfirmedBlobSurvives(t *testing.T) {
	ctx := context.Background()
	const delay = 400 * time.Millisecond
	w := newWorld(t, "sqlite", delay)
	layer := []byte("checked, not uploaded again")
	d := w.blob("app", layer)
	time.Sleep(delay/2 + 50*time.Millisecond)
	head := time.Now()
	if st, _ := w.do("HEAD", "/v2/app/blobs/"+d.String(), nil); st != 200 {
		t.Fatalf("HEAD: %d", st)
	}
	// The pass runs just before the delay after the HEAD: the upload itself
	// is older than the delay then, the confirmation is not.
	w.c.now = func() time.Time { return head.Add(delay - 50*time.Millisecond) }
	if _, err := w.c.Pass(ctx, false); err != nil {
		t.Fatal(err)
	}
	if !w.stored(d) {
		t.Fatal("a blob confirmed by a HEAD within the delay was collected")
	}
	if _, err := w.db.Blobs().RepositoryBlob(ctx, "app", d); errors.Is(err, meta.ErrBlobNotFound) {
		t.Fatal("the confirmed link was collected")
	}
}

// TestConfirmedManifestSurvives: an untagged manifest (an index's child,
// left when the index was deleted or its push died) that a client HEADs
// or pushes again is spared for another delay, as a confirmed blob is:
// go-containerregistry and buildx HEAD each child and skip it if it
// exists, then push the index, whose push would fail with
// MANIFEST_BLOB_UNKNOWN had a pass collected the child meanwhile.
func TestConfirmedManifestSurvives(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		for _, how := range []string{"HEAD", "PUT"} {
			t.Run(dialect+"/"+how, func(t *testing.T) {
				ctx := context.Background()
				const delay = 400 * time.Millisecond
				w := newWorld(t, dialect, delay)
				child, raw := w.image("app", "", []byte("a child's layer"))
				time.Sleep(delay/2 + 50*time.Millisecond)
				confirmed := time.Now()
				var st int
				if how == "HEAD" {
					st, _ = w.do("HEAD", "/v2/app/manifests/"+child.String(), nil)
				} else {
					st, _ = w.do("PUT", "/v2/app/manifests/"+child.String(), raw, "Content-Type", oci.MediaTypeImageManifest)
				}
				if st != 200 && st != 201 {
					t.Fatalf("%s: %d", how, st)
				}
				// The pass runs just before the delay after the confirmation:
				// the push itself is older than the delay then.
				w.c.now = func() time.Time { return confirmed.Add(delay - 50*time.Millisecond) }
				if _, err := w.c.Pass(ctx, false); err != nil {
					t.Fatal(err)
				}
				idx, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": oci.MediaTypeImageIndex,
					"manifests": []map[string]any{{"mediaType": oci.MediaTypeImageManifest, "digest": child, "size": len(raw),
						"platform": map[string]string{"architecture": "amd64", "os": "linux"}}}})
				if st, b := w.do("PUT", "/v2/app/manifests/v1", idx, "Content-Type", oci.MediaTypeImageIndex); st != 201 {
					t.Fatalf("the index naming the confirmed child: %d %s", st, b)
				}
				if err := w.pullable("app", "v1"); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

// TestGCStress: clients push images that share base layers, move tags and
// delete tags in a loop while passes run with a 1 s delay; afterwards
// every tag pulls whole, and once the delay has passed a final pass leaves
// no unreferenced blob in storage.
func TestGCStress(t *testing.T) {
	if testing.Short() {
		t.Skip("stress test")
	}
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			const delay = time.Second
			w := newWorld(t, dialect, delay)
			bases := [][]byte{[]byte("base layer one"), []byte("base layer two")}
			stop := make(chan struct{})
			var passes sync.WaitGroup
			passes.Add(1)
			go func() {
				defer passes.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := w.c.Pass(ctx, false); err != nil {
						t.Error(err)
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
			}()
			var clients sync.WaitGroup
			for c := range 4 {
				clients.Add(1)
				go func() {
					defer clients.Done()
					repo := fmt.Sprintf("stress/app%d", c%2)
					for i := range 15 {
						own := []byte(fmt.Sprintf("client %d round %d", c, i))
						d, _ := w.image(repo, fmt.Sprintf("c%d-%d", c, i), bases[i%2], own)
						// Move a floating tag to it, and drop an older tag.
						raw := w.manifestBytes(repo, d)
						if st, b := w.do("PUT", "/v2/"+repo+"/manifests/latest-"+fmt.Sprint(c), raw, "Content-Type", oci.MediaTypeImageManifest); st != 201 {
							t.Errorf("retag: %d %s", st, b)
							return
						}
						if i >= 2 {
							w.do("DELETE", fmt.Sprintf("/v2/%s/manifests/c%d-%d", repo, c, i-2), nil)
						}
					}
				}()
			}
			clients.Wait()
			close(stop)
			passes.Wait()
			// Every tag left pulls whole.
			for _, repo := range []string{"stress/app0", "stress/app1"} {
				st, body := w.do("GET", "/v2/"+repo+"/tags/list", nil)
				if st != 200 {
					t.Fatalf("tags of %s: %d", repo, st)
				}
				var tl struct{ Tags []string }
				json.Unmarshal(body, &tl)
				if len(tl.Tags) == 0 {
					t.Fatalf("%s has no tags", repo)
				}
				for _, tag := range tl.Tags {
					if err := w.pullable(repo, tag); err != nil {
						t.Fatalf("after the stress: %v", err)
					}
				}
			}
			// After the delay, one pass leaves storage holding exactly the
			// blobs that some repository still links.
			time.Sleep(delay + 50*time.Millisecond)
			if _, err := w.c.Pass(ctx, false); err != nil {
				t.Fatal(err)
			}
			linked := map[string]bool{}
			rows, err := w.db.Collector().OrphanBlobs(ctx, time.Now(), 1000)
			if err != nil || len(rows) != 0 {
				t.Fatalf("orphan blob rows left: %v %v", rows, err)
			}
			prefixes, _ := w.store.List(ctx, "/blobs/sha256")
			for _, p := range prefixes {
				files, _ := w.store.List(ctx, p)
				for _, f := range files {
					d := digest.NewDigestFromEncoded(digest.SHA256, f[len(p)+1:])
					if _, err := w.db.Blobs().StoredBlob(ctx, d); err != nil {
						t.Fatalf("blob %s in storage but not recorded: %v", d, err)
					}
					linked[d.String()] = true
				}
			}
			t.Logf("%d blobs left in storage, all recorded and linked", len(linked))
		})
	}
}

// manifestBytes reads a stored manifest.
func (w *world) manifestBytes(repo string, d digest.Digest) []byte {
	w.t.Helper()
	st, body := w.do("GET", "/v2/"+repo+"/manifests/"+d.String(), nil)
	if st != 200 {
		w.t.Fatalf("manifest %s: %d", d, st)
	}
	return body
}

// TestPutAgainstLinkCollection: the two orders of a manifest PUT and the
// collection of a link it names. Collection first: the PUT is refused
// (MANIFEST_BLOB_UNKNOWN), nothing acknowledged is broken. PUT first: the
// collection finds the link referenced and keeps it.
func TestPutAgainstLinkCollection(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			w := newWorld(t, dialect, time.Millisecond)
			manifest := func(layer []byte) []byte {
				cfg := []byte(`{"layer":"` + string(layer) + `"}`)
				raw, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": oci.MediaTypeImageManifest,
					"config": map[string]any{"mediaType": oci.MediaTypeImageConfig, "digest": w.blob("order", cfg), "size": len(cfg)},
					"layers": []map[string]any{{"mediaType": oci.MediaTypeLayerGzip, "digest": w.blob("order", layer), "size": len(layer)}}})
				return raw
			}
			repoID := func() int64 { return linkRepoID(t, w, "order") }
			// Collection first.
			layer := []byte("collected before the push")
			raw := manifest(layer)
			time.Sleep(5 * time.Millisecond)
			if ok, err := one(w.db.Collector().CollectLinks(ctx, []meta.GCCandidate{{RepositoryID: repoID(), Digest: digest.FromBytes(layer)}}, time.Now(), time.Now())); !ok || err != nil {
				t.Fatalf("collect: %v %v", ok, err)
			}
			if st, b := w.do("PUT", "/v2/order/manifests/late", raw, "Content-Type", oci.MediaTypeImageManifest); st != 400 ||
				!bytes.Contains(b, []byte(registry.CodeManifestBlobUnknown)) {
				t.Fatalf("PUT after the collection: %d %s", st, b)
			}
			// PUT first.
			layer = []byte("pushed before the collection")
			raw = manifest(layer)
			time.Sleep(5 * time.Millisecond)
			if st, b := w.do("PUT", "/v2/order/manifests/early", raw, "Content-Type", oci.MediaTypeImageManifest); st != 201 {
				t.Fatalf("PUT: %d %s", st, b)
			}
			if ok, err := one(w.db.Collector().CollectLinks(ctx, []meta.GCCandidate{{RepositoryID: repoID(), Digest: digest.FromBytes(layer)}}, time.Now(), time.Now())); ok || err != nil {
				t.Fatalf("the collection removed a referenced link: %v %v", ok, err)
			}
			if err := w.pullable("order", "early"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// one reports whether a collection step on one candidate acted on it.
func one(n int, err error) (bool, error) { return n == 1, err }
