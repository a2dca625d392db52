package registry

import (
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/ingest"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
)

func (reg *Registry) manifest(w http.ResponseWriter, r *http.Request, rt route) error {
	ref, err := oci.ParseReference(rt.ref)
	if err != nil {
		if errors.Is(err, oci.ErrInvalidDigest) {
			return errorf(http.StatusBadRequest, CodeDigestInvalid, err.Error(), nil)
		}
		detail := map[string]string{"reference": rt.ref}
		switch r.Method {
		case http.MethodPut:
			return errorf(http.StatusBadRequest, CodeTagInvalid, err.Error(), detail)
		case http.MethodGet, http.MethodHead, http.MethodDelete:
			// No manifest has such a name: unknown (the distribution
			// spec's conformance suite asks for .INVALID_MANIFEST_NAME
			// and wants 404), once the caller may ask.
			action := ActionPull
			if r.Method == http.MethodDelete {
				action = ActionDelete
			}
			if _, err := reg.authorize(w, r, repoScope(rt.name, action)); err != nil {
				return err
			}
			return errorf(http.StatusNotFound, CodeManifestUnknown, err.Error(), detail)
		default:
			return notAllowed(w, "GET, HEAD, PUT, DELETE")
		}
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		return reg.getManifest(w, r, rt, ref)
	case http.MethodPut:
		return reg.putManifest(w, r, rt, ref)
	case http.MethodDelete:
		return reg.deleteManifest(w, r, rt, ref)
	default:
		return notAllowed(w, "GET, HEAD, PUT, DELETE")
	}
}

func (reg *Registry) getManifest(w http.ResponseWriter, r *http.Request, rt route, ref oci.Reference) error {
	dec, err := reg.decide(w, r, repoScope(rt.name, ActionPull))
	if err != nil {
		return err
	}
	m, err := reg.meta.Manifests.GetManifest(r.Context(), rt.name, ref.Tag, ref.Digest, r.Method == http.MethodGet)
	if (err == nil && ref.Tag != "" || errors.Is(err, meta.ErrManifestNotFound)) && reg.proxied(r.Context(), rt.name) {
		var cached *meta.Manifest
		if err == nil {
			cached = &m
		}
		m, err = reg.opts.Proxy.Manifest(r.Context(), rt.name, ref.Tag, ref.Digest, cached, r.Method == http.MethodGet, reg.puller(r, dec))
		if err == nil && r.Method == http.MethodGet && int64(len(m.Content)) != m.Size {
			// The cache's check of the tag was shared with a HEAD and
			// answered the copy that HEAD read, without its body.
			m, err = reg.meta.Manifests.GetManifest(r.Context(), rt.name, "", m.Digest, true)
		}
	}
	if errors.Is(err, meta.ErrManifestNotFound) {
		return errManifestUnk
	}
	if err != nil {
		return err
	}
	if m.Held {
		// A gate's candidate, or what only candidates reach: unknown to
		// whoever may not check it, by tag and by digest alike.
		if ok, err := reg.maySeeHeld(r, rt.name); err != nil || !ok {
			if err != nil {
				return err
			}
			return errManifestUnk
		}
	}
	if !accepts(r.Header.Values("Accept"), m.MediaType) {
		return errorf(http.StatusNotFound, CodeManifestUnknown,
			fmt.Sprintf("the manifest is %s, which the request's Accept header does not include", m.MediaType), nil)
	}
	if d := reg.opts.GCDelay; d > 0 && ref.Digest != "" && !m.CreatedAt.IsZero() && time.Since(latest(m.CreatedAt, m.ConfirmedAt)) > d/2 {
		// As for a blob: a client told a manifest exists by digest (a
		// child of an index it pushes next, which go-containerregistry
		// and buildx HEAD and skip) names it without pushing it;
		// confirming it spares it for another delay.
		ok, err := reg.meta.Manifests.ConfirmManifest(r.Context(), rt.name, m.Digest, time.Now().Add(-d/2))
		switch {
		case err != nil:
			// The manifest was read: serve it (the confirmation is one
			// of many a client's pulls make).
			reg.log.Warn("confirm manifest", "repository", rt.name, "digest", m.Digest, "err", err)
		case !ok:
			return errManifestUnk // deleted meanwhile
		}
	}
	h := w.Header()
	h.Set("Content-Type", m.MediaType)
	h.Set("Content-Length", strconv.FormatInt(m.Size, 10))
	h.Set("Docker-Content-Digest", m.Digest.String())
	h.Set("ETag", `"`+m.Digest.String()+`"`)
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		// Up to 4 MiB held in memory: cut, as a blob's download is, when
		// the client does not take it.
		dl := sendDeadlines(w, r)
		if _, err := (idleWriter{w, dl}).Write(m.Content); err == nil {
			dl.done()
		}
	}
	return nil
}

// accepts reports whether the Accept headers admit a manifest media type.
// No Accept header, or a wildcard, admits anything: a manifest is always
// served as stored, never converted.
func accepts(values []string, mediaType string) bool {
	if len(values) == 0 {
		return true
	}
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil {
				continue
			}
			if mt == mediaType || mt == "*/*" || mt == "application/*" ||
				// Docker clients that accept schema 1 only still get what
				// is stored, as CNCF Distribution answers them.
				mt == oci.MediaTypeDockerSchema1Signed || mt == oci.MediaTypeDockerSchema1 {
				return true
			}
		}
	}
	return false
}

