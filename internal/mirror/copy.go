// Package mirror brings content in from upstream registries: the copier
// that mirroring and one-shot import share (storing every manifest through
// the one ingest function, internal/ingest), and import itself. The
// upstream client is go-containerregistry.
package mirror

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/ingest"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/storage"
)

// Stores are the parts of the metadata store the copier uses.
type Stores struct {
	Blobs     BlobStore     // meta.Blobs
	Manifests ManifestStore // meta.Manifests
}

// BlobStore finds, links and stores blobs (meta.Blobs).
type BlobStore interface {
	RepositoryBlob(ctx context.Context, repo string, d digest.Digest) (meta.Blob, error)
	StoredBlob(ctx context.Context, d digest.Digest) (meta.Blob, error)
	NamespaceRepositoriesWithBlob(ctx context.Context, ns string, d digest.Digest, n int) ([]string, error)
	TouchBlobLink(ctx context.Context, repo string, d digest.Digest, stale time.Time) (bool, error)
	LinkBlob(ctx context.Context, repo string, b meta.Blob, up meta.UploadClaim, w meta.Writer) error
	StoreBlob(ctx context.Context, repo string, b meta.Blob, up meta.UploadClaim, w meta.Writer, bytes meta.BlobBytes) (bool, error)
}

// ManifestStore reads and stores manifests (meta.Manifests).
type ManifestStore interface {
	GetManifest(ctx context.Context, repo, tag string, d digest.Digest, withContent bool) (meta.Manifest, error)
	PutManifest(ctx context.Context, p meta.PutManifest) error
	ConfirmManifest(ctx context.Context, repo string, d digest.Digest, stale time.Time) (bool, error)
}

// Copier copies images and indexes, every platform, from an upstream
// registry into a repository. It copies only what is missing: a blob that
// a repository of the namespace which the copy's actor may read already
// links is linked, not downloaded again (Request.MayLink), and a manifest
// the repository has is not fetched twice.
type Copier struct {
	db     Stores
	store  storage.Driver
	ingest *ingest.Ingester
	log    *slog.Logger
	stall  time.Duration
	// maxManifest caps an upstream manifest (registry.maxManifestBytes),
	// also as it is read (upstreamLimits).
	maxManifest int64
	// maxManifests caps the manifests one copy fetches
	// (DefaultMaxManifests).
	maxManifests int
	// renew is how often a running copy confirms what it stored or found
	// and no stored manifest references yet (keeper; WithGCDelay).
	renew time.Duration
}

// blobStall cuts a blob download that delivers nothing for this long: a
// source that accepts and then sends nothing, or trickles, would hold the
// import, or a mirror worker, for ever.
const blobStall = 2 * time.Minute

// WithStallTimeout sets how long a blob download may deliver nothing
// before it is cut (default 2 minutes).
func (c *Copier) WithStallTimeout(d time.Duration) *Copier {
	c.stall = d
	return c
}

// WithGCDelay tells the copier garbage collection's delay (gc.delay): a
// running copy confirms what it stored and no stored manifest references
// yet every quarter of it (default: every minute, enough for a delay of
// a few minutes or more), so that a copy that runs longer than the delay
// keeps it (keeper).
func (c *Copier) WithGCDelay(d time.Duration) *Copier {
	if d > 0 {
		c.renew = d / 4
	}
	return c
}

// NewCopier returns a copier writing through the store and the driver,
// checking pushed content against the artifact policy.
func NewCopier(db Stores, store storage.Driver, policy oci.ArtifactPolicy, maxManifest int64, log *slog.Logger) *Copier {
	if log == nil {
		log = slog.Default()
	}
	if maxManifest <= 0 {
		maxManifest = ingest.DefaultMaxBytes
	}
	in := ingest.New(ingest.Stores{Manifests: db.Manifests, Blobs: db.Blobs}, store, ingest.Options{Policy: policy, MaxBytes: maxManifest})
	return &Copier{db: db, store: store, ingest: in, log: log, stall: blobStall, maxManifest: maxManifest,
		maxManifests: DefaultMaxManifests, renew: defaultRenew}
}

// Stats counts what a copy moved.
type Stats struct {
	BlobsFetched, BlobsLinked, Manifests int64
	BytesFetched                         int64
}

