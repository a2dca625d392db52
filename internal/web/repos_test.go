package web_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/web"
	"github.com/berth-dev/berth/internal/wire"
)

// TestRepositoryListNextLinkSaysNothingOfPrivateRows: the listing's "Next
// page" link of a signed-in user who may not read acme/hidden is the same
// whether acme/hidden exists or not (it counted the private rows it
// skipped), for each sort; the next page shows the rest and offers no
// further page.
func TestRepositoryListNextLinkSaysNothingOfPrivateRows(t *testing.T) {
	ctx := context.Background()
	public := map[string]bool{}
	for i := range 51 {
		public[fmt.Sprintf("pub/r%02d", i)] = true
	}
	uis := map[bool]*web.UI{}
	for _, hidden := range []bool{false, true} {
		db := metatest.Open(t, "sqlite")
		metatest.Orgs(t, db, "pub", "acme")
		for name := range public {
			if err := db.Repositories().CreateRepository(ctx, name, "public", "", "test", 0); err != nil {
				t.Fatal(err)
			}
		}
		if hidden {
			if err := db.Repositories().CreateRepository(ctx, "acme/hidden", "private", "", "test", 0); err != nil {
				t.Fatal(err)
			}
		}
		st := wire.WebStores(db)
		st.Sessions = oneSession{}
		uis[hidden] = newUI(t, st, web.Options{Auth: readOnlyPublic{public}})
	}
	for _, sort := range []string{"name", "pushed", "size"} {
		var next [2]string
		for i, hidden := range []bool{false, true} {
			status, body := get(t, uis[hidden], "/repository?sort="+sort, true)
			if status != http.StatusOK || strings.Contains(body, "acme/hidden") {
				t.Fatalf("sort=%s, acme/hidden exists: %v: GET = %d, shows acme/hidden: %v", sort, hidden, status, strings.Contains(body, "acme/hidden"))
			}
			next[i] = nextHref(body)
		}
		if next[0] == "" || next[0] != next[1] {
			t.Errorf("sort=%s: the Next link is %q without acme/hidden and %q with it", sort, next[0], next[1])
			continue
		}
		status, body := get(t, uis[true], next[1], true)
		if status != http.StatusOK || !strings.Contains(body, ">pub/r50</a>") || strings.Contains(body, ">pub/r49</a>") {
			t.Errorf("sort=%s: the next page (%s) = %d, does not show just pub/r50\n%.3000s", sort, next[1], status, body)
		}
		if n := nextHref(body); n != "" {
			t.Errorf("sort=%s: the last page offers a next one: %s", sort, n)
		}
	}
}

// manyPrivate is a listing of 1,050 private repositories, then three
// public ones, all by name (BrowseRepositories, in memory).
type manyPrivate struct{ cards []meta.RepoCard }

func newManyPrivate() manyPrivate {
	var m manyPrivate
	for i := range 1050 {
		m.cards = append(m.cards, meta.RepoCard{Name: fmt.Sprintf("acme/h%04d", i), Visibility: "private", State: "NORMAL"})
	}
	for i := range 3 {
		m.cards = append(m.cards, meta.RepoCard{Name: fmt.Sprintf("pub/z%d", i), Visibility: "public", State: "NORMAL"})
	}
	return m
}

func (m manyPrivate) BrowseRepositories(_ context.Context, q meta.BrowseQuery) ([]meta.RepoCard, error) {
	i, _ := slices.BinarySearchFunc(m.cards, q.After.Name, func(c meta.RepoCard, name string) int { return strings.Compare(c.Name, name) })
	if i < len(m.cards) && m.cards[i].Name == q.After.Name {
		i++
	}
	i = min(i+q.Offset, len(m.cards))
	return m.cards[i:min(i+q.Limit, len(m.cards))], nil
}

func (manyPrivate) Repository(context.Context, string) (meta.RepoInfo, error) {
	return meta.RepoInfo{}, nil
}

