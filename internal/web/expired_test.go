package web_test

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/web"
	"github.com/berth-dev/berth/internal/wire"
)

// TestExpiredTagsAreGoneFromTheUI: a tag past its expiration is gone, as
// for a pull: a repository whose only tag expired lists 0 tags and no
// last push, and an image whose cosign .sig tag expired is not signed.
func TestExpiredTagsAreGoneFromTheUI(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) { expiredTagsAreGone(t, dialect) })
	}
}

func expiredTagsAreGone(t *testing.T, dialect string) {
	ctx := context.Background()
	db := openNoMinimum(t, dialect) // tags that expired already
	past := time.Now().Add(-time.Minute)
	put := func(p meta.PutManifest) {
		t.Helper()
		if p.Manifest.MediaType == "" {
			p.Manifest.MediaType = "application/vnd.oci.image.manifest.v1+json"
		}
		if err := db.Manifests().PutManifest(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	pr := manifestFor("pr build")
	put(meta.PutManifest{Repository: "acme/expired", Manifest: pr, Tag: "pr-1", ExpiresAt: past})
	app := manifestFor("app")
	put(meta.PutManifest{Repository: "acme/app", Manifest: app, Tag: "v1"})
	sigTag := strings.Replace(app.Digest.String(), ":", "-", 1) + ".sig"
	put(meta.PutManifest{Repository: "acme/app", Manifest: manifestFor("signature of app"), Tag: sigTag, ExpiresAt: past})

	ui := newUI(t, wire.WebStores(db), web.Options{})
	for _, sort := range []string{"name", "pushed", "size"} {
		status, body := get(t, ui, "/repository?sort="+sort, false)
		row := regexp.MustCompile(`>acme/expired</a></td>\s*<td>(\d+)</td><td>[^<]*</td><td><time[^>]*>([^<]*)</time>`).FindStringSubmatch(body)
		if status != http.StatusOK || row == nil {
			t.Fatalf("sort=%s: GET the listing = %d without a row of acme/expired\n%.3000s", sort, status, body)
		}
		if row[1] != "0" || row[2] != "—" {
			t.Errorf("sort=%s: acme/expired lists %s tags, last push %q; want 0 and none", sort, row[1], row[2])
		}
	}
	status, body := get(t, ui, "/repository/acme/app", false)
	if status != http.StatusOK || !strings.Contains(body, ">v1</a>") {
		t.Fatalf("GET the tags page = %d without v1\n%.3000s", status, body)
	}
	if strings.Contains(body, "signed (") {
		t.Errorf("v1 shows as signed by an expired .sig tag\n%.3000s", body)
	}
}

// manifestFor is a distinct image manifest of no blobs.
func manifestFor(n string) meta.Manifest {
	content := image(n)
	return meta.Manifest{Content: content, Digest: digest.FromBytes(content)}
}

// openNoMinimum is metatest.Open with no minimum of tag expirations
// (Quay's is an hour from the tag's start): for tags that expired already,
// or expire in milliseconds.
func openNoMinimum(t *testing.T, dialect string) *meta.DB {
	t.Helper()
	db, err := meta.Open(context.Background(), metatest.DSN(t, dialect), meta.TagExpirationBounds(0, meta.DefaultExpirationMaximum))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
