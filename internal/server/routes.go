package server

import (
	"net/http"
	"strings"

	"github.com/berth-dev/berth/internal/authz"
)

// routes sends /v2 requests (but the token endpoint, /v2/auth) straight to
// the registry, whose router answers
// every path it refuses with a spec error, and everything else to mux.
// http.ServeMux would "clean" a /v2 path holding "..", "//" or "/./" and
// answer a 307 redirect with an HTML body, which no registry client
// expects; for the other paths, an unclean one is refused with 400.
func routes(mux *http.ServeMux, registry http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if (p == "/v2" || strings.HasPrefix(p, "/v2/")) && p != authz.TokenPath {
			registry.ServeHTTP(w, r)
			return
		}
		if !cleanPath(p) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"status":400,"error_type":"invalid_request","error_message":"the path holds an empty, \".\" or \"..\" segment","title":"invalid_request"}` + "\n"))
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// cleanPath reports whether an absolute path has no empty, "." or ".."
// segment (a trailing slash is allowed).
func cleanPath(p string) bool {
	if !strings.HasPrefix(p, "/") {
		return false
	}
	segs := strings.Split(p[1:], "/")
	for i, s := range segs {
		if s == "." || s == ".." || (s == "" && i != len(segs)-1) {
			return false
		}
	}
	return true
}
