package web_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/web"
	"github.com/berth-dev/berth/internal/wire"
)

// TestManifestPageFindsReadableDependentsPastUnreadable: the "Used by"
// list of a shared public base shows the visitor's dependent however many
// dependents they may not read come before it by name. Before, the page
// read the first 100 and dropped the unreadable ones: an empty list.
func TestManifestPageFindsReadableDependentsPastUnreadable(t *testing.T) {
	ctx := context.Background()
	db := metatest.Open(t, "sqlite")
	bd, link := sharedBase(t, db)
	for i := range 250 {
		repo := fmt.Sprintf("aaa/r-%d", i%5)
		d := putManifest(t, db, repo, fmt.Sprintf("v%d", i), meta.Manifest{Content: image(fmt.Sprintf("hidden %d", i))})
		if err := db.Graph().SetBases(ctx, repo, d, link); err != nil {
			t.Fatal(err)
		}
	}
	zd := putManifest(t, db, "zeta/app", "v1", meta.Manifest{Content: image("zeta app")})
	if err := db.Graph().SetBases(ctx, "zeta/app", zd, link); err != nil {
		t.Fatal(err)
	}
	st := wire.WebStores(db)
	st.Graph = db.Graph()
	ui := newUI(t, st, web.Options{Auth: readOnlyPublic{public: map[string]bool{"pub/base": true, "zeta/app": true}}})
	status, body := get(t, ui, "/repository/pub/base/manifest/"+bd.String(), false)
	if status != http.StatusOK {
		t.Fatalf("GET the base's manifest page = %d\n%.2000s", status, body)
	}
	if !strings.Contains(body, "Used by") || !strings.Contains(body, "/repository/zeta/app/manifest/"+zd.String()) {
		t.Errorf("the base's page does not list zeta/app among the images built on it\n%s", body)
	}
	if strings.Contains(body, "aaa/r-") {
		t.Errorf("the base's page names a repository the visitor may not read\n%s", body)
	}
}

// sharedBase stores the public base pub/base:1 and returns its digest
// and the level-1 link of an image built on it.
func sharedBase(t *testing.T, db *meta.DB) (digest.Digest, []meta.BaseLink) {
	t.Helper()
	bd := putManifest(t, db, "pub/base", "1", meta.Manifest{Content: image("base")})
	base, err := db.Repositories().Repository(context.Background(), "pub/base")
	if err != nil {
		t.Fatal(err)
	}
	return bd, []meta.BaseLink{{RepositoryID: base.ID, Digest: bd, Method: "layers", Level: 1, Layers: 1}}
}

// countingDecisions counts the permission decisions a page asks for.
type countingDecisions struct {
	readOnlyPublic
	n *atomic.Int64
}

func (a countingDecisions) Decide(ctx context.Context, id auth.Identity, repo, action string) (bool, error) {
	a.n.Add(1)
	return a.readOnlyPublic.Decide(ctx, id, repo, action)
}

// TestManifestPageBoundsDependentsRead: an anonymous view of a shared
// public base whose dependents sit in more private repositories than the
// page reads (1,000) stops there, with one decision per repository read,
// and says that more may be built on it and where the API lists them.
// Before, one view read up to 50,000 dependents and asked as many
// permission decisions, and said nothing when it stopped.
func TestManifestPageBoundsDependentsRead(t *testing.T) {
	ctx := context.Background()
	db := metatest.Open(t, "sqlite")
	bd, link := sharedBase(t, db)
	const hidden = 1100
	for i := range hidden {
		repo := fmt.Sprintf("aaa/r-%04d", i)
		d := putManifest(t, db, repo, "v1", meta.Manifest{Content: image(fmt.Sprintf("hidden %d", i))})
		if err := db.Graph().SetBases(ctx, repo, d, link); err != nil {
			t.Fatal(err)
		}
	}
	st := wire.WebStores(db)
	st.Graph = db.Graph()
	var n atomic.Int64
	ui := newUI(t, st, web.Options{Auth: countingDecisions{readOnlyPublic{public: map[string]bool{"pub/base": true}}, &n}})
	status, body := get(t, ui, "/repository/pub/base/manifest/"+bd.String(), false)
	if status != http.StatusOK {
		t.Fatalf("GET the base's manifest page = %d\n%.2000s", status, body)
	}
	if got := n.Load(); got > 1010 {
		t.Errorf("one anonymous view asked %d permission decisions; want at most the 1,000 dependents read and a few more", got)
	}
	if !strings.Contains(body, `id="more-dependents"`) || !strings.Contains(body, "/api/v1/repository/pub/base/manifest/"+bd.String()+"/dependents") {
		t.Errorf("the page does not say that more dependents may exist, nor where the API lists them\n%s", body)
	}
	if strings.Contains(body, "aaa/r-") {
		t.Errorf("the base's page names a repository the visitor may not read")
	}
}
