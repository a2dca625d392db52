package web_test

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/web"
	"github.com/berth-dev/berth/internal/wire"
)

// TestManifestPageReadsNoReferrerAnnotations: the manifest page lists a
// manifest's referrers without reading their annotations, which it does
// not show (each may be up to a manifest's size). Twenty referrers carry
// 1 MiB of annotations each: the page allocates well under what they
// hold, and still lists each, of the kind its artifact type or Berth's
// scanner stored it to go with its subject (an annotation that only
// mentions that name, or a client's push of dev.berth.sbom, does not
// make one Berth's). Before, the page read and kept every referrer's
// annotations: 100 referrers of 4 MB held 400 MB per request.
func TestManifestPageReadsNoReferrerAnnotations(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			db := metatest.Open(t, dialect)
			d := putManifest(t, db, "bob/big", "v1", meta.Manifest{Content: image("big")})
			referrer := func(artifactType string, ann map[string]string, n int, berths bool) {
				t.Helper()
				content := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[],"subject":{"digest":%q},"n":%d}`, d, n)
				m := meta.Manifest{Content: content, Digest: digest.FromBytes(content), MediaType: "application/vnd.oci.image.manifest.v1+json",
					ArtifactType: artifactType, Subject: d, Annotations: ann}
				// Berth's scanner stores its SBOM to go with its subject.
				if err := db.Manifests().PutManifest(context.Background(), meta.PutManifest{Repository: "bob/big", Manifest: m,
					Generated: berths, DeletedWithSubject: berths}); err != nil {
					t.Fatal(err)
				}
			}
			for i := range 20 {
				referrer("", map[string]string{"x": strings.Repeat("x", 1<<20)}, i, false)
			}
			referrer("application/spdx+json", map[string]string{"dev.berth.sbom": "spdx"}, 20, true)
			referrer("application/spdx+json", map[string]string{"org.example.note": `"dev.berth.sbom":"yes"`}, 21, false)
			// A client's push naming itself Berth's is not.
			referrer("application/spdx+json", map[string]string{"dev.berth.sbom": "spdx"}, 22, false)

			ui := newUI(t, wire.WebStores(db), web.Options{})
			var status int
			var body string
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			status, body = get(t, ui, "/repository/bob/big/manifest/"+d.String(), false)
			runtime.ReadMemStats(&after)
			if status != http.StatusOK {
				t.Fatalf("GET the manifest page: %d", status)
			}
			alloc := after.TotalAlloc - before.TotalAlloc
			t.Logf("the manifest page allocated %.1f MiB", float64(alloc)/(1<<20))
			if alloc > 4<<20 {
				t.Errorf("the manifest page allocated %.1f MiB (20 referrers of 1 MiB of annotations each)", float64(alloc)/(1<<20))
			}
			if n := strings.Count(body, "<td>referrers API</td>"); n != 23 {
				t.Errorf("the page lists %d referrers, want 23", n)
			}
			if n := strings.Count(body, ">artifact</span>"); n != 20 {
				t.Errorf("the page lists %d referrers as artifacts, want 20", n)
			}
			if n := strings.Count(body, ">SBOM (Berth&#39;s)</span>"); n != 1 {
				t.Errorf("the page lists %d of Berth's SBOMs, want 1", n)
			}
			if n := strings.Count(body, ">SBOM</span>"); n != 2 {
				t.Errorf("the page lists %d other SBOMs, want 2", n)
			}
		})
	}
}
