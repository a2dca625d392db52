package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
)

// A referrers page lists referrers a batch at a time: the first of
// firstReferrers (most subjects have a few, and a caller who may not see
// held ones lists at most that many of them: visibleReferrers), each next
// one twice as large up to maxReferrers. They are entries without their
// annotations, a few hundred bytes each.
const (
	firstReferrers = 16
	maxReferrers   = 1024
)

// referrers answers GET /v2/<name>/referrers/<digest>. A page holds
// descriptors up to the manifest size limit (what a client reads an index
// up to: oras-go's default is 4 MiB), at least one; a Link header names
// the next page, as the spec says when the list cannot be returned in one
// response. Referrers a gate holds from the caller are left out
// (visibleReferrers), and the cursor is the last one shown.
//
// The page is sized before any annotations are read, from their stored
// length (each may be up to a manifest's size, and whoever may push may
// attach thousands); then only the annotations of the referrers it holds
// are read, and sent as stored: the JSON encoding/json made of them on
// push, as a descriptor's annotations are encoded.
func (reg *Registry) referrers(w http.ResponseWriter, r *http.Request, rt route) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return notAllowed(w, "GET, HEAD")
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
	ctx := r.Context()
	store := reg.meta.Referrers
	pager := &visibleReferrers{reg: reg, r: r, store: store}
	page, full, err := referrersPage(ctx, pager, meta.ReferrerQuery{Repository: rt.name, Subject: rt.digest, ArtifactType: artifactType, After: after, N: firstReferrers},
		reg.opts.MaxManifestBytes-256)
	if err != nil {
		return err
	}
	var annotated []digest.Digest
	for _, d := range page {
		if d.entry.AnnotationsLen > 0 {
			annotated = append(annotated, d.entry.Digest)
		}
	}
	annotations, err := store.ReferrerAnnotations(ctx, rt.name, annotated)
	if err != nil {
		return err
	}
	if full {
		q := url.Values{"last": {formatReferrerCursor(page[len(page)-1].entry.Key)}}
		if artifactType != "" {
			q.Set("artifactType", artifactType)
		}
		w.Header().Set("Link", fmt.Sprintf("<%s?%s>; rel=\"next\"", "/v2/"+rt.name+"/referrers/"+rt.digest.String(), q.Encode()))
	}
	if artifactType != "" {
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	writeReferrers(w, r, page, annotations)
	return nil
}

// pageReferrer is a referrer a page holds, its descriptor's JSON but for
// the annotations: head (up to its size), tail (its artifact type and the
// closing brace).
type pageReferrer struct {
	entry      meta.ReferrerEntry
	head, tail []byte
}

// annotationsKey is what a descriptor's annotations follow.
const annotationsKey = `,"annotations":`

// referrersPage lists q's referrers the caller may see, as many as fit
// in budget bytes of descriptors (at least one); full says more follow.
func referrersPage(ctx context.Context, pager *visibleReferrers, q meta.ReferrerQuery, budget int64) (page []pageReferrer, full bool, err error) {
	used := int64(0)
	for {
		entries, err := pager.entries(ctx, q)
		if err != nil {
			return nil, false, err
		}
		for _, e := range entries {
			q.After = e.Key
			if e.Held && !pager.seesHeld {
				continue // visibleReferrers returns none to such a caller; kept out regardless
			}
			p := describe(e)
			size := int64(len(p.head) + len(p.tail))
			if e.AnnotationsLen > 0 {
				size += int64(len(annotationsKey)) + e.AnnotationsLen
			}
			if len(page) > 0 && used+size+1 > budget {
				return page, true, nil
			}
			page, used = append(page, p), used+size+1
		}
		if len(entries) < q.N {
			return page, false, nil
		}
		q.N = min(2*q.N, maxReferrers)
	}
}

