package proxy_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/proxy"
)

// TestProxyRemembersUpstreamMisses: a manifest the upstream does not
// have (404 MANIFEST_UNKNOWN) is remembered for the organization's miss
// window: a second pull of the same digest or tag is answered 404
// MANIFEST_UNKNOWN without asking the upstream again (a loop of pulls of
// random digests held a fetch turn, and cost the upstream a ping, a token
// and a GET, each). After the window it is asked again. Another
// repository is asked on its own, and an upstream failing (500) is never
// remembered.
func TestProxyRemembersUpstreamMisses(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			var mu sync.Mutex
			asked := map[string]int{} // manifest requests per path
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/v2/" {
					return
				}
				if strings.Contains(r.URL.Path, "/manifests/") {
					mu.Lock()
					asked[r.URL.Path]++
					mu.Unlock()
				}
				if strings.HasPrefix(r.URL.Path, "/v2/library/broken/") {
					w.WriteHeader(http.StatusInternalServerError)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusNotFound)
				io.WriteString(w, `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}`)
			}))
			t.Cleanup(up.Close)
			count := func(path string) int {
				mu.Lock()
				defer mu.Unlock()
				return asked[path]
			}
			var now atomic.Int64
			now.Store(time.Now().UnixNano())
			_, srv := hubCache(t, dialect, up.URL, func(o *proxy.Options) {
				o.NotFoundTTL = 30 * time.Second
				o.Now = func() time.Time { return time.Unix(0, now.Load()) }
			})
			pull := func(repo, ref string) (int, string) {
				t.Helper()
				status, code, msg, _ := getManifest(t, srv.URL+"/v2/hub/"+repo+"/manifests/"+ref)
				return status, code + ": " + msg
			}

			d := digest.FromString("not upstream").String()
			for _, ref := range []string{d, "no-such-tag"} {
				path := "/v2/library/alpine/manifests/" + ref
				for i := range 3 {
					if status, got := pull("library/alpine", ref); status != http.StatusNotFound || !strings.HasPrefix(got, "MANIFEST_UNKNOWN") {
						t.Fatalf("pull %d of %s: %d %s, want 404 MANIFEST_UNKNOWN", i, ref, status, got)
					}
				}
				if n := count(path); n != 1 {
					t.Errorf("%s: the upstream was asked %d times for it, want once", ref, n)
				}
			}
			// Another repository's miss is its own.
			if status, _ := pull("library/busybox", d); status != http.StatusNotFound {
				t.Fatalf("busybox: %d, want 404", status)
			}
			if n := count("/v2/library/busybox/manifests/" + d); n != 1 {
				t.Errorf("busybox: the upstream was asked %d times, want once", n)
			}

			// After the window the upstream is asked again.
			now.Add(int64(31 * time.Second))
			if status, _ := pull("library/alpine", d); status != http.StatusNotFound {
				t.Fatalf("after the window: %d, want 404", status)
			}
			if n := count("/v2/library/alpine/manifests/" + d); n != 2 {
				t.Errorf("after the window the upstream was asked %d times in all, want 2", n)
			}

			// An upstream failing is asked again on each pull.
			path := "/v2/library/broken/manifests/" + d
			if status, got := pull("library/broken", d); status != http.StatusServiceUnavailable {
				t.Fatalf("broken: %d %s, want 503", status, got)
			}
			first := count(path)
			if status, got := pull("library/broken", d); status != http.StatusServiceUnavailable {
				t.Fatalf("broken again: %d %s, want 503", status, got)
			}
			if n := count(path); n <= first {
				t.Errorf("a 500 was remembered: the upstream was asked %d times after the second pull, %d after the first", n, first)
			}
		})
	}
}
