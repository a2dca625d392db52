package mirror_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/mirror"
)

// TestImportDoesNotLinkOtherNamespacesBlobs: an import (and a mirror, which
// copies the same way) links without a download only the blobs a
// repository of its own namespace links; a blob Berth stores for another
// namespace only is downloaded, so an upstream that merely names another
// tenant's private layers (here it serves other bytes for them) gets
// nothing. Before, every blob Berth stored anywhere was linked, and the
// importer could then pull the victim's layers from its own repository.
func TestImportDoesNotLinkOtherNamespacesBlobs(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	img, err := random.Image(4096, 2)
	if err != nil {
		t.Fatal(err)
	}
	victim, _ := name.ParseReference(f.berth+"/victim/app:1", name.Insecure)
	if err := remote.Write(victim, img); err != nil {
		t.Fatal(err)
	}
	f.pushUpstream(t, "library/img:1", nil, img)
	f.corrupt = true // the upstream does not have the layers' bytes
	layers, _ := img.Layers()
	layer, _ := layers[0].Digest()
	_, _, err = f.copier.Import(ctx, mirror.ImportRequest{Source: f.upstream + "/library/img:1", Username: "up", Password: "secret",
		Insecure: true, Repo: "att/x", Tags: []string{"1"}, MayLink: func(context.Context, string) bool { return true }})
	if err == nil {
		t.Fatal("an import naming another namespace's layers succeeded without their bytes")
	}
	if _, err := f.db.Blobs().RepositoryBlob(ctx, "att/x", digest.Digest(layer.String())); !errors.Is(err, meta.ErrBlobNotFound) {
		t.Fatalf("another namespace's layer was linked into att/x: %v", err)
	}
	// Into the victim's own namespace, by an actor that may read
	// victim/app, the same import links its blobs and downloads nothing.
	_, st, err := f.copier.Import(ctx, mirror.ImportRequest{Source: f.upstream + "/library/img:1", Username: "up", Password: "secret",
		Insecure: true, Repo: "victim/copy", Tags: []string{"1"}, MayLink: func(context.Context, string) bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	if st.BlobsFetched != 0 || st.BlobsLinked != 3 {
		t.Fatalf("import into the namespace that has the blobs: %+v, want 3 linked and none fetched", st)
	}
}
