package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/ingest"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/storage"
)

// refusedUpstream turns the SSRF guard's refusal of the upstream into an
// answer the pulling client prints (the spec's DENIED with the guard's
// reason, which names notifications.allowedHosts) rather than an internal
// error: the registry declines to fetch there, and retrying cannot help.
func refusedUpstream(err error) error {
	var re *events.RefusedError
	if !errors.As(err, &re) {
		return err
	}
	return &registry.Error{Status: http.StatusForbidden, Code: registry.CodeDenied,
		Message: "the proxy cache's upstream registry is not allowed: " + re.Error()}
}

// ErrDigestMismatch is returned when upstream bytes do not match their
// digest: nothing is stored.
var ErrDigestMismatch = storage.ErrDigestMismatch

// Manifest answers a pull of a manifest in a proxied repository: by tag
// or by digest (exactly one set). cached is what the repository has
// (nil if nothing). A cached digest is served as is; a cached tag is
// served until its entry is older than the organization's expiration,
// then checked upstream with a HEAD and refetched if the upstream digest
// changed. If upstream cannot be reached, a cached tag is served stale.
// Concurrent identical requests share one upstream fetch.
func (s *Service) Manifest(ctx context.Context, repo, tag string, d digest.Digest, cached *meta.Manifest, withContent bool) (meta.Manifest, error) {
	pc, path, ok := s.lookup(ctx, repo)
	if !ok || (cached != nil && tag == "") {
		if cached != nil {
			return *cached, nil
		}
		return meta.Manifest{}, meta.ErrManifestNotFound
	}
	if cached != nil {
		_, checked, err := s.db.Caches.ProxyTagChecked(ctx, repo, tag)
		if err == nil && s.opts.Now().Sub(checked) < time.Duration(pc.ExpirationS)*time.Second {
			return *cached, nil
		}
	}
	key := "m\x00" + repo + "\x00" + tag + "\x00" + d.String()
	v, err, _ := s.flight.Do(key, func() (any, error) {
		fctx := context.WithoutCancel(ctx)
		up, err := s.upstreamOf(fctx, pc, path)
		if err != nil {
			return nil, err
		}
		if tag == "" {
			return s.fetchManifest(fctx, up, repo, "", d)
		}
		if cached != nil {
			desc, err := remote.Head(up.repo.Tag(tag), up.opts...)
			if err != nil {
				s.log.Warn("proxy cache: upstream check failed; serving the cached tag", "repository", repo, "tag", tag, "err", err)
				return *cached, nil
			}
			if digest.Digest(desc.Digest.String()) == cached.Digest {
				if err := s.db.Caches.TouchProxyTag(fctx, repo, tag, cached.Digest, s.opts.Now()); err != nil {
					return nil, err
				}
				return *cached, nil
			}
		}
		m, err := s.fetchManifest(fctx, up, repo, tag, "")
		if err != nil && cached != nil {
			s.log.Warn("proxy cache: upstream fetch failed; serving the cached tag", "repository", repo, "tag", tag, "err", err)
			return *cached, nil
		}
		return m, err
	})
	if err != nil {
		return meta.Manifest{}, refusedUpstream(err)
	}
	m := v.(meta.Manifest)
	if !withContent {
		m.Content = nil
	}
	return m, nil
}

// fetchManifest fetches one manifest (by tag, or by digest) and stores
// it through the one ingest function, ahead of its references (which are
// fetched when first asked for); the tag, if any, moves to it.
func (s *Service) fetchManifest(ctx context.Context, up upstream, repo, tag string, d digest.Digest) (meta.Manifest, error) {
	var src name.Reference = up.repo.Digest(d.String())
	if tag != "" {
		src = up.repo.Tag(tag)
	}
	ref := src.String()
	desc, err := remote.Get(src, up.opts...)
	if err != nil {
		if notFound(err) {
			return meta.Manifest{}, fmt.Errorf("upstream %s: %w", ref, meta.ErrManifestNotFound)
		}
		return meta.Manifest{}, fmt.Errorf("fetch %s: %w", ref, err)
	}
	// The body must have the digest asked for, or else the one upstream
	// gave for the tag.
	want := d
	if want == "" {
		want = digest.Digest(desc.Digest.String())
	}
	req := ingest.Request{Repository: repo, Body: desc.Manifest, ContentType: string(desc.MediaType), Digest: want}
	if tag != "" {
		req.Tags = []string{tag}
	}
	res, err := s.ingester().Ingest(ctx, req, ingest.Cache(s.opts.Now()))
	if err != nil {
		return meta.Manifest{}, fmt.Errorf("upstream manifest %s: %w", ref, err)
	}
	s.log.Info("proxy cache: stored manifest", "repository", repo, "tag", tag, "digest", res.Manifest.Digest, "upstream", ref)
	return res.Manifest, nil
}

