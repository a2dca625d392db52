package registry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/wire"
)

// allocated is how many bytes f allocates (TotalAlloc).
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// discardResponse is a ResponseWriter that keeps the status and the
// body's length, not the body: what a handler allocates to answer is
// measured without a recorder's buffer.
type discardResponse struct {
	header http.Header
	code   int
	n      int
}

func (d *discardResponse) Header() http.Header         { return d.header }
func (d *discardResponse) WriteHeader(code int)        { d.code = code }
func (d *discardResponse) Write(p []byte) (int, error) { d.n += len(p); return len(p), nil }

// annotatedReferrer is an image manifest whose subject is subject and
// whose annotations are ann; with an artifact type, an artifact (as a
// signature is) instead.
func annotatedReferrer(t *testing.T, subject digest.Digest, artifactType string, ann map[string]string) meta.Manifest {
	t.Helper()
	cfg := oci.Descriptor{MediaType: oci.MediaTypeImageConfig, Digest: digest.FromString("config"), Size: 6}
	layer := oci.Descriptor{MediaType: oci.MediaTypeLayerGzip, Digest: digest.FromString("a layer"), Size: 7}
	if artifactType != "" {
		cfg = oci.Descriptor{MediaType: oci.MediaTypeEmptyJSON, Digest: oci.EmptyJSONDigest, Size: 2}
		layer.MediaType = "application/vnd.dev.cosign.simplesigning.v1+json"
	}
	m := oci.Manifest{SchemaVersion: 2, MediaType: oci.MediaTypeImageManifest, ArtifactType: artifactType, Config: &cfg, Layers: []oci.Descriptor{layer},
		Subject: &oci.Descriptor{MediaType: oci.MediaTypeImageManifest, Digest: subject, Size: 100}, Annotations: ann}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return meta.Manifest{Digest: digest.FromBytes(b), MediaType: oci.MediaTypeImageManifest, ArtifactType: artifactType, Size: int64(len(b)), Content: b,
		Subject: subject, Annotations: ann}
}

