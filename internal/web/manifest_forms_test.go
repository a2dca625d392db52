package web_test

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/testenv"
)

// acmeAppTags is acmeAppAdmin with one manifest of acme/app tagged v1
// and v2, v2 expiring in two days; it returns the UI and the manifest's
// page.
func acmeAppTags(t *testing.T, e *testenv.Env) (http.Handler, string) {
	t.Helper()
	_, ui := acmeAppAdmin(t, e)
	d := putManifest(t, e.DB, "acme/app", "v1", meta.Manifest{Content: image("app")})
	putManifest(t, e.DB, "acme/app", "v2", meta.Manifest{Content: image("app")})
	if err := e.DB.Manifests().SetTagExpiration(context.Background(), "acme/app", "v2", time.Now().Add(48*time.Hour)); err != nil {
		t.Fatal(err)
	}
	return ui, "/repository/acme/app/manifest/" + d.String()
}

// expiresInput is the value of the expiration field of tag's form on a
// manifest page ("" without one), and whether the form is there.
func expiresInput(body, tag string) (string, bool) {
	form := regexp.MustCompile(`(?s)<form [^>]*/tag-expiration"[^>]*>\s*<input type="hidden" name="csrf" value="[^"]*"><input type="hidden" name="tag" value="` +
		regexp.QuoteMeta(tag) + `">(.*?)</form>`).FindStringSubmatch(body)
	if form == nil {
		return "", false
	}
	if v := regexp.MustCompile(`<input type="datetime-local" name="expires"[^>]*value="([^"]*)"`).FindStringSubmatch(form[1]); v != nil {
		return v[1], true
	}
	return "", true
}

// TestManifestRefusedFormsKeepWhatWasTyped: a tag the API refuses to put
// on the manifest (a name with a space), or an expiration it refuses (in
// the past) or the page cannot read, answers with the manifest page (400),
// the message in its Tags section and the form holding what was typed, in
// that tag's row only; the page read afresh keeps nothing (before, each
// was a page of its own and what was typed was lost).
func TestManifestRefusedFormsKeepWhatWasTyped(t *testing.T) {
	testenv.ForDialects(t, testenv.Options{}, func(t *testing.T, e *testenv.Env) {
		ui, page := acmeAppTags(t, e)
		_, fresh := get(t, ui, page, true)
		stored, ok := expiresInput(fresh, "v2")
		if !ok || stored == "" {
			t.Fatalf("the manifest page has no expiration form of v2 holding its expiry\n%.4000s", fresh)
		}
		tagsSection := func(body string) string {
			_, s, _ := strings.Cut(body, `<section id="tags">`)
			s, _, _ = strings.Cut(s, "</section>")
			return s
		}

		status, body := postSession(t, ui, page+"/add-tag", url.Values{"tag": {"Bad Tag"}})
		if status != http.StatusBadRequest || !strings.Contains(body, "<h1>acme/app@") {
			t.Fatalf("POST add-tag %q = %d, want 400 with the manifest page\n%.2000s", "Bad Tag", status, body)
		}
		if s := tagsSection(body); !regexp.MustCompile(`<input name="tag"[^>]* value="Bad Tag"`).MatchString(s) || !strings.Contains(s, `class="error" role="alert"`) {
			t.Errorf("the refused tag's form does not hold %q under the message\n%.4000s", "Bad Tag", s)
		}

		for _, typed := range []string{"2001-02-03T04:05", "soon"} {
			status, body = postSession(t, ui, page+"/tag-expiration", url.Values{"tag": {"v1"}, "expires": {typed}})
			if status != http.StatusBadRequest || !strings.Contains(body, "<h1>acme/app@") {
				t.Fatalf("POST tag-expiration of v1 at %q = %d, want 400 with the manifest page\n%.2000s", typed, status, body)
			}
			s := tagsSection(body)
			if !strings.Contains(s, `class="error" role="alert"`) {
				t.Errorf("expiration %q: no message in the Tags section\n%.4000s", typed, s)
			}
			if got, _ := expiresInput(body, "v1"); got != typed {
				t.Errorf("expiration %q: v1's field holds %q, want what was typed", typed, got)
			}
			if got, _ := expiresInput(body, "v2"); got != stored {
				t.Errorf("expiration %q of v1: v2's field holds %q, want its own expiry %q", typed, got, stored)
			}
		}

		// "Never" on a tag refused (a tag name the API refuses) keeps the page too.
		status, body = postSession(t, ui, page+"/tag-expiration", url.Values{"tag": {"no such:tag"}, "never": {"1"}})
		if status != http.StatusBadRequest || !strings.Contains(body, "<h1>acme/app@") {
			t.Errorf("POST Never of a bad tag = %d, want 400 with the manifest page\n%.2000s", status, body)
		}

		if _, body := get(t, ui, page, true); strings.Contains(body, "Bad Tag") || strings.Contains(body, "2001-02-03") || strings.Contains(body, `role="alert"`) {
			t.Error("the manifest page read afresh shows what a refused form held")
		}
	})
}

// TestManifestButtonsNameTheirTarget: each tag's Set and Never buttons
// (and its expiration field) have an accessible name naming the tag
// (before, every row's was "Set", "Never" and "Expires at (UTC)").
func TestManifestButtonsNameTheirTarget(t *testing.T) {
	testenv.ForDialects(t, testenv.Options{}, func(t *testing.T, e *testenv.Env) {
		ui, page := acmeAppTags(t, e)
		status, body := get(t, ui, page, true)
		if status != http.StatusOK {
			t.Fatalf("GET %s = %d", page, status)
		}
		distinctButtons(t, page, body, "Set expiration of tag v1", "Set expiration of tag v2", "Never expire tag v2")
		for _, tag := range []string{"v1", "v2"} {
			if !strings.Contains(body, `aria-label="Expiration of tag `+tag+` (UTC)"`) {
				t.Errorf("the expiration field of %s does not name its tag", tag)
			}
		}
	})
}
