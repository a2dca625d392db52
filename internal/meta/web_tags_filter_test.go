package meta_test

import (
	"context"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestTagRowsFilterByDigest: the tags table's filter (and the manifest
// page, which lists a manifest's tags by it) finds the tags of a sha256
// and of a sha512 manifest by its digest or a prefix of it; a filter
// longer than any tag or digest matches nothing.
func TestTagRowsFilterByDigest(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			m256 := manifestOf("sha256 image")
			m512 := manifestOf("sha512 image")
			m512.Digest = digest.SHA512.FromBytes(m512.Content)
			for tag, m := range map[string]meta.Manifest{"a": m256, "b": m512} {
				if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: m, Tag: tag}); err != nil {
					t.Fatal(err)
				}
			}
			for filter, want := range map[string]string{
				m256.Digest.String():          "a",
				m512.Digest.String():          "b",
				m512.Digest.String()[:20]:     "b",
				m512.Digest.String() + "0":    "",
				"sha512:" + m256.Digest.Hex(): "",
			} {
				rows, total, err := db.Manifests().TagRows(ctx, "acme/app", meta.TagRowQuery{Filter: filter, Limit: 10})
				got := ""
				if len(rows) == 1 {
					got = rows[0].Name
				}
				if err != nil || got != want || total != len(rows) {
					t.Errorf("filter %s: %d rows (%q), total %d, %v; want %q", filter, len(rows), got, total, err, want)
				}
			}
		})
	}
}
