package registry

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/storage"
)

func (reg *Registry) manifest(w http.ResponseWriter, r *http.Request, rt route) error {
	ref, err := oci.ParseReference(rt.ref)
	if err != nil {
		if errors.Is(err, oci.ErrInvalidDigest) {
			return errorf(http.StatusBadRequest, CodeDigestInvalid, err.Error(), nil)
		}
		return errorf(http.StatusBadRequest, CodeManifestInvalid, err.Error(), map[string]string{"reference": rt.ref})
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		return reg.getManifest(w, r, rt, ref)
	case http.MethodPut:
		return reg.putManifest(w, r, rt, ref)
	case http.MethodDelete:
		return reg.deleteManifest(w, r, rt, ref)
	default:
		return errUnsupported
	}
}

func (reg *Registry) getManifest(w http.ResponseWriter, r *http.Request, rt route, ref oci.Reference) error {
	if _, err := reg.authorize(w, r, repoScope(rt.name, ActionPull)); err != nil {
		return err
	}
	m, err := reg.meta.Manifests.GetManifest(r.Context(), rt.name, ref.Tag, ref.Digest, r.Method == http.MethodGet)
	if (err == nil && ref.Tag != "" || errors.Is(err, meta.ErrManifestNotFound)) && reg.proxied(r.Context(), rt.name) {
		var cached *meta.Manifest
		if err == nil {
			cached = &m
		}
		m, err = reg.opts.Proxy.Manifest(r.Context(), rt.name, ref.Tag, ref.Digest, cached, r.Method == http.MethodGet)
	}
	if errors.Is(err, meta.ErrManifestNotFound) {
		return errManifestUnk
	}
	if err != nil {
		return err
	}
	if !accepts(r.Header.Values("Accept"), m.MediaType) {
		return errorf(http.StatusNotFound, CodeManifestUnknown,
			fmt.Sprintf("the manifest is %s, which the request's Accept header does not include", m.MediaType), nil)
	}
	h := w.Header()
	h.Set("Content-Type", m.MediaType)
	h.Set("Content-Length", strconv.FormatInt(m.Size, 10))
	h.Set("Docker-Content-Digest", m.Digest.String())
	h.Set("ETag", `"`+m.Digest.String()+`"`)
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		w.Write(m.Content)
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
	limit := reg.opts.MaxManifestBytes
	if r.ContentLength > limit {
		return errorf(http.StatusRequestEntityTooLarge, CodeManifestInvalid,
			fmt.Sprintf("manifest of %d bytes exceeds the limit of %d bytes", r.ContentLength, limit), nil)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return fmt.Errorf("read manifest: %w", err)
	}
	if int64(len(body)) > limit {
		return errorf(http.StatusRequestEntityTooLarge, CodeManifestInvalid,
			fmt.Sprintf("manifest exceeds the limit of %d bytes", limit), nil)
	}
	var dg digest.Digest
	if ref.Digest != "" && ref.Digest.Algorithm() == digest.SHA512 {
		sum := sha512.Sum512(body)
		dg = digest.NewDigestFromBytes(digest.SHA512, sum[:])
	} else {
		sum := sha256.Sum256(body)
		dg = digest.NewDigestFromBytes(digest.SHA256, sum[:])
	}
	if ref.Digest != "" && ref.Digest != dg {
		return errorf(http.StatusBadRequest, CodeDigestInvalid,
			fmt.Sprintf("manifest digest %s does not match the reference %s", dg, ref.Digest), nil)
	}
	m, err := oci.ParseManifest(body, r.Header.Get("Content-Type"))
	if err != nil {
		return errorf(http.StatusBadRequest, CodeManifestInvalid, err.Error(), nil)
	}
	if err := reg.opts.Policy.Check(m); err != nil {
		return errorf(http.StatusBadRequest, CodeManifestInvalid, err.Error(), nil)
	}
	refs := manifestRefs(m)
	put := meta.PutManifest{
		Repository: rt.name, Tag: ref.Tag, Actor: who.Actor, Create: who.Create, Refs: refs,
		Manifest: meta.Manifest{Digest: dg, MediaType: m.MediaType, ArtifactType: m.EffectiveArtifactType(),
			Content: body, Annotations: m.Annotations},
	}
	if m.Config != nil && m.Config.Digest == oci.EmptyJSONDigest {
		// The empty descriptor's content is known; clients that skip
		// uploading it still get a complete manifest. It is linked in the
		// push's own transaction, so a refused push leaves nothing.
		b, err := reg.ensureEmptyBlob(r.Context())
		if err != nil {
			return err
		}
		put.LinkBlobs = append(put.LinkBlobs, b)
	}
	if m.Subject != nil {
		put.Manifest.Subject = m.Subject.Digest
	}
	err = reg.meta.Manifests.PutManifest(r.Context(), put)
	if errors.Is(err, meta.ErrBlobNotFound) && len(put.LinkBlobs) > 0 {
		// The empty blob was collected between storing and linking it:
		// store it again, once.
		if _, err = reg.ensureEmptyBlob(r.Context()); err == nil {
			err = reg.meta.Manifests.PutManifest(r.Context(), put)
		}
	}
	var missing *meta.MissingRefsError
	if errors.As(err, &missing) {
		return errorf(http.StatusBadRequest, CodeManifestBlobUnknown, missing.Error(),
			map[string]any{"digest": missing.Missing[0].Digest.String(), "unknown": missing.Count})
	}
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Location", "/v2/"+rt.name+"/manifests/"+dg.String())
	h.Set("Docker-Content-Digest", dg.String())
	h.Set("Content-Length", "0")
	if m.Subject != nil {
		h.Set("OCI-Subject", m.Subject.Digest.String())
	}
	w.WriteHeader(http.StatusCreated)
	return nil
}

// manifestRefs lists what a manifest needs in its repository: its blobs,
// or for an index its child manifests. The subject is not required.
func manifestRefs(m *oci.Manifest) []meta.Ref {
	var refs []meta.Ref
	seen := map[digest.Digest]bool{}
	add := func(d digest.Digest, isManifest bool) {
		if !seen[d] {
			seen[d] = true
			refs = append(refs, meta.Ref{Digest: d, IsManifest: isManifest})
		}
	}
	for _, b := range m.Blobs() {
		add(b.Digest, false)
	}
	for _, c := range m.Manifests {
		add(c.Digest, isManifestMediaType(c.MediaType))
	}
	return refs
}

func isManifestMediaType(t string) bool {
	switch t {
	case oci.MediaTypeImageManifest, oci.MediaTypeImageIndex, oci.MediaTypeDockerManifest, oci.MediaTypeDockerList:
		return true
	}
	return false
}

// ensureEmptyBlob stores the empty JSON blob's bytes if the registry does
// not have them yet (under the garbage-collection protocol).
func (reg *Registry) ensureEmptyBlob(ctx context.Context) (meta.Blob, error) {
	d := digest.Digest(oci.EmptyJSONDigest)
	b := meta.Blob{Digest: d, Size: int64(len(oci.EmptyJSON))}
	if _, err := reg.meta.Blobs.StoredBlob(ctx, d); err == nil {
		return b, nil
	}
	place := func(ctx context.Context) error { return reg.store.PutContent(ctx, blobPath(d), oci.EmptyJSON) }
	if _, err := reg.meta.Blobs.StoreBlob(ctx, "", b, "", meta.Writer{}, place, storage.DeleteBlob(reg.store, d)); err != nil {
		return meta.Blob{}, err
	}
	return b, nil
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
	if err != nil {
		return err
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
	return nil
}
