package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
)

// pagination reads n and last. n defaults to (and is capped at) the
// registry's page limit.
func (reg *Registry) pagination(r *http.Request) (n int, last string, err error) {
	q := r.URL.Query()
	last = q.Get("last")
	if len(last) > 1024 || !meta.ValidText(last) {
		// No name or tag can hold these, and the database cannot compare
		// them; refuse before any query.
		return 0, "", errorf(http.StatusBadRequest, CodePaginationInvalid, "invalid pagination marker last: too long, a NUL byte or invalid UTF-8", nil)
	}
	n = reg.maxList
	if s := q.Get("n"); s != "" {
		v, perr := strconv.Atoi(s)
		if perr != nil || v < 0 {
			return 0, "", errorf(http.StatusBadRequest, CodePaginationInvalid, fmt.Sprintf("invalid page size n=%q", s), nil)
		}
		n = min(v, reg.maxList)
	}
	return n, last, nil
}

// writeJSON answers v, its body under the request's send idle period
// (sendDeadlines) as a manifest's: a tag list of 10,000 names is over a
// megabyte, which a client that stops reading must not hold for ever.
func writeJSON(w http.ResponseWriter, r *http.Request, contentType string, v any) {
	body, _ := json.Marshal(v)
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		dl := sendDeadlines(w, r)
		if _, err := (idleWriter{w, dl}).Write(body); err == nil {
			dl.done()
		}
	}
}

// setNextLink sets the RFC 5988 Link header to the next page.
func setNextLink(w http.ResponseWriter, path, last string, n int) {
	q := url.Values{"last": {last}, "n": {strconv.Itoa(n)}}
	w.Header().Set("Link", fmt.Sprintf("<%s?%s>; rel=\"next\"", path, q.Encode()))
}

func (reg *Registry) catalog(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return notAllowed(w, "GET, HEAD")
	}
	if _, err := reg.authorize(w, r, Resource{Type: "registry", Name: "catalog", Actions: []string{"*"}}); err != nil {
		return err
	}
	n, last, err := reg.pagination(r)
	if err != nil {
		return err
	}
	repos := []string{}
	if n > 0 {
		if repos, err = reg.meta.Catalog.ListRepositories(r.Context(), last, n+1); err != nil {
			return err
		}
	}
	if len(repos) > n {
		repos = repos[:n]
		setNextLink(w, "/v2/_catalog", repos[n-1], n)
	}
	writeJSON(w, r, "application/json", map[string][]string{"repositories": repos})
	return nil
}

func (reg *Registry) tags(w http.ResponseWriter, r *http.Request, rt route) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return notAllowed(w, "GET, HEAD")
	}
	if _, err := reg.authorize(w, r, repoScope(rt.name, ActionPull)); err != nil {
		return err
	}
	n, last, err := reg.pagination(r)
	if err != nil {
		return err
	}
	// Ask for one more than a page to know whether there is a next page;
	// with n=0 only the repository's existence is checked.
	tags, err := reg.meta.Manifests.ListTags(r.Context(), rt.name, last, n+1)
	if errors.Is(err, meta.ErrRepositoryNotFound) {
		return errNameUnknown
	}
	if err != nil {
		return err
	}
	if len(tags) > n {
		tags = tags[:n]
		if n > 0 {
			setNextLink(w, "/v2/"+rt.name+"/tags/list", tags[n-1], n)
		}
	}
	writeJSON(w, r, "application/json", struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}{rt.name, tags})
	return nil
}

// formatReferrerCursor writes a referrers page's cursor: the last
// referrer shown, "<stored at, Unix microseconds>~<digest>".
func formatReferrerCursor(k meta.ReferrerKey) string {
	return strconv.FormatInt(k.CreatedAt, 10) + "~" + k.Digest
}

// parseReferrerCursor reads formatReferrerCursor's cursor ("": none).
func parseReferrerCursor(s string) (meta.ReferrerKey, error) {
	if s == "" {
		return meta.ReferrerKey{}, nil
	}
	at, dg, ok := strings.Cut(s, "~")
	us, err := strconv.ParseInt(at, 10, 64)
	if ok && err == nil {
		if d, derr := oci.ParseDigest(dg); derr == nil {
			return meta.ReferrerKey{CreatedAt: us, Digest: d.String()}, nil
		}
	}
	return meta.ReferrerKey{}, errorf(http.StatusBadRequest, CodeUnsupported, "last is not a cursor of a referrers page (take the Link header's)", map[string]string{"last": s})
}
