package api

import (
	"bytes"
	"context"
	"net/http"
	"path"
	"strings"

	"github.com/berth-dev/berth/internal/auth"
)

// actingKey carries the identity of an in-process request (Act); no HTTP
// request can set it.
type actingKey struct{}

// Act serves one API request in-process as id: the web UI's pages and
// forms call it so that each of their actions runs the API's very handler,
// with its validation, permission decision and audit entry, instead of a
// copy of its rules. remoteAddr is the browser's address (the audit log's
// IP); body is the JSON request body or nil. It returns the answer's status
// and body.
func (a *API) Act(ctx context.Context, id auth.Identity, remoteAddr, method, path string, body []byte) (int, []byte) {
	r, err := http.NewRequestWithContext(context.WithValue(ctx, actingKey{}, id), method, path, bytes.NewReader(body))
	if err != nil {
		return http.StatusBadRequest, []byte(`{"error_message":"malformed request path"}`)
	}
	// A name of "." or ".." (or an empty one) would make the path one that
	// the mux answers with a redirect to its cleaned form, never running
	// the handler: say what is wrong instead.
	if p := r.URL.Path; p != "/" && cleanPath(p) != p {
		return http.StatusBadRequest, []byte(`{"error_message":"a name may not be empty, \".\" or \"..\""}`)
	}
	if body != nil {
		r.Header.Set("Content-Type", "application/json")
	}
	r.RemoteAddr = remoteAddr
	w := &recorder{header: http.Header{}}
	a.ServeHTTP(w, r)
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.status, w.body.Bytes()
}

// actingIdentity returns the identity Act set, if any.
func actingIdentity(r *http.Request) (auth.Identity, bool) {
	id, ok := r.Context().Value(actingKey{}).(auth.Identity)
	return id, ok
}

// recorder is the ResponseWriter of Act.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (w *recorder) Header() http.Header { return w.header }

func (w *recorder) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *recorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.body.Write(b)
}

// cleanPath is p as http.ServeMux would have it: cleaned, with its
// trailing slash kept.
func cleanPath(p string) string {
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}
