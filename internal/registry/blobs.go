package registry

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/storage"
)

func (reg *Registry) blob(w http.ResponseWriter, r *http.Request, rt route) error {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		return reg.getBlob(w, r, rt)
	case http.MethodDelete:
		return reg.deleteBlob(w, r, rt)
	default:
		return notAllowed(w, "GET, HEAD, DELETE")
	}
}

func (reg *Registry) getBlob(w http.ResponseWriter, r *http.Request, rt route) error {
	dec, err := reg.decide(w, r, repoScope(rt.name, ActionPull))
	if err != nil {
		return err
	}
	b, err := reg.meta.Blobs.RepositoryBlob(r.Context(), rt.name, rt.digest)
	if errors.Is(err, meta.ErrBlobNotFound) && reg.proxied(r.Context(), rt.name) {
		b, err = reg.opts.Proxy.Blob(r.Context(), rt.name, rt.digest, reg.puller(r, dec))
	}
	if errors.Is(err, meta.ErrBlobNotFound) {
		return errBlobUnknown
	}
	if err != nil {
		return err
	}
	if b.Held {
		// Only a gate's held content references it.
		if ok, err := reg.maySeeHeld(r, rt.name); err != nil || !ok {
			if err != nil {
				return err
			}
			return errBlobUnknown
		}
	}
	if d := reg.opts.GCDelay; d > 0 && !b.LinkedAt.IsZero() && time.Since(b.LinkedAt) > d/2 {
		// Closes the window GitLab's collector leaves open: a client that
		// saw the blob exist will name it in a manifest without uploading
		// it; confirming the link spares it for another delay.
		ok, err := reg.meta.Blobs.TouchBlobLink(r.Context(), rt.name, rt.digest, time.Now().Add(-d/2))
		switch {
		case err != nil:
			// The link was read: serve the blob, as a manifest is served
			// when its confirmation fails (a busy or full database must
			// not fail pulls; the link is confirmed by a later one).
			reg.log.Warn("confirm blob link", "repository", rt.name, "digest", rt.digest, "err", err)
		case !ok:
			return errBlobUnknown // unlinked meanwhile
		}
	}
	// Only now, with pull permission and held content checked, may the
	// storage's own URL reach the client.
	if done, err := reg.redirectBlob(w, r, b); done || err != nil {
		return err
	}
	h := w.Header()
	h.Set("Docker-Content-Digest", b.Digest.String())
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Accept-Ranges", "bytes")

	start, length, status := int64(0), b.Size, http.StatusOK
	// A Range under an If-Range that is not this blob's ETag (another
	// entity, or a date: no Last-Modified is sent) is ignored: the
	// whole blob (RFC 9110 13.1.5).
	if rng := r.Header.Get("Range"); rng != "" && r.Method == http.MethodGet && ifRangeHolds(r.Header.Get("If-Range"), b.Digest) {
		s, e, ok := parseByteRange(rng, b.Size)
		switch {
		case ok:
			start, length, status = s, e-s+1, http.StatusPartialContent
			h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", s, e, b.Size))
		case s == -1: // unsatisfiable
			h.Set("Content-Range", fmt.Sprintf("bytes */%d", b.Size))
			return errorf(http.StatusRequestedRangeNotSatisfiable, CodeRangeInvalid, "requested range not satisfiable", map[string]int64{"size": b.Size})
		}
		// Otherwise a malformed or multi-range header: serve the whole blob
		// (RFC 9110 lets a server ignore Range).
	}
	h.Set("Content-Length", strconv.FormatInt(length, 10))
	if r.Method == http.MethodHead {
		setCacheable(h, b.Digest)
		w.WriteHeader(http.StatusOK)
		return nil
	}
	var rc io.ReadCloser
	if status == http.StatusPartialContent {
		rc, err = storage.OpenRange(r.Context(), reg.store, storage.BlobPath(b.Digest), start, length)
	} else {
		rc, err = reg.store.Reader(r.Context(), storage.BlobPath(b.Digest), start)
	}
	if err != nil {
		h.Del("Content-Length")
		h.Del("Content-Range")
		switch {
		case errors.Is(err, storage.ErrNotFound):
			reg.log.Error("blob recorded in metadata but missing from storage", "digest", b.Digest, "repository", rt.name)
		case r.Context().Err() != nil:
			// The client went away (containerd cancels parallel
			// fetches): nothing to answer, and no fault of storage.
		case transientStorage(err):
			// S3 unreachable, throttling or timing out: as an upload
			// answers it (docs/storage.md), the client retries.
			reg.log.Error("open blob: storage unavailable", "digest", b.Digest, "repository", rt.name, "err", err)
			return errUnavailable("storage is unavailable; retry this request")
		}
		return fmt.Errorf("open blob: %w", err)
	}
	defer rc.Close()
	setCacheable(h, b.Digest)
	w.WriteHeader(status)
	n, err := reg.sendBlob(w, r, rc, length)
	switch {
	case err != nil:
		reg.log.Debug("blob download interrupted", "digest", b.Digest, "err", err)
	case n < length:
		// The stored bytes end before the recorded size: damaged storage
		// (a push of the blob heals it, see docs/storage.md). The client
		// sees a short body and fails its digest check.
		reg.log.Error("blob shorter in storage than recorded", "digest", b.Digest, "sent", n, "want", length)
	}
	return nil
}

