package uipath

import (
	"net/url"
	"slices"
	"strings"
	"testing"
)

// TestRepositoryPathSplitsBackToItsName: the path of any name's page,
// and of each page under it, splits back into that name and that page.
func TestRepositoryPathSplitsBackToItsName(t *testing.T) {
	names := []string{
		"acme/app", "acme/team/app", "acme/app/activity", "acme/app/settings",
		"acme/manifest/x", "acme/team/manifest/x", "acme/a/manifest/b/vulnerabilities.csv",
		"acme/x/manifest/y/z", "a/b c", "acme/app/activity/settings",
		"acme/team/manifest", "a/manifest/manifest", "acme/manifest/manifest/x",
		"a/b/manifest/sha256:abc",
	}
	pages := [][]string{nil, {"activity"}, {"settings"}, {"manifest", "sha256:abc"}, {"manifest", "sha256:abc", "vulnerabilities.csv"}}
	for _, name := range names {
		for _, page := range pages {
			p := Repository(name)
			for _, s := range page {
				p += "/" + url.PathEscape(s)
			}
			segs := strings.Split(strings.TrimPrefix(p, "/repository/"), "/")
			for i, s := range segs {
				u, err := url.PathUnescape(s)
				if err != nil {
					t.Fatal(err)
				}
				segs[i] = u
			}
			gotName, gotPage := Split(segs)
			if strings.Join(gotName, "/") != name || !slices.Equal(gotPage, page) {
				t.Errorf("%s splits into %q and %q, want %q and %q", p, gotName, gotPage, name, page)
			}
		}
	}
	if got := Repository("acme/app"); got != "/repository/acme/app" {
		t.Errorf("Repository(acme/app) = %s: a plain name needs no \"-\"", got)
	}
}

// TestActionPathEndsTheName: an action's path always ends the name with
// "-", so a segment after it is never read as part of the name.
func TestActionPathEndsTheName(t *testing.T) {
	for name, want := range map[string]string{
		"acme/app":          "/repository/acme/app/-",
		"acme/app/settings": "/repository/acme/app/settings/-",
		"a/b c":             "/repository/a/b%20c/-",
	} {
		if got := Action(name); got != want {
			t.Errorf("Action(%q) = %s, want %s", name, got, want)
		}
	}
}
