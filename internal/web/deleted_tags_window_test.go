package web_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/api"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/web"
	"github.com/berth-dev/berth/internal/wire"
)

// TestActivityOffersTheRestoresTheAPIMakes: the Activity page's deleted
// tags are those the API's restore (the same time machine window) puts
// back. With a window of an hour, a tag deleted just now is offered; with
// a window already past when the page is read, the same tag is not (its
// restore answers 404), while a tag that expired, which no garbage
// collection pass has swept, is offered and restored. Before, the page
// listed every deleted tag whose image was stored, whatever the window,
// and no expired one.
func TestActivityOffersTheRestoresTheAPIMakes(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		window     time.Duration
		offersGone bool
	}{{time.Hour, true}, {time.Microsecond, false}} {
		db := openNoMinimum(t, "sqlite") // pr-1 expires in 300ms
		putManifest(t, db, "acme/app", "gone", meta.Manifest{Content: image("gone")})
		pr := manifestFor("pr build")
		pr.MediaType = "application/vnd.oci.image.manifest.v1+json"
		if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: pr, Tag: "pr-1",
			ExpiresAt: time.Now().Add(300 * time.Millisecond)}); err != nil {
			t.Fatal(err)
		}
		if err := db.Manifests().DeleteTag(ctx, "acme/app", "gone", "alice"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(400 * time.Millisecond) // past pr-1's expiration and the shorter window
		a := api.New(wire.APIStores(db, tc.window), api.Open{}, api.Options{Logger: slog.New(slog.DiscardHandler)})
		ui := newUI(t, wire.WebStores(db), web.Options{API: a, TimeMachine: &tc.window})
		status, body := get(t, ui, "/repository/acme/app/activity", false)
		if status != http.StatusOK {
			t.Fatalf("window %v: GET the activity page = %d\n%.2000s", tc.window, status, body)
		}
		if got := strings.Contains(body, "Restore gone"); got != tc.offersGone {
			t.Errorf("window %v: the page offers to restore gone: %v, want %v", tc.window, got, tc.offersGone)
		}
		if !strings.Contains(body, "Restore pr-1") {
			t.Errorf("window %v: the page does not offer to restore the expired pr-1\n%.4000s", tc.window, body)
		}
		if tc.offersGone {
			continue
		}
		// What the page does not offer the API refuses; what it offers it does.
		if status, _ := post(t, ui, "/repository/acme/app/restore-tag", url.Values{"tag": {"gone"}, "digest": {digestOf(t, db, "gone")}}); status != http.StatusNotFound {
			t.Errorf("restore gone past the window = %d, want 404", status)
		}
		if status, body := post(t, ui, "/repository/acme/app/restore-tag", url.Values{"tag": {"pr-1"}, "digest": {pr.Digest.String()}}); status != http.StatusSeeOther {
			t.Errorf("restore the expired pr-1 = %d, want 303\n%.2000s", status, body)
		}
		if m, err := db.Manifests().GetManifest(ctx, "acme/app", "pr-1", "", false); err != nil || m.Digest != pr.Digest {
			t.Errorf("pr-1 after its restore: %s %v", m.Digest, err)
		}
	}
}

// digestOf is the digest a tag last named, from its history.
func digestOf(t *testing.T, db *meta.DB, tag string) string {
	t.Helper()
	ps, err := db.Manifests().TagHistory(context.Background(), "acme/app", tag, 1)
	if err != nil || len(ps) == 0 {
		t.Fatalf("history of %s: %v %v", tag, ps, err)
	}
	return ps[0].Digest.String()
}