// describe encodes a referrer's descriptor as oci.Descriptor is encoded,
// less its annotations: the fields before them, and after.
func describe(e meta.ReferrerEntry) pageReferrer {
	head, _ := json.Marshal(struct {
		MediaType string        `json:"mediaType"`
		Digest    digest.Digest `json:"digest"`
		Size      int64         `json:"size"`
	}{e.MediaType, e.Digest, e.Size})
	p := pageReferrer{entry: e, head: head[:len(head)-1], tail: []byte("}")}
	if e.ArtifactType != "" {
		at, _ := json.Marshal(e.ArtifactType)
		p.tail = slices.Concat([]byte(`,"artifactType":`), at, p.tail)
	}
	return p
}

// writeReferrers writes the page's image index, each referrer's stored
// annotations as they are (a referrer whose annotations are gone was
// deleted since it was listed: left out), under the request's send idle
// period (sendDeadlines) as a manifest is: a client that does not take
// it has it cut.
func writeReferrers(w http.ResponseWriter, r *http.Request, page []pageReferrer, annotations map[digest.Digest]string) {
	prefix := `{"schemaVersion":2,"mediaType":"` + oci.MediaTypeImageIndex + `","manifests":[`
	const suffix = "]}"
	page = slices.DeleteFunc(page, func(p pageReferrer) bool {
		_, ok := annotations[p.entry.Digest]
		return p.entry.AnnotationsLen > 0 && !ok
	})
	length := len(prefix) + len(suffix) + max(len(page)-1, 0)
	for _, p := range page {
		length += len(p.head) + len(p.tail)
		if a, ok := annotations[p.entry.Digest]; ok {
			length += len(annotationsKey) + len(a)
		}
	}
	w.Header().Set("Content-Type", oci.MediaTypeImageIndex)
	w.Header().Set("Content-Length", strconv.Itoa(length))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	dl := sendDeadlines(w, r)
	sw := idleStringWriter{w: w, dl: dl}
	sw.write(prefix)
	for i, p := range page {
		if i > 0 {
			sw.write(",")
		}
		sw.writeBytes(p.head)
		if a, ok := annotations[p.entry.Digest]; ok {
			sw.write(annotationsKey)
			sw.write(a)
		}
		sw.writeBytes(p.tail)
	}
	sw.write(suffix)
	if sw.err == nil {
		dl.done()
	}
}

// idleStringWriter writes strings in pieces of at most sendPiece bytes,
// each under a fresh write deadline (as idleWriter), without copying
// them; after an error it writes nothing.
type idleStringWriter struct {
	w   io.Writer
	dl  deadlines
	err error
}

func (sw *idleStringWriter) write(s string) {
	for len(s) > 0 && sw.err == nil {
		k := min(len(s), sendPiece)
		sw.dl.arm()
		_, sw.err = io.WriteString(sw.w, s[:k])
		s = s[k:]
	}
}

func (sw *idleStringWriter) writeBytes(b []byte) {
	if sw.err == nil {
		_, sw.err = idleWriter{sw.w, sw.dl}.Write(b)
	}
}

// visibleReferrers pages a subject's referrers for one request's caller:
// as stored until a batch shows a held one; then, once the caller is
// found not to see held content (asked once, and only then: most
// repositories have no gate), only readable ones, the held left out by
// the query, that batch read again. A caller who may not see held
// referrers so lists at most one batch of them, however many there are.
type visibleReferrers struct {
	reg             *Registry
	r               *http.Request
	store           ReferrerReader
	asked, seesHeld bool
}

func (v *visibleReferrers) entries(ctx context.Context, q meta.ReferrerQuery) ([]meta.ReferrerEntry, error) {
	if v.asked && !v.seesHeld {
		q.Readable = true
		return v.store.ReferrerEntries(ctx, q)
	}
	entries, err := v.store.ReferrerEntries(ctx, q)
	if err != nil || v.asked || !slices.ContainsFunc(entries, func(e meta.ReferrerEntry) bool { return e.Held }) {
		return entries, err
	}
	if v.seesHeld, err = v.reg.maySeeHeld(v.r, q.Repository); err != nil {
		return nil, err
	}
	v.asked = true
	if v.seesHeld {
		return entries, nil
	}
	q.Readable = true
	return v.store.ReferrerEntries(ctx, q)
}
