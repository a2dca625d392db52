package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
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
//     bytes that do not match their digest, an answer cut short or one
//     that cannot be read (any other upstreamFault): 503 UNAVAILABLE with
//     Retry-After;
//   - a manifest this registry refuses (schema 1, the allow-list, too
//     large): the spec's refusal, saying it came from upstream.
//
// Content past the organization's quota is 403 DENIED. Anything else
// (Berth's own storage or database, a full disk included, and a context
// cancelled) is returned as it is.
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
	var f *upstreamFault
	if errors.As(err, &f) && !errors.Is(err, context.Canceled) {
		// Whatever else went wrong asking the upstream or reading its
		// answer: go-containerregistry's own checks (a blob whose bytes
		// do not match its digest, a manifest by digest answered with
		// other bytes), a body cut short, an answer it cannot parse.
		return upstreamUnavailable("the upstream registry's answer is broken (cut short, or not the content its digest names); nothing was stored; retry later")
	}
	return err
}

// upstreamFault is an error asking the upstream or reading its answer,
// as opposed to Berth's own storage or database failing: what upstreamError
// does not answer otherwise (a refusal, a rate limit, the SSRF guard, a
// manifest refused here) is 503 UNAVAILABLE.
type upstreamFault struct{ err error }

func (f *upstreamFault) Error() string { return f.err.Error() }
func (f *upstreamFault) Unwrap() error { return f.err }

// upstreamBody is an upstream blob's body whose read errors (but the
// clean end) are upstreamFaults: storage.Ingest's errors stay apart from
// its reader's (a full disk is answered as one, not as the upstream's).
type upstreamBody struct{ io.Reader }