// setCacheable marks an answer with the blob's bytes (200, 206) as what a
// cache may keep for a year: a digest's bytes never change. Only those:
// an error answer (a pull that failed, a range past the end) kept by a
// shared cache would fail anonymous pulls for that long.
func setCacheable(h http.Header, d digest.Digest) {
	h.Set("ETag", `"`+d.String()+`"`)
	h.Set("Cache-Control", "max-age=31536000")
}

// ifRangeHolds reports whether a request's If-Range (absent, or a strong
// ETag equal to the blob's) lets its Range apply.
func ifRangeHolds(ifRange string, d digest.Digest) bool {
	return ifRange == "" || strings.TrimSpace(ifRange) == `"`+d.String()+`"`
}

// parseByteRange parses a single "bytes=a-b", "bytes=a-" or "bytes=-n"
// range. ok is false for a header to ignore; start is -1 for a range that
// cannot be satisfied.
func parseByteRange(h string, size int64) (start, end int64, ok bool) {
	spec, found := strings.CutPrefix(h, "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, 0, false
	}
	a, b, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return 0, 0, false
	}
	if a == "" { // suffix range
		n, err := strconv.ParseInt(b, 10, 64)
		if err != nil || n < 0 {
			return 0, 0, false
		}
		if n == 0 || size == 0 {
			return -1, 0, false
		}
		return max(0, size-n), size - 1, true
	}
	s, err := strconv.ParseInt(a, 10, 64)
	if err != nil || s < 0 {
		return 0, 0, false
	}
	e := size - 1
	if b != "" {
		if e, err = strconv.ParseInt(b, 10, 64); err != nil || e < s {
			return 0, 0, false
		}
	}
	if s >= size {
		return -1, 0, false
	}
	return s, min(e, size-1), true
}

func (reg *Registry) deleteBlob(w http.ResponseWriter, r *http.Request, rt route) error {
	if _, err := reg.authorize(w, r, repoScope(rt.name, ActionDelete)); err != nil {
		return err
	}
	err := reg.meta.Blobs.UnlinkBlob(r.Context(), rt.name, rt.digest)
	if errors.Is(err, meta.ErrBlobNotFound) {
		return errBlobUnknown
	}
	if inUse := inUseError(err); inUse != nil {
		return inUse
	}
	if err != nil {
		return err
	}
	w.Header().Set("Docker-Content-Digest", rt.digest.String())
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
	return nil
}
