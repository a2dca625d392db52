package meta_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestTagRowsCapPlatforms: each tag of an index of 20 platforms (and an
// attestation entry, which is no platform) lists the first 16, sorted,
// and counts the 4 others.
func TestTagRowsCapPlatforms(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			var entries []string
			for i := range 20 {
				entries = append(entries, fmt.Sprintf(`{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%064d","size":1,"platform":{"os":"linux","architecture":"arch%02d"}}`, i, 19-i))
			}
			entries = append(entries, `{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:`+strings.Repeat("a", 64)+`","size":1,"platform":{"os":"unknown","architecture":"unknown"}}`)
			content := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","annotations":{"a":"{[\"]}"},"manifests":[` + strings.Join(entries, ",") + `]}`)
			idx := meta.Manifest{Digest: digest.FromBytes(content), MediaType: "application/vnd.oci.image.index.v1+json", Content: content}
			if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: idx, Tag: "v1", MoreTags: []string{"latest"}}); err != nil {
				t.Fatal(err)
			}
			rows, total, err := db.Manifests().TagRows(ctx, "acme/app", meta.TagRowQuery{Limit: 10})
			if err != nil || total != 2 || len(rows) != 2 {
				t.Fatalf("tag rows: %d %d %v", len(rows), total, err)
			}
			for _, r := range rows {
				if len(r.Platforms) != 16 || r.Platforms[0] != "linux/arch04" || r.Platforms[15] != "linux/arch19" || r.MorePlatforms != 4 {
					t.Errorf("%s: platforms %v and %d more, want linux/arch04 to linux/arch19 and 4 more", r.Name, r.Platforms, r.MorePlatforms)
				}
			}
		})
	}
}
