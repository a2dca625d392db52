package web_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/web"
	"github.com/berth-dev/berth/internal/wire"
)

// BenchmarkTagsPage renders the tags page of a repository with 10,000
// tags (100 images, 100 tags each, a shared base layer and one of their
// own), sorted each way, from a store seeded on SQLite (and PostgreSQL
// when BERTH_TEST_POSTGRES_DSN is set). The page costs the same handful
// of queries whatever the number of tags: Repository (1) and TagRows (12),
// plus the permission decisions (none in auth mode "none").
func BenchmarkTagsPage(b *testing.B) {
	const images, tagsPer = 100, 100
	for _, dialect := range metatest.Dialects() {
		b.Run(dialect, func(b *testing.B) {
			ctx := context.Background()
			db := metatest.Open(b, dialect)
			shared := meta.Blob{Digest: digest.FromString("shared base layer"), Size: 30 << 20}
			if _, err := db.Blobs().StoreBlob(ctx, "bench/app", shared, meta.UploadClaim{}, meta.Writer{}, metatest.NoBytes); err != nil {
				b.Fatal(err)
			}
			for i := range images {
				own := meta.Blob{Digest: digest.FromString(fmt.Sprint("layer ", i)), Size: int64(1+i) << 20}
				if _, err := db.Blobs().StoreBlob(ctx, "bench/app", own, meta.UploadClaim{}, meta.Writer{}, metatest.NoBytes); err != nil {
					b.Fatal(err)
				}
				content := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[],"n":%d}`, i)
				m := meta.Manifest{Digest: digest.FromString(content), MediaType: "application/vnd.oci.image.manifest.v1+json", Content: []byte(content)}
				var more []string
				for j := 1; j < tagsPer; j++ {
					more = append(more, fmt.Sprintf("v%d.%d", i, j))
				}
				if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "bench/app", Manifest: m,
					Refs: []meta.Ref{{Digest: shared.Digest}, {Digest: own.Digest}}, Tag: fmt.Sprintf("v%d.0", i), MoreTags: more}); err != nil {
					b.Fatal(err)
				}
			}
			ui, err := web.New(wire.WebStores(db), web.Options{Registry: "registry.example"})
			if err != nil {
				b.Fatal(err)
			}
			for _, sort := range []string{"pushed", "name", "size", "name&filter=v42."} {
				b.Run("sort="+strings.ReplaceAll(sort, "&", ","), func(b *testing.B) {
					var size int
					for b.Loop() {
						rec := httptest.NewRecorder()
						ui.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/repository/bench/app?sort="+sort, nil))
						if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "tags</span>") {
							b.Fatalf("GET: %d\n%.2000s", rec.Code, rec.Body.String())
						}
						size = rec.Body.Len()
					}
					b.ReportMetric(float64(size), "page-bytes")
				})
			}
		})
	}
}
