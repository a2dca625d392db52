package meta_test

import (
	"context"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestDeleteEmptyRepositoryKeepsLinks: a failed import removes the
// repository it made (DeleteEmptyRepository) only if it holds no blob
// link either: a client pushing into it meanwhile, whose uploads are
// finished (no upload session left) and whose manifest is still to come,
// keeps its links and the repository, and its manifest PUT then finds
// them. Links record nobody's name, so the import's own keep it as well
// (collection removes them, unreferenced, after gc.delay). A repository
// with nothing in it goes. Before, the links went with the repository and
// the client's manifest was refused with MANIFEST_BLOB_UNKNOWN.
func TestDeleteEmptyRepositoryKeepsLinks(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			repos := db.Repositories()
			metatest.Orgs(t, db, "acme")
			for _, r := range []string{"acme/imported", "acme/bare"} {
				if err := repos.CreateRepository(ctx, r, "private", "", "importer", 0); err != nil {
					t.Fatal(err)
				}
			}
			layer := blobOf("a layer a client uploaded into acme/imported")
			if _, err := db.Blobs().StoreBlob(ctx, "acme/imported", layer, meta.UploadClaim{}, meta.Writer{Actor: "ci"}, metatest.NoBytes); err != nil {
				t.Fatal(err)
			}
			deleted, err := repos.DeleteEmptyRepository(ctx, "acme/imported", "importer")
			if err != nil || deleted {
				t.Fatalf("DeleteEmptyRepository of a repository holding a client's blob link: deleted=%v, %v; want it kept", deleted, err)
			}
			if _, err := db.Blobs().RepositoryBlob(ctx, "acme/imported", layer.Digest); err != nil {
				t.Fatalf("the client's link after the failed import's clean-up: %v", err)
			}
			m := manifestOf(`{"a manifest naming the uploaded layer"}`)
			if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/imported", Manifest: m, Tag: "v1",
				Refs: []meta.Ref{{Digest: layer.Digest}}, Actor: "ci"}); err != nil {
				t.Fatalf("the client's manifest after the failed import's clean-up: %v", err)
			}
			if deleted, err := repos.DeleteEmptyRepository(ctx, "acme/bare", "importer"); err != nil || !deleted {
				t.Fatalf("DeleteEmptyRepository of a repository with nothing in it: deleted=%v, %v; want it deleted", deleted, err)
			}
			if ri, err := repos.Repository(ctx, "acme/bare"); err != nil || ri.Exists {
				t.Fatalf("acme/bare after its deletion: exists=%v, %v", ri.Exists, err)
			}
		})
	}
}
