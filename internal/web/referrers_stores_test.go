package web_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/web"
	"github.com/berth-dev/berth/internal/wire"
)

// countedReferrers is the referrer store, counting the referrers its
// listings return; with fail, it fails every listing instead.
type countedReferrers struct {
	web.ReferrerLister
	listed int
	fail   bool
}

func (c *countedReferrers) ReferrerEntries(ctx context.Context, q meta.ReferrerQuery) ([]meta.ReferrerEntry, error) {
	if c.fail {
		return nil, errors.New("referrer entries read")
	}
	es, err := c.ReferrerLister.ReferrerEntries(ctx, q)
	c.listed += len(es)
	return es, err
}

// TestManifestPageReadsReferrersThroughTheirStore: the manifest page
// lists referrers through Stores.Referrers, and through nothing else:
// with the content store hiding the database's referrer methods, the
// page lists every referrer the referrer store returns; with the
// referrer store failing, the page fails.
func TestManifestPageReadsReferrersThroughTheirStore(t *testing.T) {
	db := metatest.Open(t, "sqlite")
	d := putManifest(t, db, "acme/app", "v1", meta.Manifest{Content: image("app")})
	for i := range 3 {
		content := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/spdx+json","layers":[],"subject":{"digest":%q},"n":%d}`, d, i)
		putManifest(t, db, "acme/app", "", meta.Manifest{Content: content, ArtifactType: "application/spdx+json", Subject: d})
	}
	st := wire.WebStores(db)
	st.Content = struct{ web.ContentStore }{st.Content}
	counted := &countedReferrers{ReferrerLister: st.Referrers}
	st.Referrers = counted
	ui := newUI(t, st, web.Options{})
	status, body := get(t, ui, "/repository/acme/app/manifest/"+d.String(), false)
	if n := strings.Count(body, "<td>referrers API</td>"); status != http.StatusOK || n != 3 || counted.listed != 3 {
		t.Errorf("GET the manifest page = %d with %d referrer rows, %d read through Stores.Referrers; want 200, 3 and 3", status, n, counted.listed)
	}
	counted.fail = true
	if status, _ := get(t, ui, "/repository/acme/app/manifest/"+d.String(), false); status != http.StatusInternalServerError {
		t.Errorf("GET the manifest page with the referrer store failing = %d, want 500", status)
	}
}

// TestNewRefusesContentWithoutReferrers: the web UI given a content
// store and no referrer store is refused when it is made, not when its
// first manifest page is asked for.
func TestNewRefusesContentWithoutReferrers(t *testing.T) {
	st := wire.WebStores(metatest.Open(t, "sqlite"))
	st.Referrers = nil
	if _, err := web.New(st, web.Options{}); err == nil || !strings.Contains(err.Error(), "Referrers") {
		t.Errorf("New with Content and no Referrers: %v, want an error naming Referrers", err)
	}
}