// ingester is the one way in for manifests, storing ahead of the
// references (ingest.Cache) through the cache's stores.
func (s *Service) ingester() *ingest.Ingester {
	return ingest.New(ingest.Stores{Cache: s.db.Caches, Blobs: s.db.Blobs}, s.store,
		ingest.Options{Policy: s.opts.Policy, MaxBytes: s.opts.MaxManifestBytes})
}

// Blob makes a blob of a proxied repository available: only one a
// manifest cached in the repository refers to. A blob Berth stores
// anywhere is linked; otherwise it is downloaded upstream into storage,
// verified, then linked. Concurrent requests for one digest in this
// process share one download; across replicas each replica may download
// it once (the blob path is content-addressed, so the writes agree).
func (s *Service) Blob(ctx context.Context, repo string, d digest.Digest) (meta.Blob, error) {
	pc, path, ok := s.lookup(ctx, repo)
	if !ok {
		return meta.Blob{}, meta.ErrBlobNotFound
	}
	if ok, err := s.db.Caches.ProxyReferenced(ctx, repo, d); err != nil {
		return meta.Blob{}, err
	} else if !ok {
		return meta.Blob{}, meta.ErrBlobNotFound
	}
	v, err, _ := s.flight.Do("b\x00"+d.String(), func() (any, error) {
		// The download outlives the request that started it: others wait
		// on it.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.BlobTimeout)
		defer cancel()
		if b, err := s.db.Blobs.StoredBlob(fctx, d); err == nil {
			return b, nil
		}
		up, err := s.upstreamOf(fctx, pc, path)
		if err != nil {
			return nil, err
		}
		layer, err := remote.Layer(up.repo.Digest(d.String()), up.opts...)
		if err != nil {
			return nil, fmt.Errorf("upstream blob %s: %w", d, err)
		}
		rc, err := layer.Compressed()
		if err != nil {
			if notFound(err) {
				return nil, fmt.Errorf("upstream blob %s: %w", d, meta.ErrBlobNotFound)
			}
			return nil, fmt.Errorf("fetch blob %s: %w", d, err)
		}
		defer rc.Close()
		// Stored and linked while still in the flight (so that a request
		// arriving just after finds it), under the garbage-collection
		// protocol.
		n, err := storage.Ingest(fctx, s.store, rc, d, func(ctx context.Context, staged string, n int64) error {
			_, err := s.db.Blobs.StoreBlob(ctx, repo, meta.Blob{Digest: d, Size: n}, "", meta.Writer{},
				storage.Staged(s.store, staged, d))
			return err
		})
		if err != nil {
			if notFound(err) {
				return nil, fmt.Errorf("upstream blob %s: %w", d, meta.ErrBlobNotFound)
			}
			return nil, fmt.Errorf("fetch blob %s: %w", d, err)
		}
		b := meta.Blob{Digest: d, Size: n}
		s.log.Info("proxy cache: stored blob", "repository", repo, "digest", d, "size", n)
		return b, nil
	})
	if err != nil {
		return meta.Blob{}, refusedUpstream(err)
	}
	b := v.(meta.Blob)
	if err := s.db.Blobs.LinkBlob(ctx, repo, b, "", meta.Writer{}); err != nil {
		return meta.Blob{}, err
	}
	return b, nil
}