// Progress, when set, is called as blobs are fetched.
type Progress func(s Stats)

// Request is one copy.
type Request struct {
	Source  name.Reference
	Options []remote.Option // credentials, transport, context
	Repo    string          // target repository
	Tags    []string        // target tags (one repo_push for all)
	Actor   string
	// Create is how the copy's writes create the repository (nil: as a
	// push without a plan does, meta.RepoCreate); MustExist for a copy
	// into a repository made before it, which a deletion meanwhile must
	// not bring back.
	Create *meta.RepoCreate
	// Progress, if set, hears about fetched blobs.
	Progress Progress
	// MayLink says whether the copy's actor may read a repository of the
	// target's namespace (pull): only such a repository's blob is linked
	// without a download, and only if no gate holds it there. Nil links
	// none: every missing blob is downloaded. The copy asks it at most
	// once per repository (remember).
	MayLink MayLink
}

// MayLink decides whether a copy's actor may read repository repo (pull),
// as the /v2 cross-repository mount decides for a client: a blob is
// linked from there without a download only if it may.
type MayLink func(ctx context.Context, repo string) bool

// remember returns a MayLink that asks link at most once per repository
// and answers as it first did from then on (nil for nil), safe for
// concurrent use: one copy, or one sync, decides about a source
// repository once rather than for every blob it holds. Its decisions
// last as long as it does: make one per copy or sync, not more.
func remember(link MayLink) MayLink {
	if link == nil {
		return nil
	}
	var mu sync.Mutex
	decided := map[string]*linkDecision{}
	return func(ctx context.Context, repo string) bool {
		mu.Lock()
		d, ok := decided[repo]
		if !ok {
			d = &linkDecision{}
			decided[repo] = d
		}
		mu.Unlock()
		// Those asking about one repository at once wait for one answer.
		d.once.Do(func() { d.may = link(ctx, repo) })
		return d.may
	}
}

// linkDecision is one remembered answer of a MayLink.
type linkDecision struct {
	once sync.Once
	may  bool
}

// Copy copies the source (an image or an index with all its platforms)
// into the repository and tags it. Children are stored before the
// manifests that refer to them, and the tags move last, in one
// transaction: an interrupted copy never leaves a tag pointing at missing
// content. It follows indexes at most MaxManifestDepth deep and fetches
// at most its cap of manifests (DefaultMaxManifests): past either it
// fails (ErrIndexTooDeep, ErrTooManyManifests), tagging nothing.
func (c *Copier) Copy(ctx context.Context, req Request) (digest.Digest, Stats, error) {
	var st Stats
	opts := append([]remote.Option{remote.WithContext(ctx)}, req.Options...)
	// Reuse one transport for every request of the copy (one ping and
	// token per copy, not per blob), unless the caller already shares one.
	if puller, err := remote.NewPuller(opts...); err == nil {
		opts = append(opts, remote.Reuse(puller))
	}
	desc, err := remote.Get(req.Source, opts...)
	if err != nil {
		return "", st, fmt.Errorf("fetch %s: %w", req.Source, err)
	}
	d := digest.Digest(desc.Digest.String())
	run := c.newCopyRun(ctx, req, opts, &st)
	defer run.end()
	if err := c.copyManifest(ctx, run, d, desc.Manifest, string(desc.MediaType), req.Tags, 1); err != nil {
		return "", st, err
	}
	return d, st, nil
}

// copyRun is one copy's walk of the upstream's manifests.
type copyRun struct {
	req  Request
	opts []remote.Option
	st   *Stats
	// fetched counts the manifests fetched upstream (c.maxManifests).
	fetched int
	// keep keeps what the copy stored and no stored manifest references
	// yet from garbage collection until the copy ends.
	keep *keeper
}

// newCopyRun starts a copy's walk, its top manifest fetched: the run
// remembers its link decisions (req.MayLink), and keeps what it stores
// from garbage collection, until it ends (end).
func (c *Copier) newCopyRun(ctx context.Context, req Request, opts []remote.Option, st *Stats) *copyRun {
	req.MayLink = remember(req.MayLink)
	run := &copyRun{req: req, opts: opts, st: st, fetched: 1, keep: newKeeper(c.db, req.Repo, c.renew, c.log)}
	run.keep.start(ctx)
	return run
}