// TestRepositoryListResumesPastPrivateRows: a page that stops at the rows
// it may read (1,000 private ones the visitor may not see) shows none, and
// its Next link names none of them (the keyset of a row the visitor does
// not see would) yet continues after them, to the public repositories.
func TestRepositoryListResumesPastPrivateRows(t *testing.T) {
	m := newManyPrivate()
	ui := newUI(t, web.Stores{Sessions: oneSession{}, Repositories: m},
		web.Options{Auth: readOnlyPublic{map[string]bool{"pub/z0": true, "pub/z1": true, "pub/z2": true}}})
	status, body := get(t, ui, "/repository?sort=name", true)
	next := nextHref(body)
	if status != http.StatusOK || strings.Contains(body, "acme/") || next == "" || strings.Contains(next, "acme") {
		t.Fatalf("first page: %d, shows acme: %v, next %q", status, strings.Contains(body, "acme/"), next)
	}
	status, body = get(t, ui, next, true)
	for i := range 3 {
		if !strings.Contains(body, fmt.Sprintf(">pub/z%d</a>", i)) {
			t.Errorf("the page after the private rows (%d) does not show pub/z%d", status, i)
		}
	}
	if n := nextHref(body); n != "" {
		t.Errorf("the last page offers a next one: %s", n)
	}
	// A resume link another server sealed (another key) goes on after the
	// last row shown: here, from the start.
	if status, body := get(t, ui, "/repository?sort=name&resume=Zm9yZ2Vk", true); status != http.StatusOK || strings.Contains(body, "acme/") {
		t.Errorf("a forged resume link: %d, shows acme: %v", status, strings.Contains(body, "acme/"))
	}
}

// TestNestedRepositoryNamedLikeASubpage: acme/app/activity, whose name
// ends like acme/app's activity page, has its own pages under
// /repository/acme/app/activity/-/ (the listing links there), while
// /repository/acme/app/activity stays acme/app's activity page and
// acme/app keeps its paths.
func TestNestedRepositoryNamedLikeASubpage(t *testing.T) {
	db := metatest.Open(t, "sqlite")
	putManifest(t, db, "acme/app", "parent-tag", meta.Manifest{Content: image("app")})
	d := putManifest(t, db, "acme/app/activity", "nested-tag", meta.Manifest{Content: image("nested")})
	ui := newUI(t, wire.WebStores(db), web.Options{})
	_, body := get(t, ui, "/repository", false)
	if !strings.Contains(body, `href="/repository/acme/app/activity/-">acme/app/activity</a>`) || !strings.Contains(body, `href="/repository/acme/app">acme/app</a>`) {
		t.Errorf("the listing does not link acme/app/activity through /-/, or acme/app as before\n%.3000s", body)
	}
	for path, want := range map[string]string{
		"/repository/acme/app/activity/-":                              "nested-tag",
		"/repository/acme/app/activity/-/manifest/" + d.String():       "nested-tag",
		"/repository/acme/app/activity/-/activity":                     "<title>Activity of acme/app/activity",
		"/repository/acme/app/activity/-?sort=name":                    "nested-tag",
		"/repository/acme/app/activity":                                "<title>Activity of acme/app ",
		"/repository/acme/app":                                         "parent-tag",
		"/repository/acme/app/-/activity":                              "<title>Activity of acme/app ",
		"/repository/acme/app/activity/-/manifest/" + d.String() + "/": "",
	} {
		status, body := get(t, ui, path, false)
		if want == "" {
			if status != http.StatusNotFound {
				t.Errorf("GET %s = %d, want 404", path, status)
			}
			continue
		}
		if status != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("GET %s = %d, shows %q: %v", path, status, want, strings.Contains(body, want))
		}
	}
	// Its tags page's links stay under /-/.
	if _, body := get(t, ui, "/repository/acme/app/activity/-", false); !strings.Contains(body, `href="/repository/acme/app/activity/-/manifest/`+d.String()) {
		t.Error("the nested repository's tags page does not link its manifest under /-/")
	}
}
