package events_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/ingest"
	"github.com/berth-dev/berth/internal/storage"
)

// TestUpstreamLimits: a manifest answer is read no further than its cap,
// also when the upstream redirects the GET elsewhere; a tag list page
// too; a body that stops coming is cut; blobs pass unbounded.
func TestUpstreamLimits(t *testing.T) {
	big := make([]byte, 1<<20)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v2/lib/app/manifests/moved":
			http.Redirect(w, r, "/elsewhere", http.StatusTemporaryRedirect)
		case "/v2/lib/app/manifests/stall":
			w.Write(make([]byte, 10))
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		default:
			w.Write(big)
		}
	}))
	defer srv.Close()
	client := &http.Client{Transport: events.UpstreamLimits{Next: http.DefaultTransport, MaxManifestBytes: 1000, MaxTagListBytes: 2000,
		Stall: 200 * time.Millisecond}}
	read := func(path string) (int, error) {
		resp, err := client.Get(srv.URL + path)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return len(b), err
	}
	var tooLarge *ingest.TooLargeError
	for _, path := range []string{"/v2/lib/app/manifests/latest", "/v2/lib/app/manifests/moved"} {
		if n, err := read(path); !errors.As(err, &tooLarge) || n > 1000 {
			t.Errorf("GET %s: %d bytes, %v; want a *ingest.TooLargeError after at most 1000", path, n, err)
		}
	}
	var tags *events.TagListTooLargeError
	if n, err := read("/v2/lib/app/tags/list"); !errors.As(err, &tags) || n > 2000 {
		t.Errorf("tag list: %d bytes, %v; want a *TagListTooLargeError after at most 2000", n, err)
	}
	if _, err := read("/v2/lib/app/manifests/stall"); !errors.Is(err, storage.ErrStalled) {
		t.Errorf("stalled manifest: %v, want storage.ErrStalled", err)
	}
	if n, err := read("/v2/lib/app/blobs/sha256:abc"); err != nil || n != len(big) {
		t.Errorf("blob: %d bytes, %v; want all of it", n, err)
	}
}