// end ends the run's confirmations.
func (run *copyRun) end() { run.keep.end() }

// copyManifest stores one upstream manifest, depth manifests deep (the
// top one is 1), through the one ingest function, which calls back
// (ingest.Fetch) for each reference once the manifest passed its checks:
// a child manifest is copied first, depth first, unless the repository
// has it; a blob is linked or downloaded. The tags, if any, move in the
// manifest's transaction.
func (c *Copier) copyManifest(ctx context.Context, run *copyRun, d digest.Digest, body []byte, mediaType string, tags []string, depth int) error {
	// An index that lists more manifests than the copy may fetch is
	// refused before any of them is.
	if n := listedManifests(body); n > c.maxManifests-1 {
		return fmt.Errorf("index %s: %w: it lists %d manifests, and one copy fetches at most %d, the index included (Berth's limit)",
			d, ErrTooManyManifests, n, c.maxManifests)
	}
	var fetchErr error
	fetch := ingest.Fetch(func(ctx context.Context, r oci.Ref) error {
		if r.IsManifest() {
			fetchErr = c.copyChild(ctx, run, d, r.Descriptor, depth+1)
		} else {
			fetchErr = c.copyBlob(ctx, run, r.Descriptor)
		}
		return fetchErr
	})
	res, err := c.ingest.Ingest(ctx, ingest.Request{Repository: run.req.Repo, Tags: tags, Body: body, ContentType: mediaType,
		Digest: d, Actor: run.req.Actor, Create: run.req.Create}, fetch)
	if err != nil {
		if fetchErr != nil && errors.Is(err, fetchErr) {
			return err // a reference's own error names it
		}
		return fmt.Errorf("upstream manifest %s: %w", d, err)
	}
	// Stored, the manifest keeps its references; untagged (a child),
	// it needs keeping itself until its parent is stored.
	run.keep.release(res.References)
	if len(tags) == 0 {
		run.keep.hold(d, true)
	}
	run.st.Manifests++
	return nil
}

// listedManifests counts the manifest entries an index lists (0 for an
// image, or a body that does not parse: the ingest refuses it).
func listedManifests(body []byte) int {
	var idx struct {
		Manifests []struct {
			MediaType string `json:"mediaType"`
		} `json:"manifests"`
	}
	if json.Unmarshal(body, &idx) != nil {
		return 0
	}
	n := 0
	for _, m := range idx.Manifests {
		if oci.IsManifestMediaType(m.MediaType) {
			n++
		}
	}
	return n
}

// copyChild copies a child manifest of index parent, depth manifests
// deep, unless the repository has it already: then it is confirmed, as a
// client's HEAD confirms it, and kept until the parent is stored.
func (c *Copier) copyChild(ctx context.Context, run *copyRun, parent digest.Digest, child oci.Descriptor, depth int) error {
	if _, err := c.db.Manifests.GetManifest(ctx, run.req.Repo, "", child.Digest, false); err == nil {
		if here, err := run.keep.confirm(ctx, child.Digest, true); err != nil || here {
			return err // already here
		}
		// Collected since: copied again.
	}
	// Each level holds its manifest until its children are stored: the
	// limits bound the memory (and stack) an upstream can make a copy use.
	if depth > MaxManifestDepth {
		return fmt.Errorf("index %s: %w: more than %d levels of manifests (Berth's limit for one copy)",
			parent, ErrIndexTooDeep, MaxManifestDepth)
	}
	if run.fetched >= c.maxManifests {
		return fmt.Errorf("index %s: %w: more than %d manifests in all (Berth's limit for one copy)",
			parent, ErrTooManyManifests, c.maxManifests)
	}
	run.fetched++
	childRef := run.req.Source.Context().Digest(child.Digest.String())
	cd, err := remote.Get(childRef, run.opts...)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", childRef, err)
	}
	return c.copyManifest(ctx, run, child.Digest, cd.Manifest, string(cd.MediaType), nil, depth)
}

// linkSources bounds the repositories of the namespace a copy considers
// linking a blob from (as the /v2 mount bounds its candidates): past
// them, the blob is downloaded.
const linkSources = 20