// TestReferrersMemoryIsTheAnswers: a listing of referrers whose
// annotations are large reads no more of them than its page answers.
// Twenty referrers carry 1 MiB of annotations each: a GET of the
// referrers API allocates well under what the twenty hold (it reads the
// stored annotations' lengths first and only the annotations of the
// referrers its 4 MiB page holds), and the pages, followed by their
// Link headers, still list every referrer once, oldest first, with its
// annotations intact. Before, the listing read 16 referrers at a time,
// annotations decoded, to answer three: about 64 MB per request.
func TestReferrersMemoryIsTheAnswers(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			db := metatest.Open(t, dialect)
			put := putIn(t, db, "bob/big")
			subject := ociManifest(t, "the image", "", oci.MediaTypeLayerGzip, "")
			put(subject, "v1")
			const n = 20
			var want []oci.Descriptor
			for i := range n {
				ann := map[string]string{"x": strings.Repeat(string(rune('a'+i)), 1<<20), "i": fmt.Sprint(i), "html": "<&>"}
				m := annotatedReferrer(t, subject.Digest, "", ann)
				put(m, "")
				want = append(want, oci.Descriptor{MediaType: m.MediaType, Digest: m.Digest, Size: m.Size, Annotations: ann})
			}
			// A small one, with an artifact type, last.
			small := ociManifest(t, "a signature", "application/vnd.dev.cosign.artifact.sig.v1+json", "application/vnd.dev.cosign.simplesigning.v1+json", subject.Digest)
			put(small, "")
			want = append(want, oci.Descriptor{MediaType: small.MediaType, Digest: small.Digest, Size: small.Size, ArtifactType: small.ArtifactType})

			reg := registry.New(wire.RegistryStores(db), nil, registry.Options{})
			path := "/v2/bob/big/referrers/" + subject.Digest.String()
			// The least of three GETs: the count is the process's, and what
			// a goroutine an earlier test left running allocates meanwhile
			// (and the driver's first growth of its read buffer) is not the
			// request's. Reading the twenty referrers' annotations would
			// allocate at least the 20 MiB they hold; the page's three, about
			// three times their 3 MiB (the driver's buffer, the string, the
			// answer), which on PostgreSQL has been seen at 10 MiB.
			var alloc uint64
			var w *discardResponse
			for i := range 3 {
				w = &discardResponse{header: http.Header{}}
				a := allocated(func() { reg.ServeHTTP(w, httptest.NewRequest("GET", path, nil)) })
				if w.code != http.StatusOK || w.header.Get("Link") == "" {
					t.Fatalf("referrers: %d, Link %q", w.code, w.header.Get("Link"))
				}
				if i == 0 || a < alloc {
					alloc = a
				}
			}
			t.Logf("a GET of the referrers API allocated %.1f MiB to answer %.1f MiB", float64(alloc)/(1<<20), float64(w.n)/(1<<20))
			if alloc > 14<<20 {
				t.Errorf("a GET of the referrers API allocated %.1f MiB to answer %.1f MiB", float64(alloc)/(1<<20), float64(w.n)/(1<<20))
			}

			var got []oci.Descriptor
			pages := 0
			for next := path; next != ""; pages++ {
				rec := httptest.NewRecorder()
				reg.ServeHTTP(rec, httptest.NewRequest("GET", next, nil))
				if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != oci.MediaTypeImageIndex {
					t.Fatalf("GET %s: %d %s", next, rec.Code, rec.Header().Get("Content-Type"))
				}
				if rec.Body.Len() > 4<<20 {
					t.Errorf("a page of %d bytes, over 4 MiB", rec.Body.Len())
				}
				var idx oci.Manifest
				if err := json.Unmarshal(rec.Body.Bytes(), &idx); err != nil {
					t.Fatal(err)
				}
				if idx.SchemaVersion != 2 || idx.MediaType != oci.MediaTypeImageIndex {
					t.Fatalf("page: schemaVersion %d, mediaType %q", idx.SchemaVersion, idx.MediaType)
				}
				// Byte for byte what encoding/json makes of the index.
				if b, _ := json.Marshal(struct {
					SchemaVersion int              `json:"schemaVersion"`
					MediaType     string           `json:"mediaType"`
					Manifests     []oci.Descriptor `json:"manifests"`
				}{2, oci.MediaTypeImageIndex, idx.Manifests}); !bytes.Equal(b, rec.Body.Bytes()) {
					t.Errorf("page %d is not encoded as an index of its descriptors", pages)
				}
				got = append(got, idx.Manifests...)
				next = ""
				if l := rec.Header().Get("Link"); l != "" {
					next = strings.TrimPrefix(strings.TrimSuffix(l, `>; rel="next"`), "<")
				}
				if pages > n {
					t.Fatal("the pages do not end")
				}
			}
			if len(got) != len(want) {
				t.Fatalf("listed %d referrers in %d pages, want %d", len(got), pages, len(want))
			}
			for i := range want {
				g, w := got[i], want[i]
				if g.Digest != w.Digest || g.MediaType != w.MediaType || g.Size != w.Size || g.ArtifactType != w.ArtifactType ||
					len(g.Annotations) != len(w.Annotations) || g.Annotations["x"] != w.Annotations["x"] || g.Annotations["i"] != w.Annotations["i"] ||
					g.Annotations["html"] != w.Annotations["html"] {
					t.Errorf("referrer %d: %s %s %d %q (%d annotations), want %s %s %d %q (%d)", i, g.Digest, g.MediaType, g.Size, g.ArtifactType, len(g.Annotations),
						w.Digest, w.MediaType, w.Size, w.ArtifactType, len(w.Annotations))
				}
			}
		})
	}
}

// recordingReferrers is the referrer store, counting the held referrers
// its listings return and recording whose annotations are read.
type recordingReferrers struct {
	registry.ReferrerReader
	held      int
	annotated []digest.Digest
}

func (c *recordingReferrers) ReferrerEntries(ctx context.Context, q meta.ReferrerQuery) ([]meta.ReferrerEntry, error) {
	es, err := c.ReferrerReader.ReferrerEntries(ctx, q)
	for _, e := range es {
		if e.Held {
			c.held++
		}
	}
	return es, err
}

func (c *recordingReferrers) ReferrerAnnotations(ctx context.Context, repo string, ds []digest.Digest) (map[digest.Digest]string, error) {
	c.annotated = append(c.annotated, ds...)
	return c.ReferrerReader.ReferrerAnnotations(ctx, repo, ds)
}