func (reg *Registry) putManifest(w http.ResponseWriter, r *http.Request, rt route, ref oci.Reference) error {
	if reg.proxied(r.Context(), rt.name) {
		return errProxyPush
	}
	who, err := reg.authorize(w, r, repoScope(rt.name, ActionPull, ActionPush))
	if err != nil {
		return err
	}
	in := reg.ingester()
	body, err := in.ReadBody(r.Body, r.ContentLength)
	if err != nil {
		return IngestError(err)
	}
	req := ingest.Request{Repository: rt.name, Body: body, ContentType: r.Header.Get("Content-Type"),
		Digest: ref.Digest, Actor: who.Actor, Create: who.Create}
	if ref.Tag != "" {
		req.Tags = []string{ref.Tag}
	}
	if d := reg.opts.GCDelay; d > 0 {
		// Pushed again, a stored manifest is confirmed, as a HEAD
		// confirms it: the client names it next.
		req.ConfirmBefore = time.Now().Add(-d / 2)
	}
	res, err := in.Ingest(r.Context(), req)
	if err != nil {
		return IngestError(err)
	}
	dg := res.Manifest.Digest
	h := w.Header()
	h.Set("Location", "/v2/"+rt.name+"/manifests/"+dg.String())
	h.Set("Docker-Content-Digest", dg.String())
	h.Set("Content-Length", "0")
	if res.Manifest.Subject != "" {
		h.Set("OCI-Subject", res.Manifest.Subject.String())
	}
	w.WriteHeader(http.StatusCreated)
	return nil
}

// ingester is the one way in for manifests, over the registry's stores
// (a small value: built per push, so the Registry needs no field for it).
func (reg *Registry) ingester() *ingest.Ingester {
	return ingest.New(ingest.Stores{Manifests: reg.meta.Manifests, Blobs: reg.meta.Blobs}, reg.store,
		ingest.Options{Policy: reg.opts.Policy, MaxBytes: reg.opts.MaxManifestBytes})
}

// IngestError answers a refused manifest with the distribution spec's
// codes; anything else is returned as it is.
func IngestError(err error) error {
	var (
		tooLarge  *ingest.TooLargeError
		badDigest *ingest.DigestError
		invalid   *ingest.InvalidError
		refused   *ingest.PolicyError
		missing   *meta.MissingRefsError
		immutable *meta.ImmutableTagError
		quota     *meta.QuotaExceededError
	)
	switch {
	case errors.As(err, &immutable):
		return errorf(http.StatusForbidden, CodeDenied, immutable.Error(), map[string]string{"tag": immutable.Tag})
	case errors.As(err, &quota):
		return errorf(http.StatusForbidden, CodeDenied, quota.Error(), map[string]any{"namespace": quota.Namespace,
			"usage_bytes": quota.Usage, "push_bytes": quota.Added, "limit_bytes": quota.LimitBytes, "threshold_percent": quota.ThresholdPercent})
	case errors.As(err, &tooLarge):
		return errorf(http.StatusRequestEntityTooLarge, CodeManifestInvalid, tooLarge.Error(), nil)
	case errors.As(err, &badDigest) && badDigest.Err == nil:
		return errorf(http.StatusBadRequest, CodeDigestInvalid,
			fmt.Sprintf("manifest digest %s does not match the reference %s", badDigest.Got, badDigest.Want), nil)
	case errors.As(err, &badDigest):
		return errorf(http.StatusBadRequest, CodeDigestInvalid, badDigest.Error(), nil)
	case errors.As(err, &invalid):
		return errorf(http.StatusBadRequest, CodeManifestInvalid, invalid.Error(), nil)
	case errors.As(err, &refused):
		return errorf(http.StatusBadRequest, CodeManifestInvalid, refused.Error(), nil)
	case errors.As(err, &missing):
		return errorf(http.StatusBadRequest, CodeManifestBlobUnknown, missing.Error(),
			map[string]any{"digest": missing.Missing[0].Digest.String(), "unknown": missing.Count})
	}
	return err
}

func (reg *Registry) deleteManifest(w http.ResponseWriter, r *http.Request, rt route, ref oci.Reference) error {
	who, err := reg.authorize(w, r, repoScope(rt.name, ActionDelete))
	if err != nil {
		return err
	}
	if ref.Tag != "" {
		err = reg.meta.Manifests.DeleteTag(r.Context(), rt.name, ref.Tag, who.Actor)
	} else {
		err = reg.meta.Manifests.DeleteManifest(r.Context(), rt.name, ref.Digest, who.Actor)
	}
	if errors.Is(err, meta.ErrManifestNotFound) {
		return errManifestUnk
	}
	if inUse := inUseError(err); inUse != nil {
		return inUse
	}
	var immutable *meta.ImmutableTagError
	if errors.As(err, &immutable) {
		return errorf(http.StatusForbidden, CodeDenied, immutable.Error(), map[string]string{"tag": immutable.Tag})
	}
	if err != nil {
		return err
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// latest is the later of two times.
func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