func (b upstreamBody) Read(p []byte) (int, error) {
	n, err := b.Reader.Read(p)
	if err != nil && err != io.EOF {
		err = &upstreamFault{err}
	}
	return n, err
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
// then checked upstream with a HEAD (checkTag) and refetched if the
// upstream digest changed. If upstream cannot be reached, a cached tag is served stale.
// Concurrent identical requests share one upstream fetch (HEADs and GETs
// alike: a GET that shares a HEAD's check of a cached tag may be answered
// that HEAD's copy, without its body, which the caller then reads). A
// manifest not cached yet is stored as who's Create says (the first
// pull's puller administers the repository it creates); a cached tag's
// refresh creates nothing.
func (s *Service) Manifest(ctx context.Context, repo, tag string, d digest.Digest, cached *meta.Manifest, withContent bool, who registry.Puller) (meta.Manifest, error) {
	pc, path, ok := s.lookup(ctx, repo)
	if !ok || (cached != nil && tag == "") {
		if cached != nil {
			return *cached, nil
		}
		return meta.Manifest{}, meta.ErrManifestNotFound
	}
	// What the upstream did not have a moment ago is not asked for again
	// (nor does it wait for a turn) until NotFoundTTL has passed.
	missed := missKey(pc.Namespace, pc.Upstream, pc.Username, path, tag, d.String())
	if cached == nil && s.misses.missed(missed, s.opts.Now()) {
		return meta.Manifest{}, fmt.Errorf("%s: %w (remembered for up to %s)", repo, errUpstreamMissing, s.opts.NotFoundTTL)
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
		// What a first pull stores creates its repository as the puller
		// may (decided just before the store); a refresh writes into the
		// repository that holds the cached tag, and one deleted meanwhile
		// stays deleted.
		create := func(ctx context.Context) (*meta.RepoCreate, error) {
			switch {
			case cached != nil:
				return &meta.RepoCreate{MustExist: true}, nil
			case who.Create == nil:
				return &meta.RepoCreate{}, nil
			}
			return who.Create(ctx, repo)
		}
		if cached == nil {
			// Only the upstream's 404 is remembered: never its refusal
			// (401, 403), its rate limit, its failure or its being out of
			// reach.
			m, err := s.fetchManifest(fctx, up, repo, tag, d, create)
			if isUpstreamMissing(err) {
				s.misses.remember(missed, s.opts.Now())
			}
			return m, err
		}
		// A cached tag due for its check.
		current, got, err := s.checkTag(fctx, up, repo, tag)
		if err != nil {
			s.log.Warn("proxy cache: upstream check failed; serving the cached tag", "repository", repo, "tag", tag, "err", err)
			s.checkFailed(ctx, pc, repo, tag, cached.Digest)
			return *cached, nil
		}
		if current == cached.Digest {
			// With a time of its own: the check may have taken most of
			// fctx's. The cached manifest is confirmed whether or not the
			// record is written (the database busy, or the repository
			// deleted meanwhile): it is served, and a later pull checks
			// again.
			wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
			defer cancel()
			if err := s.db.Caches.TouchProxyTag(wctx, repo, tag, cached.Digest, s.opts.Now()); err != nil {
				s.log.Warn("proxy cache: record a confirmed upstream check", "repository", repo, "tag", tag, "err", err)
			}
			return *cached, nil
		}
		var m meta.Manifest
		if got != nil {
			m, err = s.storeManifest(fctx, up.repo.Tag(tag), got, repo, tag, "", create)
		} else {
			m, err = s.fetchManifest(fctx, up, repo, tag, "", create)
		}
		if err != nil {
			s.log.Warn("proxy cache: upstream fetch failed; serving the cached tag", "repository", repo, "tag", tag, "err", err)
			s.checkFailed(ctx, pc, repo, tag, cached.Digest)
			return *cached, nil
		}
		return m, err
	})
	if errors.Is(err, meta.ErrRepositoryNotFound) {
		// Deleted since the pull was allowed, by one who may not create
		// it again.
		return meta.Manifest{}, fmt.Errorf("%s: %w", repo, meta.ErrManifestNotFound)
	}
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

// recordTimeout bounds the write that records a check of a cached tag:
// it has a time of its own, the check's having run out when the upstream
// timed out.
const recordTimeout = 10 * time.Second

// checkFailed records a failed upstream check of a cached tag (the
// upstream unreachable, or its new manifest refused here) as a check
// recheckAfter before the entry expires again: the pulls in between serve
// the cached manifest at once, instead of each waiting on the upstream
// (up to ManifestTimeout) and costing it a request (Docker Hub counts
// manifest GETs against the pull rate limit). It writes with a time of its
// own (recordTimeout), not the check's, which a timed-out upstream used
// up.
func (s *Service) checkFailed(ctx context.Context, pc meta.ProxyCache, repo, tag string, d digest.Digest) {
	expiration := time.Duration(pc.ExpirationS) * time.Second
	at := s.opts.Now().Add(min(recheckAfter, expiration) - expiration)
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	if err := s.db.Caches.TouchProxyTag(wctx, repo, tag, d, at); err != nil {
		s.log.Warn("proxy cache: record a failed upstream check", "repository", repo, "tag", tag, "err", err)
	}
}

// checkTag asks the upstream which manifest a tag names now: a HEAD, or,
// when the upstream answered the HEAD 2xx but without what
// go-containerregistry needs of it (Docker-Content-Digest, optional in the
// distribution spec, which registry.access.redhat.com and public.ecr.aws
// have omitted; Content-Length; Content-Type), a GET of the tag, as
// containerd does: else every check of such an upstream would fail and
// the cached tag be served for ever. The GET's manifest is returned to be
// stored if it is not the cached one.
func (s *Service) checkTag(ctx context.Context, up upstream, repo, tag string) (digest.Digest, *remote.Descriptor, error) {
	var answered atomic.Bool
	watched := append(up.opts[:len(up.opts):len(up.opts)], remote.WithTransport(headAnswered{next: up.rt, answered: &answered}))
	desc, err := remote.Head(up.repo.Tag(tag), watched...)
	if err == nil {
		return digest.Digest(desc.Digest.String()), nil, nil
	}
	if !answered.Load() {
		return "", nil, err
	}
	s.log.Debug("proxy cache: the upstream's HEAD answer is incomplete; checking the tag with a GET", "repository", repo, "tag", tag, "err", err)
	got, err := s.getManifest(up.repo.Tag(tag), up.opts)
	if err != nil {
		return "", nil, err
	}
	return digest.Digest(got.Digest.String()), got, nil
}

// headAnswered is the upstream transport, noting when a HEAD of a
// manifest was answered 2xx.
type headAnswered struct {
	next     http.RoundTripper
	answered *atomic.Bool
}

func (h headAnswered) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := h.next.RoundTrip(r)
	if err == nil && r.Method == http.MethodHead && strings.Contains(r.URL.Path, "/manifests/") &&
		resp.StatusCode >= 200 && resp.StatusCode < 300 {
		h.answered.Store(true)
	}
	return resp, err
}