// TestReferrersHeldAnnotationsAreNotRead: of a subject's referrers, a
// caller who may not see what a gate holds has the held ones left out,
// at most one first batch of them listed and none of their annotations
// read; a caller who may see them has them all, annotations included.
func TestReferrersHeldAnnotationsAreNotRead(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			db := metatest.Open(t, dialect)
			put := putIn(t, db, "acme/app")
			subject := gatedSubject(t, db)
			first := annotatedReferrer(t, subject.Digest, "application/vnd.dev.cosign.artifact.sig.v1+json", map[string]string{"n": "first"})
			put(first, "")
			var all []digest.Digest
			all = append(all, first.Digest)
			for i := range 40 {
				// An image pushed by digest naming the subject: held.
				m := annotatedReferrer(t, subject.Digest, "", map[string]string{"n": fmt.Sprint("held ", i)})
				put(m, "")
				all = append(all, m.Digest)
			}
			last := ociManifest(t, "a signature", "application/vnd.dev.cosign.artifact.sig.v1+json", "application/vnd.dev.cosign.simplesigning.v1+json", subject.Digest)
			put(last, "")
			all = append(all, last.Digest)

			list := func(a registry.Authorizer) ([]oci.Descriptor, *recordingReferrers) {
				t.Helper()
				store := &recordingReferrers{ReferrerReader: db.Manifests()}
				stores := wire.RegistryStores(db)
				stores.Referrers = store
				rec := referrersOf(t, stores, a, "acme/app", subject.Digest)
				var idx oci.Manifest
				if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &idx) != nil {
					t.Fatalf("referrers: %d %s", rec.Code, rec.Body)
				}
				return idx.Manifests, store
			}
			got, store := list(pullOnly{})
			if len(got) != 2 || got[0].Digest != first.Digest || got[0].Annotations["n"] != "first" || got[1].Digest != last.Digest {
				t.Errorf("listed for a caller who may not see held content: %+v, want %s (annotated) and %s", got, first.Digest, last.Digest)
			}
			if store.held > 16 {
				t.Errorf("listed %d held referrers for a caller who may not see them, want at most one first batch (16)", store.held)
			}
			if len(store.annotated) != 1 || store.annotated[0] != first.Digest {
				t.Errorf("read the annotations of %v, want only those of %s", store.annotated, first.Digest)
			}
			got, store = list(registry.AllowAll{})
			if len(got) != len(all) || len(store.annotated) != len(all)-1 {
				t.Fatalf("listed %d referrers for a checker, %d with annotations read; want %d and %d", len(got), len(store.annotated), len(all), len(all)-1)
			}
			for i, d := range got {
				if d.Digest != all[i] || (i > 0 && i < len(all)-1 && d.Annotations["n"] != fmt.Sprint("held ", i-1)) {
					t.Errorf("referrer %d: %s %v, want %s", i, d.Digest, d.Annotations, all[i])
				}
			}
		})
	}
}

// TestReferrersWithANulInTheirAnnotations: a referrer whose annotations
// hold a NUL character (stored as "\u0000", which PostgreSQL's json
// operators refuse) is listed with the others, its annotations intact,
// and only the referrer Berth's scanner stored (to go with its subject)
// counts as Berth's SBOM: not one a client pushed with dev.berth.sbom
// set. Before, on PostgreSQL, that one referrer failed its subject's
// whole listing (500), cosign's and oras's lookups included.
func TestReferrersWithANulInTheirAnnotations(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			put := putIn(t, db, "acme/app")
			subject := ociManifest(t, "the release", "", oci.MediaTypeLayerGzip, "")
			put(subject, "1")
			nul := annotatedReferrer(t, subject.Digest, "", map[string]string{"note": "a\x00b", "quoted": `"dev.berth.sbom":"x"`})
			sbom := annotatedReferrer(t, subject.Digest, "", map[string]string{"dev.berth.sbom": "spdx"})
			forged := annotatedReferrer(t, subject.Digest, "", map[string]string{"dev.berth.sbom": "true"})
			for _, m := range []meta.Manifest{nul, forged} {
				put(m, "")
			}
			if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: sbom, Generated: true, DeletedWithSubject: true}); err != nil {
				t.Fatal(err)
			}
			rec := referrersOf(t, wire.RegistryStores(db), nil, "acme/app", subject.Digest)
			if rec.Code != http.StatusOK {
				t.Fatalf("referrers: %d %s", rec.Code, rec.Body)
			}
			var idx oci.Manifest
			if err := json.Unmarshal(rec.Body.Bytes(), &idx); err != nil {
				t.Fatal(err)
			}
			found := false
			for _, d := range idx.Manifests {
				if d.Digest == nul.Digest {
					found = d.Annotations["note"] == "a\x00b"
				}
			}
			if len(idx.Manifests) != 3 || !found {
				t.Fatalf("referrers: %+v, want all three, the NUL annotation intact", idx.Manifests)
			}
			es, err := db.Manifests().ReferrerEntries(ctx, meta.ReferrerQuery{Repository: "acme/app", Subject: subject.Digest})
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range es {
				if want := e.Digest == sbom.Digest; e.BerthSBOM != want {
					t.Errorf("%s: Berth's SBOM %v, want %v", e.Digest, e.BerthSBOM, want)
				}
			}
		})
	}
}
