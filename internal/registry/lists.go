package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"

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

func writeJSON(w http.ResponseWriter, r *http.Request, contentType string, v any) {
	body, _ := json.Marshal(v)
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}

// setNextLink sets the RFC 5988 Link header to the next page.
func setNextLink(w http.ResponseWriter, path, last string, n int) {
	q := url.Values{"last": {last}, "n": {strconv.Itoa(n)}}
	w.Header().Set("Link", fmt.Sprintf("<%s?%s>; rel=\"next\"", path, q.Encode()))
}

func (reg *Registry) catalog(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return errUnsupported
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
		return errUnsupported
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

func (reg *Registry) referrers(w http.ResponseWriter, r *http.Request, rt route) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return errUnsupported
	}
	if _, err := reg.authorize(w, r, repoScope(rt.name, ActionPull)); err != nil {
		return err
	}
	artifactType := r.URL.Query().Get("artifactType")
	if artifactType != "" && !oci.ValidMediaType(artifactType) {
		return errorf(http.StatusBadRequest, CodeUnsupported, "artifactType is not a media type", map[string]string{"artifactType": artifactType})
	}
	after, err := parseReferrerCursor(r.URL.Query().Get("last"))
	if err != nil {
		return err
	}
	// A page holds descriptors up to the manifest size limit (what a
	// client reads an index up to: oras-go's default is 4 MiB), at least
	// one; a Link header names the next page, as the spec says when the
	// list cannot be returned in one response. Referrers a gate holds
	// from the caller are left out (visibleReferrers), and the cursor is
	// the last one shown.
	budget := reg.opts.MaxManifestBytes - 256
	descs := make([]oci.Descriptor, 0)
	used := 0
	var last meta.ReferrerKey
	full := false
	pager := &visibleReferrers{reg: reg, r: r}
	err = meta.EachReferrer(r.Context(), pager, rt.name, rt.digest, artifactType, after, func(m meta.Manifest) (bool, error) {
		if m.Held && !pager.seesHeld {
			return true, nil // visibleReferrers returns none to such a caller; kept out regardless
		}
		d := oci.Descriptor{MediaType: m.MediaType, Digest: m.Digest, Size: m.Size, ArtifactType: m.ArtifactType, Annotations: m.Annotations}
		b, _ := json.Marshal(d)
		if len(descs) > 0 && int64(used+len(b)+1) > budget {
			full = true
			return false, nil
		}
		descs, used, last = append(descs, d), used+len(b)+1, m.ReferrerKey()
		return true, nil
	})
	if err != nil {
		return err
	}
	if full {
		q := url.Values{"last": {formatReferrerCursor(last)}}
		if artifactType != "" {
			q.Set("artifactType", artifactType)
		}
		w.Header().Set("Link", fmt.Sprintf("<%s?%s>; rel=\"next\"", "/v2/"+rt.name+"/referrers/"+rt.digest.String(), q.Encode()))
	}
	if artifactType != "" {
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	writeJSON(w, r, oci.MediaTypeImageIndex, struct {
		SchemaVersion int              `json:"schemaVersion"`
		MediaType     string           `json:"mediaType"`
		Manifests     []oci.Descriptor `json:"manifests"`
	}{2, oci.MediaTypeImageIndex, descs})
	return nil
}

// visibleReferrers pages a subject's referrers for one request's caller:
// as stored until a batch shows a held one; then, once the caller is
// found not to see held content (asked once, and only then: most
// repositories have no gate), only readable ones, the held left out by
// the query, that batch read again. A caller who may not see held
// referrers so reads at most one batch of them, however many there are
// (each may carry annotations up to a manifest's size).
type visibleReferrers struct {
	reg             *Registry
	r               *http.Request
	asked, seesHeld bool
}

func (v *visibleReferrers) ReferrersAfter(ctx context.Context, repo string, d digest.Digest, artifactType string, after meta.ReferrerKey, n int) ([]meta.Manifest, error) {
	store := v.reg.meta.Manifests
	if v.asked && !v.seesHeld {
		return store.ReadableReferrersAfter(ctx, repo, d, artifactType, after, n)
	}
	refs, err := store.ReferrersAfter(ctx, repo, d, artifactType, after, n)
	if err != nil || v.asked || !slices.ContainsFunc(refs, func(m meta.Manifest) bool { return m.Held }) {
		return refs, err
	}
	if v.seesHeld, err = v.reg.maySeeHeld(v.r, repo); err != nil {
		return nil, err
	}
	v.asked = true
	if v.seesHeld {
		return refs, nil
	}
	return store.ReadableReferrersAfter(ctx, repo, d, artifactType, after, n)
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