// fetchManifest fetches one manifest (by tag, or by digest) and stores
// it (storeManifest). create says how the store creates the repository if
// it does not exist.
func (s *Service) fetchManifest(ctx context.Context, up upstream, repo, tag string, d digest.Digest,
	create func(context.Context) (*meta.RepoCreate, error)) (meta.Manifest, error) {
	var src name.Reference = up.repo.Digest(d.String())
	if tag != "" {
		src = up.repo.Tag(tag)
	}
	desc, err := s.getManifest(src, up.opts)
	if err != nil {
		return meta.Manifest{}, err
	}
	return s.storeManifest(ctx, src, desc, repo, tag, d, create)
}

// getManifest GETs one manifest upstream: a 404 is errUpstreamMissing,
// any other failure an upstreamFault.
func (s *Service) getManifest(src name.Reference, opts []remote.Option) (*remote.Descriptor, error) {
	desc, err := remote.Get(src, opts...)
	if err != nil {
		if notFound(err) {
			return nil, fmt.Errorf("upstream %s: %w", src, errUpstreamMissing)
		}
		return nil, fmt.Errorf("fetch %s: %w", src, &upstreamFault{err})
	}
	return desc, nil
}

// storeManifest stores a manifest fetched upstream (by tag, or by digest
// d) through the one ingest function, ahead of its references (which are
// fetched when first asked for); the tag, if any, moves to it.
func (s *Service) storeManifest(ctx context.Context, src name.Reference, desc *remote.Descriptor, repo, tag string, d digest.Digest,
	create func(context.Context) (*meta.RepoCreate, error)) (meta.Manifest, error) {
	ref := src.String()
	// The body must have the digest asked for, or else the one upstream
	// gave for the tag.
	want := d
	if want == "" {
		want = digest.Digest(desc.Digest.String())
	}
	plan, err := create(ctx)
	if err != nil {
		return meta.Manifest{}, err
	}
	req := ingest.Request{Repository: repo, Body: desc.Manifest, ContentType: string(desc.MediaType), Digest: want, Create: plan}
	if tag != "" {
		req.Tags = []string{tag}
	}
	// Pulled by digest, it is stored untagged: garbage collection keeps
	// it for the organization's expiration after it was stored or last
	// confirmed (each pull by digest confirms it), not only gc.delay
	// (meta.Collector.DanglingManifests).

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
// manifest cached in the repository names as a blob (never a child
// manifest, pulled as a manifest), with its size. A blob another repository
// of the organization links already is linked without a download, but
// only from a repository who may pull and where no gate holds it
// (permissions are per repository, as for a cross-repository mount);
// otherwise it is downloaded from the repository's upstream, verified,
// then linked (the upstream proves it has the bytes). Concurrent requests
// for one digest in one repository in this process share one download;
// across replicas each replica may download it once (the blob path is
// content-addressed, so the writes agree). Nothing here creates the
// repository: deleted while its blob downloads, it stays deleted.
func (s *Service) Blob(ctx context.Context, repo string, d digest.Digest, who registry.Puller) (meta.Blob, error) {
	pc, path, ok := s.lookup(ctx, repo)
	if !ok {
		return meta.Blob{}, meta.ErrBlobNotFound
	}
	size, ok, err := s.db.Caches.ProxyBlobReferenced(ctx, repo, d)
	if err != nil {
		return meta.Blob{}, err
	} else if !ok {
		return meta.Blob{}, meta.ErrBlobNotFound
	}
	ns, _, _ := strings.Cut(repo, "/")
	b, ok, err := s.linkReadable(ctx, repo, ns, d, who)
	if err == nil && !ok {
		b, err = s.fillBlob(ctx, repo, ns, d, size, pc, path)
	}
	if errors.Is(err, meta.ErrRepositoryNotFound) {
		return meta.Blob{}, fmt.Errorf("%s was deleted: %w", repo, meta.ErrBlobNotFound)
	}
	if err != nil {
		return meta.Blob{}, err
	}
	return b, nil
}

// linkSources is how many repositories of the organization that link a
// blob are considered as its source.
const linkSources = 20

// linkReadable links blob d into repo from another repository of the
// organization that links it, if who may pull that repository and no gate
// holds the blob there (a gate's candidate must not be published in
// another repository), and reports whether it did. Decided per request,
// outside any shared download: one puller's permission serves no other.
func (s *Service) linkReadable(ctx context.Context, repo, ns string, d digest.Digest, who registry.Puller) (meta.Blob, bool, error) {
	if who.MayPull == nil {
		return meta.Blob{}, false, nil
	}
	srcs, err := s.db.Blobs.NamespaceRepositoriesWithBlob(ctx, ns, d, linkSources)
	if err != nil {
		return meta.Blob{}, false, err
	}
	for _, src := range srcs {
		b, err := s.db.Blobs.RepositoryBlob(ctx, src, d)
		if errors.Is(err, meta.ErrBlobNotFound) {
			continue
		}
		if err != nil {
			return meta.Blob{}, false, err
		}
		if b.Held || !who.MayPull(src) {
			continue
		}
		b = meta.Blob{Digest: d, Size: b.Size}
		err = s.db.Blobs.LinkBlob(ctx, repo, b, meta.UploadClaim{}, cacheWriter())
		if errors.Is(err, meta.ErrBlobNotFound) {
			// Collected since (its link was stale): the manifest cached
			// here names it, so it is downloaded after all.
			continue
		}
		if err != nil {
			return meta.Blob{}, false, err
		}
		return b, true, nil
	}
	return meta.Blob{}, false, nil
}

// cacheWriter is how the cache writes blobs: into a repository that
// exists (its cached manifest made it), never making it again (a fill
// racing the repository's deletion must not bring it back, empty and
// with nobody's permission).
func cacheWriter() meta.Writer { return meta.Writer{Create: &meta.RepoCreate{MustExist: true}} }

// fillBlob downloads blob d from repo's upstream into storage and links
// it to repo, once per repository and digest at a time: the requests for
// other repositories do not share it (their upstream repositories must
// prove they have the bytes, and their pullers may not read this one). At
// most MaxBlobFetches downloads of the organization run at once; one that
// finds no turn within BlobWait is errBusy. A blob of unknown size (< 0)
// is not downloaded: meta.ErrBlobNotFound.
func (s *Service) fillBlob(ctx context.Context, repo, ns string, d digest.Digest, size int64, pc meta.ProxyCache, path string) (meta.Blob, error) {
	if size < 0 {
		// No cached manifest gives its size: nothing would hold the
		// download to one, nor check the quota for it.
		return meta.Blob{}, fmt.Errorf("blob %s of %s has no declared size: %w", d, repo, meta.ErrBlobNotFound)
	}
	key := "b\x00" + repo + "\x00" + d.String()
	v, err := s.share(ctx, key, func() (any, error) {
		// The download outlives the request that started it: others wait
		// on it.
		tctx, cancelT := context.WithTimeout(context.WithoutCancel(ctx), s.opts.BlobTimeout)
		defer cancelT()
		fctx, cancel := context.WithCancelCause(tctx)
		defer cancel(nil)
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
			return nil, fmt.Errorf("upstream blob %s: %w", d, &upstreamFault{err})
		}
		rc, err := layer.Compressed()
		if err != nil {
			if notFound(err) {
				return nil, fmt.Errorf("upstream blob %s: %w", d, meta.ErrBlobNotFound)
			}
			return nil, fmt.Errorf("fetch blob %s: %w", d, &upstreamFault{err})
		}
		defer rc.Close()
		body := &storage.StallReader{R: upstreamBody{rc}, Idle: s.opts.BlobStall, Stalled: func() { cancel(storage.ErrStalled) }}
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
