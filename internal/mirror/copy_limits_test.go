package mirror_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/mirror"
	"github.com/berth-dev/berth/internal/oci"
)

// upManifest is a manifest pushed upstream: its digest, size and type.
type upManifest struct {
	digest    digest.Digest
	size      int
	mediaType string
}

func (m upManifest) descriptor() map[string]any {
	return map[string]any{"mediaType": m.mediaType, "digest": m.digest.String(), "size": m.size}
}

// pushImage pushes a random image to repo by digest.
func pushImage(t *testing.T, repo name.Repository, opts []remote.Option) upManifest {
	t.Helper()
	img := randomImage(t)
	d, _ := img.Digest()
	if err := remote.Write(repo.Digest(d.String()), img, opts...); err != nil {
		t.Fatal(err)
	}
	body, _ := img.RawManifest()
	mt, _ := img.MediaType()
	return upManifest{digest.Digest(d.String()), len(body), string(mt)}
}

// pushIndex pushes to repo an OCI index listing children, tagged tag, or
// by digest if tag is "".
func pushIndex(t *testing.T, repo name.Repository, opts []remote.Option, tag string, children ...upManifest) upManifest {
	t.Helper()
	var entries []map[string]any
	for _, c := range children {
		entries = append(entries, c.descriptor())
	}
	body, err := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": oci.MediaTypeImageIndex, "manifests": entries})
	if err != nil {
		t.Fatal(err)
	}
	d := digest.FromBytes(body)
	var ref name.Reference = repo.Digest(d.String())
	if tag != "" {
		ref = repo.Tag(tag)
	}
	if err := remote.Put(ref, rawManifest{body, types.OCIImageIndex}, opts...); err != nil {
		t.Fatal(err)
	}
	return upManifest{d, len(body), oci.MediaTypeImageIndex}
}

// pushChain pushes to repo an image and levels-1 indexes above it, each
// listing the one below, the top one tagged tag; it returns every
// manifest, the top one first.
func pushChain(t *testing.T, repo name.Repository, opts []remote.Option, levels int, tag string) []upManifest {
	t.Helper()
	chain := []upManifest{pushImage(t, repo, opts)}
	for i := 2; i <= levels; i++ {
		top := ""
		if i == levels {
			top = tag
		}
		chain = append([]upManifest{pushIndex(t, repo, opts, top, chain[0])}, chain...)
	}
	return chain
}

// assertNothingStored fails if repo has a tag, or stores one of ms.
func assertNothingStored(t *testing.T, db *meta.DB, repo string, ms ...upManifest) {
	t.Helper()
	ctx := context.Background()
	if tags, err := db.Manifests().ListTags(ctx, repo, "", 10); len(tags) > 0 {
		t.Errorf("the refused copy tagged %v (%v)", tags, err)
	}
	for _, m := range ms {
		if _, err := db.Manifests().GetManifest(ctx, repo, "", m.digest, false); !errors.Is(err, meta.ErrManifestNotFound) {
			t.Errorf("the refused copy stored %s (%v)", m.digest, err)
		}
	}
}

// TestImportRefusesDeeplyNestedIndexes: an upstream nesting indexes in
// each other (here 20 deep) fails the import, saying its indexes nest too
// deep, before it holds more than MaxManifestDepth of them: no tag moves
// and nothing is stored. A chain as deep as the limit imports.
func TestImportRefusesDeeplyNestedIndexes(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	repo, _ := name.NewRepository(f.upstream+"/library/deep", name.Insecure)
	opts := []remote.Option{upAuth}
	chain := pushChain(t, repo, opts, 20, "deep")
	_, _, err := f.copier.Import(ctx, mirror.ImportRequest{Source: f.upstream + "/library/deep:deep", Username: "up", Password: "secret",
		Insecure: true, Repo: "mirror/deep", Tags: []string{"1"}})
	if !errors.Is(err, mirror.ErrIndexTooDeep) || !strings.Contains(err.Error(), fmt.Sprintf("more than %d", mirror.MaxManifestDepth)) {
		t.Fatalf("import of 20 nested indexes: %v, want the indexes nest too deep", err)
	}
	t.Logf("import error: %v", err)
	assertNothingStored(t, f.db, "mirror/deep", chain...)

	chain = pushChain(t, repo, opts, mirror.MaxManifestDepth, "ok")
	got, st, err := f.copier.Import(ctx, mirror.ImportRequest{Source: f.upstream + "/library/deep:ok", Username: "up", Password: "secret",
		Insecure: true, Repo: "mirror/deep", Tags: []string{"1"}})
	if err != nil || got != chain[0].digest || st.Manifests != mirror.MaxManifestDepth {
		t.Fatalf("import of %d nested manifests: %s %+v %v, want %s", mirror.MaxManifestDepth, got, st, err, chain[0].digest)
	}
}

