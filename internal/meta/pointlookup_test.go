package meta_test

import (
	"context"
	"errors"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestPullLookupsAndCancel: the two reads of a pull's hot path (a
// manifest by tag or digest, a repository's blob) answer on SQLite even
// under a context that has ended, since they run without it (their work
// is bounded by the key, and a cancellable context costs two goroutines
// per query there); on PostgreSQL they end with their context.
func TestPullLookupsAndCancel(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			cfg := blobOf("pull lookup config")
			if _, err := db.Blobs().StoreBlob(ctx, "app", cfg, meta.UploadClaim{}, meta.Writer{}, metatest.NoBytes); err != nil {
				t.Fatal(err)
			}
			m := manifestOf("pull lookup")
			if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "app", Manifest: m, Tag: "v1",
				Refs: []meta.Ref{{Digest: cfg.Digest}}}); err != nil {
				t.Fatal(err)
			}
			ended, cancel := context.WithCancel(ctx)
			cancel()
			byTag, errTag := db.Manifests().GetManifest(ended, "app", "v1", "", true)
			byDigest, errDigest := db.Manifests().GetManifest(ended, "app", "", m.Digest, false)
			blob, errBlob := db.Blobs().RepositoryBlob(ended, "app", cfg.Digest)
			if dialect == "postgres" {
				for _, err := range []error{errTag, errDigest, errBlob} {
					if !errors.Is(err, context.Canceled) {
						t.Errorf("lookup under an ended context: %v, want context.Canceled", err)
					}
				}
				return
			}
			if errTag != nil || byTag.Digest != m.Digest || string(byTag.Content) != string(m.Content) {
				t.Errorf("manifest by tag under an ended context: %+v %v", byTag, errTag)
			}
			if errDigest != nil || byDigest.Digest != m.Digest {
				t.Errorf("manifest by digest under an ended context: %+v %v", byDigest, errDigest)
			}
			if errBlob != nil || blob.Digest != cfg.Digest || blob.Size != cfg.Size {
				t.Errorf("blob under an ended context: %+v %v", blob, errBlob)
			}
			// What is missing is still missing.
			if _, err := db.Manifests().GetManifest(ended, "app", "v2", "", false); !errors.Is(err, meta.ErrManifestNotFound) {
				t.Errorf("missing tag under an ended context: %v", err)
			}
		})
	}
}
