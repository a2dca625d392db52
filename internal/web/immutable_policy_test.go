package web_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/internal/web"
	"github.com/berth-dev/berth/internal/wire"
)

// TestImmutableByPolicyOnTheManifestPage: a tag an immutability policy
// covers (the organization's "^v") is immutable in TagRows and on the
// manifest page, which offers it no expiration form (the API refuses
// one); a tag the policy does not cover on the same manifest keeps its
// form. Before, only the tags immutable by name (a gate's rollback tags)
// were.
func TestImmutableByPolicyOnTheManifestPage(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) { immutableByPolicyOnTheManifestPage(t, dialect) })
	}
}

func immutableByPolicyOnTheManifestPage(t *testing.T, dialect string) {
	ctx := context.Background()
	e := testenv.New(t, testenv.Options{Dialect: dialect, Open: true})
	e.User("alice", false)
	e.Org("acme", "alice")
	if _, err := e.DB.Policies().CreateTagPolicy(ctx, meta.TagPolicy{Kind: meta.PolicyImmutability, Namespace: "acme",
		TagPattern: "^v", TagPatternMatches: true}); err != nil {
		t.Fatal(err)
	}
	content := image("app")
	m := meta.Manifest{Content: content, Digest: digest.FromBytes(content), MediaType: "application/vnd.oci.image.manifest.v1+json"}
	if err := e.DB.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: m, Tag: "v1", MoreTags: []string{"dev"}}); err != nil {
		t.Fatal(err)
	}
	rows, _, err := e.DB.Manifests().TagRows(ctx, "acme/app", meta.TagRowQuery{Sort: meta.SortName, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	immutable := map[string]string{}
	for _, r := range rows {
		immutable[r.Name] = r.Immutable
	}
	if !strings.Contains(immutable["v1"], "immutability policy") || immutable["dev"] != "" {
		t.Fatalf("TagRows' Immutable: v1 %q, dev %q; want v1 immutable by the policy, dev not", immutable["v1"], immutable["dev"])
	}

	ui := newUI(t, wire.WebStores(e.DB), web.Options{API: e.API})
	page := "/repository/acme/app/manifest/" + m.Digest.String()
	status, body := get(t, ui, page, false)
	if status != http.StatusOK {
		t.Fatalf("GET the manifest page = %d\n%.3000s", status, body)
	}
	if strings.Contains(body, `name="tag" value="v1"`) {
		t.Errorf("the manifest page offers v1, immutable by policy, an expiration form\n%.6000s", body)
	}
	if !strings.Contains(body, `name="tag" value="dev"`) {
		t.Errorf("the manifest page offers dev no expiration form\n%.6000s", body)
	}
	if !strings.Contains(body, `>v1</a> <span class="badge" title="immutability policy`) {
		t.Errorf("v1 has no immutable badge\n%.6000s", body)
	}
	// What the form would have done: the API refuses it.
	if status, body := post(t, ui, page+"/tag-expiration", url.Values{"tag": {"v1"}, "expires": {"2099-01-01T00:00"}}); status != http.StatusForbidden {
		t.Errorf("set v1's expiration = %d, want the API's 403\n%.2000s", status, body)
	}
}
