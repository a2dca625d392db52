package web_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/web"
	"github.com/berth-dev/berth/internal/wire"
)

// putManifest stores a manifest (of no blobs) in repo, tagged when tag is
// set, and returns its digest.
func putManifest(t *testing.T, db *meta.DB, repo, tag string, m meta.Manifest) digest.Digest {
	t.Helper()
	if m.MediaType == "" {
		m.MediaType = "application/vnd.oci.image.manifest.v1+json"
	}
	m.Digest = digest.FromBytes(m.Content)
	if err := db.Manifests().PutManifest(context.Background(), meta.PutManifest{Repository: repo, Manifest: m, Tag: tag}); err != nil {
		t.Fatal(err)
	}
	return m.Digest
}

// image is an image manifest's JSON, made distinct by n.
func image(n string) []byte {
	return []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[],"n":%q}`, n))
}

// goneContent answers TagRows as a repository deleted after the page
// found it: meta.ErrRepositoryNotFound.
type goneContent struct{ web.ContentStore }

func (goneContent) TagRows(context.Context, string, meta.TagRowQuery) ([]meta.TagRow, int, error) {
	return nil, 0, meta.ErrRepositoryNotFound
}

// TestManifestPageOfADeletedRepositoryIsNotFound: a repository deleted
// while its manifest page is read (after the page found it, before it
// listed the manifest's tags) answers the 404 page, not a server error.
func TestManifestPageOfADeletedRepositoryIsNotFound(t *testing.T) {
	db := metatest.Open(t, "sqlite")
	d := putManifest(t, db, "acme/app", "v1", meta.Manifest{Content: image("app")})
	st := wire.WebStores(db)
	st.Content = goneContent{st.Content}
	ui := newUI(t, st, web.Options{})
	status, body := get(t, ui, "/repository/acme/app/manifest/"+d.String(), false)
	if status != http.StatusNotFound || !strings.Contains(body, "Not found") {
		t.Errorf("GET the manifest page = %d, want 404 Not found\n%.2000s", status, body)
	}
}

// TestManifestPageCapsReferrers: of 150 referrers the page lists 100 and
// says that more exist.
func TestManifestPageCapsReferrers(t *testing.T) {
	db := metatest.Open(t, "sqlite")
	d := putManifest(t, db, "acme/app", "v1", meta.Manifest{Content: image("app")})
	for i := range 150 {
		content := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/spdx+json","layers":[],"subject":{"digest":%q},"n":%d}`, d, i)
		putManifest(t, db, "acme/app", "", meta.Manifest{Content: content, ArtifactType: "application/spdx+json", Subject: d})
	}
	ui := newUI(t, wire.WebStores(db), web.Options{})
	status, body := get(t, ui, "/repository/acme/app/manifest/"+d.String(), false)
	if n := strings.Count(body, "<td>referrers API</td>"); status != http.StatusOK || n == 0 || n > 100 {
		t.Errorf("GET the manifest page = %d with %d referrer rows, want 200 and at most 100", status, n)
	}
	if !strings.Contains(body, `id="more-referrers"`) {
		t.Error("the page does not say that more referrers exist")
	}
	// One more than a page shows would not call for the note.
	d2 := putManifest(t, db, "acme/app", "v2", meta.Manifest{Content: image("app 2")})
	content := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/spdx+json","layers":[],"subject":{"digest":%q}}`, d2)
	putManifest(t, db, "acme/app", "", meta.Manifest{Content: content, ArtifactType: "application/spdx+json", Subject: d2})
	if _, body := get(t, ui, "/repository/acme/app/manifest/"+d2.String(), false); strings.Count(body, "<td>referrers API</td>") != 1 || strings.Contains(body, `id="more-referrers"`) {
		t.Error("a manifest with one referrer does not list it alone")
	}
}

// countingAPI answers every API request 200 and counts them.
type countingAPI struct{ calls *int }

func (a countingAPI) Act(context.Context, auth.Identity, string, string, string, []byte) (int, []byte) {
	*a.calls++
	return http.StatusOK, nil
}

// TestDeleteTagsRefusesMoreThanAPage: a bulk delete of more tags than a
// page lists is refused with 400 before any is deleted; one of a page's
// worth runs.
func TestDeleteTagsRefusesMoreThanAPage(t *testing.T) {
	db := metatest.Open(t, "sqlite")
	putManifest(t, db, "acme/app", "v1", meta.Manifest{Content: image("app")})
	calls := 0
	ui := newUI(t, wire.WebStores(db), web.Options{API: countingAPI{&calls}})
	form := url.Values{}
	for i := range 51 {
		form.Add("tag", fmt.Sprintf("t%d", i))
	}
	if status, body := post(t, ui, "/repository/acme/app/delete-tags", form); status != http.StatusBadRequest || calls != 0 {
		t.Errorf("POST 51 tags = %d with %d deletions, want 400 and none\n%.2000s", status, calls, body)
	}
	form["tag"] = form["tag"][:50]
	if status, _ := post(t, ui, "/repository/acme/app/delete-tags", form); status != http.StatusOK || calls != 50 {
		t.Errorf("POST 50 tags = %d with %d deletions, want 200 and 50", status, calls)
	}
}
