package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/ingest"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/storage"
)

// share runs fn once for every concurrent caller with the same key (one
// upstream fetch however many clients ask), and returns when it is done
// or when this caller's request ends: a client that gives up stops
// waiting, while the fetch goes on for the others.
func (s *Service) share(ctx context.Context, key string, fn func() (any, error)) (any, error) {
	ch := s.flight.DoChan(key, fn)
	select {
	case r := <-ch:
		return r.Val, r.Err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// upstreamRetry is the Retry-After of an upstream that rate-limits or
// fails: the upstream's own is not known here (go-containerregistry's
// errors keep no headers).
const upstreamRetry = time.Minute

// upstreamError turns what went wrong upstream into the answer a pulling
// client acts on and prints, never an internal error:
//   - the SSRF guard refusing the upstream: DENIED with the guard's reason
//     (which names notifications.allowedHosts); retrying cannot help;
//   - the upstream refusing access (401, 403: Docker Hub's answer for a
//     repository that does not exist, or credentials that do not reach
//     it): unknown content, saying so;
//   - rate limiting (429): TOOMANYREQUESTS with Retry-After; so is a
//     manifest fetch or blob download that found no turn among the
//     organization's (errBusy);
//   - the upstream failing (5xx), out of reach or timing out, or serving
//     bytes that do not match their digest: 503 UNAVAILABLE with
//     Retry-After;
//   - a manifest this registry refuses (schema 1, the allow-list, too
//     large): the spec's refusal, saying it came from upstream.
//
// Content past the organization's quota is 403 DENIED. Anything else
// (Berth's own storage or database) is returned as it is.
func upstreamError(err error, blob bool) error {
	var quota *meta.QuotaExceededError
	if errors.As(err, &quota) {
		return registry.IngestError(err) // 403 DENIED: the organization's quota, not the upstream
	}
	if errors.Is(err, errBusy) {
		what := "manifest fetches"
		if blob {
			what = "blob downloads"
		}
		return &registry.Error{Status: http.StatusTooManyRequests, Code: registry.CodeTooManyRequests, RetryAfter: busyRetry,
			Message: "too many upstream " + what + " of this proxy cache organization are running; retry later"}
	}
	var re *events.RefusedError
	if errors.As(err, &re) {
		return &registry.Error{Status: http.StatusForbidden, Code: registry.CodeDenied,
			Message: "the proxy cache's upstream registry is not allowed: " + re.Error()}
	}
	unknown := registry.CodeManifestUnknown
	if blob {
		unknown = registry.CodeBlobUnknown
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		switch {
		case terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden:
			return &registry.Error{Status: http.StatusNotFound, Code: unknown, Message: fmt.Sprintf(
				"the upstream registry refused access (%d): the repository may not exist there, or the proxy cache's credentials do not reach it", terr.StatusCode)}
		case terr.StatusCode == http.StatusTooManyRequests:
			return &registry.Error{Status: http.StatusTooManyRequests, Code: registry.CodeTooManyRequests, RetryAfter: upstreamRetry,
				Message: "the upstream registry is rate-limiting this registry's pulls; retry later"}
		case terr.StatusCode >= 500:
			return upstreamUnavailable(fmt.Sprintf("the upstream registry failed (%d); retry later", terr.StatusCode))
		}
	}
	if errors.Is(err, storage.ErrStalled) {
		return upstreamUnavailable("the upstream registry stopped sending the blob; retry later")
	}
	if errors.Is(err, ErrDigestMismatch) {
		return upstreamUnavailable("the upstream registry served bytes that do not match their digest; nothing was stored")
	}
	if !blob {
		// Before the network errors: a manifest refused as it was read
		// (too large) comes wrapped in one.
		var e *registry.Error
		if errors.As(registry.IngestError(err), &e) {
			u := *e
			u.Message = "the upstream's manifest is refused here: " + e.Message
			return &u
		}
	}
	var nerr net.Error
	if errors.As(err, &nerr) || errors.Is(err, context.DeadlineExceeded) {
		return upstreamUnavailable("the upstream registry cannot be reached; retry later")
	}
	return err
}

// upstreamFailed logs an upstream failure the client is told about (the
// operator sees the upstream's own words) and returns answer.
func (s *Service) upstreamFailed(repo string, answer, err error) error {
	var e *registry.Error
	if errors.As(answer, &e) {
		s.log.Warn("proxy cache: upstream failed", "repository", repo, "answer", e.Code, "err", err)
	}
	return answer
}

func upstreamUnavailable(msg string) error {
	return &registry.Error{Status: http.StatusServiceUnavailable, Code: registry.CodeUnavailable, Message: msg, RetryAfter: upstreamRetry}
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
// Concurrent identical requests share one upstream fetch (HEADs and GETs
// alike: a GET that shares a HEAD's check of a cached tag may be answered
// that HEAD's copy, without its body, which the caller then reads).
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
	v, err := s.share(ctx, key, func() (any, error) {
		// At most MaxManifestFetches of the organization at once: each
		// holds up to a manifest's size, and an upstream may be slow on
		// purpose.
		// A cached tag does not wait for a turn: it is served stale at
		// once while the organization's fetches are all taken.
		wait := s.opts.ManifestWait
		if cached != nil {
			wait = 0
		}
		release, err := s.fetching.acquire(context.WithoutCancel(ctx), pc.Namespace, wait)
		if err != nil && cached != nil {
			return *cached, nil // served stale rather than refused
		}
		if err != nil {
			return nil, err
		}
		defer release()
		// The fetch outlives the request that started it (others wait on
		// it), within its own bound.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.ManifestTimeout)
		defer cancel()
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
				s.checkFailed(fctx, pc, repo, tag, cached.Digest)
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
			s.checkFailed(fctx, pc, repo, tag, cached.Digest)
			return *cached, nil
		}
		return m, err
	})
	if err != nil {
		return meta.Manifest{}, s.upstreamFailed(repo, upstreamError(err, false), err)
	}
	m := v.(meta.Manifest)
	if !withContent {
		m.Content = nil
	}
	return m, nil
}

// recheckAfter is how long a cached tag whose upstream check failed is
// served without asking upstream again (at most the organization's
// expiration).
const recheckAfter = time.Minute

// checkFailed records a failed upstream check of a cached tag (the
// upstream unreachable, or its new manifest refused here) as a check
// recheckAfter before the entry expires again: the pulls in between serve
// the cached manifest at once, instead of each waiting on the upstream
// (up to ManifestTimeout) and costing it a request (Docker Hub counts
// manifest GETs against the pull rate limit).
func (s *Service) checkFailed(ctx context.Context, pc meta.ProxyCache, repo, tag string, d digest.Digest) {
	expiration := time.Duration(pc.ExpirationS) * time.Second
	at := s.opts.Now().Add(min(recheckAfter, expiration) - expiration)
	if err := s.db.Caches.TouchProxyTag(ctx, repo, tag, d, at); err != nil {
		s.log.Warn("proxy cache: record a failed upstream check", "repository", repo, "tag", tag, "err", err)
	}
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
	req := ingest.Request{Repository: repo, Body: desc.Manifest, ContentType: string(desc.MediaType), Digest: want, Create: cacheWriter().Create}
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
// manifest cached in the repository refers to. A blob a repository of
// the organization links already is linked; otherwise it is downloaded
// upstream into storage, verified, then linked. Concurrent requests of
// one organization for one digest in this process share one download; across replicas each replica may download
// it once (the blob path is content-addressed, so the writes agree).
func (s *Service) Blob(ctx context.Context, repo string, d digest.Digest) (meta.Blob, error) {
	pc, path, ok := s.lookup(ctx, repo)
	if !ok {
		return meta.Blob{}, meta.ErrBlobNotFound
	}
	size, ok, err := s.db.Caches.ProxyReferenced(ctx, repo, d)
	if err != nil {
		return meta.Blob{}, err
	} else if !ok {
		return meta.Blob{}, meta.ErrBlobNotFound
	}
	ns, _, _ := strings.Cut(repo, "/")
	b, err := s.fillBlob(ctx, repo, ns, d, size, pc, path, true)
	if err != nil {
		return meta.Blob{}, err
	}
	err = s.db.Blobs.LinkBlob(ctx, repo, b, meta.UploadClaim{}, cacheWriter())
	if errors.Is(err, meta.ErrBlobNotFound) {
		// Found linked in another repository of the organization, then
		// collected (its link was stale) before this link: download it
		// after all, as the manifest cached here names it.
		if b, err = s.fillBlob(ctx, repo, ns, d, size, pc, path, false); err != nil {
			return meta.Blob{}, err
		}
		err = s.db.Blobs.LinkBlob(ctx, repo, b, meta.UploadClaim{}, cacheWriter())
	}
	if err != nil {
		return meta.Blob{}, err
	}
	return b, nil
}

// cacheWriter is how the cache writes: into its organization, which must
// exist (a fill racing the organization's deletion does not make it again
// without owners); a repository of it is made on its first fill.
func cacheWriter() meta.Writer { return meta.Writer{Create: &meta.RepoCreate{}} }

// fillBlob brings blob d into storage for repo once per organization and
// digest at a time (the requests of one cache organization share it:
// another's upstream may fail, or not have the blob at all). With linked,
// a blob a repository of the organization links already is answered
// without a download. At most MaxBlobFetches downloads of the
// organization run at once; one that finds no turn within BlobWait is
// errBusy.
func (s *Service) fillBlob(ctx context.Context, repo, ns string, d digest.Digest, size int64, pc meta.ProxyCache, path string, linked bool) (meta.Blob, error) {
	key := "b\x00" + ns + "\x00" + d.String()
	if !linked {
		key = "B\x00" + ns + "\x00" + d.String()
	}
	v, err := s.share(ctx, key, func() (any, error) {
		// The download outlives the request that started it: others wait
		// on it.
		tctx, cancelT := context.WithTimeout(context.WithoutCancel(ctx), s.opts.BlobTimeout)
		defer cancelT()
		fctx, cancel := context.WithCancelCause(tctx)
		defer cancel(nil)
		// Linked in the organization already: no download. A blob Berth
		// stores for other namespaces only is downloaded all the same:
		// the upstream proves it has the bytes (a manifest naming another
		// tenant's private layer must not make it readable here).
		if linked {
			if b, err := s.db.Blobs.NamespaceBlob(fctx, ns, d); err == nil {
				return b, nil
			}
		}
		// Each download holds a connection to the upstream and a
		// goroutine for up to BlobTimeout, whether or not its pulls still
		// wait: bounded per organization.
		release, err := s.downloading.acquire(fctx, ns, s.opts.BlobWait)
		if err != nil {
			return nil, err
		}
		defer release()
		// A blob Berth stores already (for another namespace) is counted
		// for this one since its cached manifest named it: downloading it
		// adds nothing to the quota. Any other is checked first.
		if _, err := s.db.Blobs.StoredBlob(fctx, d); errors.Is(err, meta.ErrBlobNotFound) {
			if err := s.db.Caches.QuotaRoom(fctx, ns, size); err != nil {
				return nil, err
			}
		} else if err != nil {
			return nil, err
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
		body := &storage.StallReader{R: rc, Idle: s.opts.BlobStall, Stalled: func() { cancel(storage.ErrStalled) }}
		defer body.Stop()
		// Stored and linked while still in the flight (so that a request
		// arriving just after finds it), under the garbage-collection
		// protocol.
		n, err := storage.Ingest(fctx, s.store, body, d, size, func(ctx context.Context, staged string, n int64) error {
			_, err := s.db.Blobs.StoreBlob(ctx, repo, meta.Blob{Digest: d, Size: n}, meta.UploadClaim{}, cacheWriter(),
				storage.Staged(s.store, staged, d))
			return err
		})
		if err != nil {
			if notFound(err) {
				return nil, fmt.Errorf("upstream blob %s: %w", d, meta.ErrBlobNotFound)
			}
			if cause := context.Cause(fctx); errors.Is(cause, storage.ErrStalled) {
				err = cause
			}
			return nil, fmt.Errorf("fetch blob %s: %w", d, err)
		}
		b := meta.Blob{Digest: d, Size: n}
		s.log.Info("proxy cache: stored blob", "repository", repo, "digest", d, "size", n)
		return b, nil
	})
	if err != nil {
		return meta.Blob{}, s.upstreamFailed(repo, upstreamError(err, true), err)
	}
	return v.(meta.Blob), nil
}