// TestImportRefusesTooManyManifests: a copy fetches at most its cap of
// manifests (here lowered to 4). An index listing more than the cap is
// refused before any of its entries is fetched; a tree of indexes that
// adds up to more is refused when it reaches the cap. Neither tags
// anything. An index within the cap imports.
func TestImportRefusesTooManyManifests(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.copier.WithMaxManifests(4)
	repo, _ := name.NewRepository(f.upstream+"/library/wide", name.Insecure)
	opts := []remote.Option{upAuth}
	imgs := []upManifest{pushImage(t, repo, opts), pushImage(t, repo, opts), pushImage(t, repo, opts), pushImage(t, repo, opts)}
	wide := pushIndex(t, repo, opts, "wide", imgs...)
	a := pushIndex(t, repo, opts, "", imgs[0], imgs[1])
	b := pushIndex(t, repo, opts, "", imgs[2], imgs[3])
	tree := pushIndex(t, repo, opts, "tree", a, b)
	for _, c := range []struct {
		tag, says string
		stored    []upManifest
	}{
		{"wide", "lists 4 manifests", append([]upManifest{wide}, imgs...)},
		{"tree", "more than 4 manifests", []upManifest{tree, b}},
	} {
		_, _, err := f.copier.Import(ctx, mirror.ImportRequest{Source: f.upstream + "/library/wide:" + c.tag, Username: "up", Password: "secret",
			Insecure: true, Repo: "mirror/" + c.tag, Tags: []string{"1"}})
		if !errors.Is(err, mirror.ErrTooManyManifests) || !strings.Contains(err.Error(), c.says) {
			t.Fatalf("import of %s: %v, want too many manifests, saying %q", c.tag, err, c.says)
		}
		t.Logf("import error: %v", err)
		assertNothingStored(t, f.db, "mirror/"+c.tag, c.stored...)
	}

	ok := pushIndex(t, repo, opts, "ok", imgs[:3]...)
	got, st, err := f.copier.Import(ctx, mirror.ImportRequest{Source: f.upstream + "/library/wide:ok", Username: "up", Password: "secret",
		Insecure: true, Repo: "mirror/ok", Tags: []string{"1"}})
	if err != nil || got != ok.digest || st.Manifests != 4 {
		t.Fatalf("import of an index of 3 images: %s %+v %v", got, st, err)
	}
}

// TestImportTimeout: an import with a Timeout (the API's) whose upstream
// accepts and never answers fails when its time is up, saying so.
func TestImportTimeout(t *testing.T) {
	f := newFixture(t)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.URL.Path, "/manifests/") {
			return // the ping
		}
		select { // accepts, never answers (a test bound of 20s)
		case <-r.Context().Done():
		case <-time.After(20 * time.Second):
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(up.Close)
	_, _, err := f.copier.Import(context.Background(), mirror.ImportRequest{Source: strings.TrimPrefix(up.URL, "http://") + "/library/slow:1",
		Insecure: true, Repo: "mirror/slow", Tags: []string{"1"}, Timeout: 300 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "did not finish within 300ms") {
		t.Fatalf("import past its deadline: %v, want it did not finish within 300ms", err)
	}
	assertNothingStored(t, f.db, "mirror/slow")
}

// TestMirrorSyncRefusesDeeplyNestedIndexes: a mirror whose upstream tag
// is 20 nested indexes ends FAIL, last_error saying they nest too deep,
// and tags nothing.
func TestMirrorSyncRefusesDeeplyNestedIndexes(t *testing.T) {
	f := newMirrorFixture(t)
	repo, _ := name.NewRepository(f.upstream + "/lib/app")
	pushChain(t, repo, f.upOpts(), 20, "deep")
	f.create(t, []string{"deep"}, nil)
	if err := f.svc.Sync(context.Background(), mrepo); err != nil {
		t.Fatal(err)
	}
	st := f.status(t)
	if st.Status != meta.MirrorFail || !strings.Contains(st.LastError, "nest too deep") {
		t.Fatalf("sync of 20 nested indexes: %s %q, want FAIL saying they nest too deep", st.Status, st.LastError)
	}
	t.Logf("last_error: %s", st.LastError)
	if tags := f.localTags(t); len(tags) != 0 {
		t.Errorf("the failed sync tagged %v", tags)
	}
}
