package registry_test

import (
	"net/http"
	"testing"

	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/registry"
)

// TestMethodNotAllowedSaysAllow sends each route a method it does not
// serve: 405 UNSUPPORTED, with the Allow header that RFC 9110 requires
// naming the methods it does.
func TestMethodNotAllowedSaysAllow(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			reg := newRegistry(t, dialect, registry.Options{})
			resp, body := reg.do("POST", "/v2/app/blobs/uploads/", nil)
			if resp.StatusCode != http.StatusAccepted {
				t.Fatalf("start an upload: %d %s", resp.StatusCode, body)
			}
			session := resp.Header.Get("Location")
			const d = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
			for _, c := range []struct{ method, path, allow string }{
				{"POST", "/v2/", "GET, HEAD"},
				{"PUT", "/v2/_catalog", "GET, HEAD"},
				{"DELETE", "/v2/app/tags/list", "GET, HEAD"},
				{"PUT", "/v2/app/referrers/" + d, "GET, HEAD"},
				{"PATCH", "/v2/app/manifests/v1", "GET, HEAD, PUT, DELETE"},
				{"POST", "/v2/app/blobs/" + d, "GET, HEAD, DELETE"},
				{"GET", "/v2/app/blobs/uploads/", "POST"},
				{"POST", session, "GET, HEAD, PATCH, PUT, DELETE"},
			} {
				resp, body := reg.do(c.method, c.path, nil)
				expectError(t, resp, body, http.StatusMethodNotAllowed, registry.CodeUnsupported)
				if got := resp.Header.Get("Allow"); got != c.allow {
					t.Errorf("%s %s: Allow %q, want %q", c.method, c.path, got, c.allow)
				}
			}
		})
	}
}
