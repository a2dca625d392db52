package meta_test

import (
	"context"
	"errors"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestDeleteSubjectKeepsTaggedGeneratedReferrer: Berth's SBOM of an image
// goes with the image, unless a tag points at it or an index lists it:
// then it stays, as any tagged or listed manifest does, and the image's
// delete succeeds (before, the tag's foreign key refused the delete of
// the SBOM, and so the image's delete, for ever).
func TestDeleteSubjectKeepsTaggedGeneratedReferrer(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			put := func(p meta.PutManifest) {
				t.Helper()
				if err := db.Manifests().PutManifest(ctx, p); err != nil {
					t.Fatal(err)
				}
			}
			image := manifestOf("image")
			put(meta.PutManifest{Repository: "acme/app", Manifest: image, Tag: "v1"})
			sbom := func(name string) meta.Manifest {
				m := manifestOf(name)
				m.Subject = image.Digest
				put(meta.PutManifest{Repository: "acme/app", Manifest: m, Generated: true, DeletedWithSubject: true})
				return m
			}
			tagged, listed, plain := sbom("tagged sbom"), sbom("listed sbom"), sbom("plain sbom")
			if err := db.Manifests().MoveTag(ctx, "acme/app", "sbom", tagged.Digest, "alice"); err != nil {
				t.Fatal(err)
			}
			put(meta.PutManifest{Repository: "acme/app", Manifest: manifestOf("index of the sbom"), Tag: "sboms",
				Refs: []meta.Ref{{Digest: listed.Digest, IsManifest: true}}})
			if err := db.Manifests().DeleteTag(ctx, "acme/app", "v1", "alice"); err != nil {
				t.Fatal(err)
			}

			if err := db.Manifests().DeleteManifest(ctx, "acme/app", image.Digest, "alice"); err != nil {
				t.Fatalf("delete of the image whose SBOM is tagged: %v", err)
			}
			if _, err := db.Manifests().GetManifest(ctx, "acme/app", "", image.Digest, false); !errors.Is(err, meta.ErrManifestNotFound) {
				t.Fatalf("the image after its delete: %v", err)
			}
			got, err := db.Manifests().GetManifest(ctx, "acme/app", "sbom", "", true)
			if err != nil || got.Digest != tagged.Digest {
				t.Fatalf("the tagged SBOM by its tag: %+v, %v", got.Digest, err)
			}
			if _, err := db.Manifests().GetManifest(ctx, "acme/app", "", listed.Digest, false); err != nil {
				t.Fatalf("the SBOM an index lists: %v", err)
			}
			if _, err := db.Manifests().GetManifest(ctx, "acme/app", "", plain.Digest, false); !errors.Is(err, meta.ErrManifestNotFound) {
				t.Fatalf("the untagged, unlisted SBOM went with its image: %v", err)
			}
		})
	}
}