// copyBlob makes a blob available in the repository: if it is linked, a
// confirmation of the link (as a client's HEAD confirms it); a link if a
// repository of its namespace links it that the copy's actor may read
// (req.MayLink) and where no gate holds it, as a /v2 cross-repository
// mount requires; else a download streamed to storage and verified on
// the way (also when Berth stores it for a repository the actor may not
// read, or another namespace only: the upstream must prove it has the
// bytes, or a manifest naming a private layer would make it readable
// here). The copy keeps the link until a stored manifest references it.
func (c *Copier) copyBlob(ctx context.Context, run *copyRun, b oci.Descriptor) error {
	req, opts, st := run.req, run.opts, run.st
	if _, err := c.db.Blobs.RepositoryBlob(ctx, req.Repo, b.Digest); err == nil {
		if here, err := run.keep.confirm(ctx, b.Digest, false); err != nil || here {
			return err
		}
		// Collected since: linked or downloaded again.
	}
	who := meta.Writer{Actor: req.Actor, Create: req.Create}
	if linked, err := c.linkBlob(ctx, req, b.Digest, who); err != nil || linked {
		if linked {
			run.keep.hold(b.Digest, false)
			atomic.AddInt64(&st.BlobsLinked, 1)
		}
		return err
	}
	bctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	layer, err := remote.Layer(req.Source.Context().Digest(b.Digest.String()), append(opts, remote.WithContext(bctx))...)
	if err != nil {
		return fmt.Errorf("blob %s: %w", b.Digest, err)
	}
	rc, err := layer.Compressed()
	if err != nil {
		return fmt.Errorf("fetch blob %s: %w", b.Digest, err)
	}
	defer rc.Close()
	body := &storage.StallReader{R: rc, Idle: c.stall, Stalled: func() { cancel(storage.ErrStalled) }}
	defer body.Stop()
	n, err := storage.Ingest(bctx, c.store, body, b.Digest, b.Size, func(ctx context.Context, staged string, n int64) error {
		_, err := c.db.Blobs.StoreBlob(ctx, req.Repo, meta.Blob{Digest: b.Digest, Size: n}, meta.UploadClaim{}, who,
			storage.Staged(c.store, staged, b.Digest))
		return err
	})
	if err != nil {
		if cause := context.Cause(bctx); errors.Is(cause, storage.ErrStalled) {
			err = cause
		}
		return fmt.Errorf("fetch blob %s: %w", b.Digest, err)
	}
	run.keep.hold(b.Digest, false)
	atomic.AddInt64(&st.BlobsFetched, 1)
	atomic.AddInt64(&st.BytesFetched, n)
	if req.Progress != nil {
		req.Progress(*st)
	}
	return nil
}

// linkBlob links the blob into the repository from a repository of its
// namespace that the copy's actor may read and where no gate holds it,
// reporting whether it did. Without req.MayLink it links nothing.
func (c *Copier) linkBlob(ctx context.Context, req Request, d digest.Digest, who meta.Writer) (bool, error) {
	if req.MayLink == nil {
		return false, nil
	}
	ns, _, _ := strings.Cut(req.Repo, "/")
	sources, err := c.db.Blobs.NamespaceRepositoriesWithBlob(ctx, ns, d, linkSources)
	if err != nil {
		return false, err
	}
	for _, src := range sources {
		if src == req.Repo || !req.MayLink(ctx, src) {
			continue
		}
		stored, err := c.db.Blobs.RepositoryBlob(ctx, src, d)
		if errors.Is(err, meta.ErrBlobNotFound) || err == nil && stored.Held {
			// Unlinked meanwhile; or a gate's candidate there, which a
			// link would publish here.
			continue
		}
		if err != nil {
			return false, err
		}
		err = c.db.Blobs.LinkBlob(ctx, req.Repo, stored, meta.UploadClaim{}, who)
		if errors.Is(err, meta.ErrBlobNotFound) {
			continue // collected meanwhile: download it like a new one
		}
		return err == nil, err
	}
	return false, nil
}

// ErrDigestMismatch is returned when fetched bytes do not match their
// digest: nothing is stored.
var ErrDigestMismatch = storage.ErrDigestMismatch
