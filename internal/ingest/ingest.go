// Package ingest is the one way a manifest enters Berth. The /v2 push,
// the pull-through cache and the copier (repository mirroring and
// one-shot import) all store manifests through Ingester.Ingest, which
// caps the size, verifies the digest, parses, applies the artifact
// policy, lists the references (oci.Manifest.References), supplies the
// empty config, and stores the manifest with its references and tags in
// one transaction with its repo_push event. What differs between the
// callers is a named Option: Cache (stored before its references arrive)
// and Fetch (references brought in by the caller before the manifest is
// stored). Its refusals are typed (errors.go); it knows nothing of HTTP.
package ingest

import (
	"bytes"
	"context"
	_ "crypto/sha256" // digest algorithms a manifest digest may use
	_ "crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/storage"
)

// Stores are the parts of the metadata store ingest writes through.
type Stores struct {
	Manifests ManifestStore // meta.Manifests
	Cache     CacheStore    // meta.ProxyCaches: used only with the Cache option
	Blobs     BlobStore     // meta.Blobs: the empty-config repair
}

// ManifestStore stores a manifest whose references are all in its
// repository (meta.Manifests).
type ManifestStore interface {
	PutManifest(ctx context.Context, p meta.PutManifest) error
}

// CacheStore stores a manifest the pull-through cache fetched, ahead of
// its references (meta.ProxyCaches).
type CacheStore interface {
	PutProxyManifest(ctx context.Context, p meta.PutManifest, checkedAt time.Time) error
}

// BlobStore finds and stores blobs (meta.Blobs).
type BlobStore interface {
	StoredBlob(ctx context.Context, d digest.Digest) (meta.Blob, error)
	StoreBlob(ctx context.Context, repo string, b meta.Blob, up meta.UploadClaim, w meta.Writer, bytes meta.BlobBytes) (bool, error)
}

// Options configure an Ingester.
type Options struct {
	// Policy is the allow-list of artifact types.
	Policy oci.ArtifactPolicy
	// MaxBytes caps a manifest (default 4 MiB).
	MaxBytes int64
}

// DefaultMaxBytes is the size cap when Options.MaxBytes is not set.
const DefaultMaxBytes = 4 << 20

// Ingester stores manifests.
type Ingester struct {
	db     Stores
	store  storage.Driver
	policy oci.ArtifactPolicy
	max    int64
}

// New returns an Ingester writing metadata through db and the bytes it
// supplies itself (the empty config) through store.
func New(db Stores, store storage.Driver, opts Options) *Ingester {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	return &Ingester{db: db, store: store, policy: opts.Policy, max: opts.MaxBytes}
}

// ReadBody reads a manifest body of at most the cap. declared is the
// length the sender announced (-1 if unknown): over the cap, nothing is
// read. Either way a body over the cap is a *TooLargeError.
func (in *Ingester) ReadBody(r io.Reader, declared int64) ([]byte, error) {
	if declared > in.max {
		return nil, &TooLargeError{Size: declared, Limit: in.max}
	}
	body, err := io.ReadAll(io.LimitReader(r, in.max+1))
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	if int64(len(body)) > in.max {
		return nil, &TooLargeError{Size: -1, Limit: in.max}
	}
	return body, nil
}

// Request is one manifest to store.
type Request struct {
	Repository string
	// Tags move to the manifest in its transaction (none: by digest only).
	Tags []string
	Body []byte
	// ContentType is the media type the sender gave (the Content-Type of
	// a push, the upstream's); the body's mediaType field wins when set,
	// and the two must agree.
	ContentType string
	// Digest is the digest the body must have: the digest reference of a
	// push, the upstream's descriptor. Empty: none expected, the
	// manifest's digest is the body's sha256.
	Digest digest.Digest
	Actor  string
	// Create says how to create the repository if this is its first
	// write (nil: private, no permissions).
	Create *meta.RepoCreate
	// ConfirmBefore confirms the manifest if the repository stores it
	// already (meta.PutManifest.ConfirmBefore).
	ConfirmBefore time.Time
}

// Result is what was stored.
type Result struct {
	// Manifest is the stored manifest (Content is the body).
	Manifest meta.Manifest
	// Parsed is the parsed body.
	Parsed *oci.Manifest
	// References are the manifest's references (oci.Manifest.References).
	References []oci.Ref
}

// Option is a named difference between the ways in.
type Option func(*settings)

type settings struct {
	cache     bool
	checkedAt time.Time
	fetch     func(ctx context.Context, r oci.Ref) error
}

// Cache is the pull-through cache's way in: the manifest is stored before
// its references arrive (the cache fetches blobs and children when they
// are first asked for, and serves only what a stored manifest references),
// so they are recorded but not checked, and its tags are recorded as
// checked upstream at checkedAt. It stores through Stores.Cache.
func Cache(checkedAt time.Time) Option {
	return func(s *settings) { s.cache, s.checkedAt = true, checkedAt }
}

// Fetch is the copier's way in: once the manifest has passed every check,
// fn is called for each required reference (an index's entries, an
// image's config and layers, in order) to bring it into the repository;
// then the manifest is stored, its references checked as for a push. A
// reference the ingest supplies itself (the empty config) is not asked
// for. fn's error is returned as it is, and nothing is stored. If the
// store finds references missing (garbage collection took them while the
// others were fetched: a copy may run longer than gc.delay), fn is called
// again for those, once, and the manifest stored again.
func Fetch(fn func(ctx context.Context, r oci.Ref) error) Option {
	return func(s *settings) { s.fetch = fn }
}

// Ingest checks a manifest and stores it: cap, digest, parse, artifact
// policy, references, the empty-config repair, then the store's
// transaction (references checked unless Cache, tags moved, repo_push
// event). Refusals are *TooLargeError, *DigestError, *InvalidError,
// *PolicyError and, for references the repository lacks, the store's
// *meta.MissingRefsError (wrapped).
func (in *Ingester) Ingest(ctx context.Context, req Request, opts ...Option) (Result, error) {
	var set settings
	for _, o := range opts {
		o(&set)
	}
	if n := int64(len(req.Body)); n > in.max {
		return Result{}, &TooLargeError{Size: n, Limit: in.max}
	}
	d, err := verify(req.Body, req.Digest)
	if err != nil {
		return Result{}, err
	}
	m, err := oci.ParseManifest(req.Body, req.ContentType)
	if err != nil {
		return Result{}, &InvalidError{Err: err}
	}
	if err := in.policy.Check(m); err != nil {
		return Result{}, &PolicyError{Err: err}
	}
	refs := m.References()
	supplied := m.Config != nil && m.Config.Digest == oci.EmptyJSONDigest
	if err := set.fetchRefs(ctx, refs, supplied, nil); err != nil {
		return Result{}, err
	}
	stored := meta.Manifest{Digest: d, MediaType: m.MediaType, ArtifactType: m.EffectiveArtifactType(),
		Size: int64(len(req.Body)), Content: req.Body, Annotations: m.Annotations}
	if m.Subject != nil {
		stored.Subject = m.Subject.Digest
	}
	put := meta.PutManifest{Repository: req.Repository, Manifest: stored, Refs: storeRefs(refs), Actor: req.Actor, Create: req.Create,
		ConfirmBefore: req.ConfirmBefore}
	if len(req.Tags) > 0 {
		put.Tag, put.MoreTags = req.Tags[0], req.Tags[1:]
		if !set.cache {
			put.ExpiresAt = in.expiresAfter(ctx, m)
		}
	}
	if supplied {
		// The empty descriptor's content is known: a client (or an
		// upstream) that skipped uploading it still gets a complete
		// manifest. It is linked in the manifest's own transaction, so a
		// refused push leaves nothing.
		b, err := in.emptyBlob(ctx)
		if err != nil {
			return Result{}, err
		}
		put.LinkBlobs = append(put.LinkBlobs, b)
	}
	err = in.put(ctx, put, set)
	if errors.Is(err, meta.ErrBlobNotFound) && supplied {
		// The empty blob was collected between storing and linking it:
		// store it again, once.
		if _, err = in.emptyBlob(ctx); err == nil {
			err = in.put(ctx, put, set)
		}
	}
	var missing *meta.MissingRefsError
	if set.fetch != nil && errors.As(err, &missing) {
		if err := set.fetchRefs(ctx, refs, supplied, missing); err != nil {
			return Result{}, err
		}
		err = in.put(ctx, put, set)
	}
	if err != nil {
		return Result{}, fmt.Errorf("store manifest %s: %w", d, err)
	}
	return Result{Manifest: stored, Parsed: m, References: refs}, nil
}

// fetchRefs calls the Fetch option's function, if set, for each required
// reference the ingest does not supply itself, in order: all of them, or
// only those the store found missing (all when it did not name them
// all).
func (set settings) fetchRefs(ctx context.Context, refs []oci.Ref, supplied bool, missing *meta.MissingRefsError) error {
	if set.fetch == nil {
		return nil
	}
	var only map[digest.Digest]bool
	if missing != nil && missing.Count <= len(missing.Missing) {
		only = map[digest.Digest]bool{}
		for _, r := range missing.Missing {
			only[r.Digest] = true
		}
	}
	for _, r := range refs {
		if !r.Required || (supplied && r.Kind == oci.RefConfig) || (only != nil && !only[r.Digest]) {
			continue
		}
		if err := set.fetch(ctx, r); err != nil {
			return err
		}
	}
	return nil
}

func (in *Ingester) put(ctx context.Context, p meta.PutManifest, set settings) error {
	if set.cache {
		if in.db.Cache == nil {
			return errors.New("ingest: the Cache option needs Stores.Cache")
		}
		return in.db.Cache.PutProxyManifest(ctx, p, set.checkedAt)
	}
	return in.db.Manifests.PutManifest(ctx, p)
}

// verify returns the body's digest: computed with the expected digest's
// algorithm and equal to it, or, with none expected, the body's sha256.
func verify(body []byte, want digest.Digest) (digest.Digest, error) {
	if want == "" {
		return digest.SHA256.FromBytes(body), nil
	}
	if _, err := oci.ParseDigest(want.String()); err != nil {
		return "", &DigestError{Want: want, Err: err}
	}
	if got := want.Algorithm().FromBytes(body); got != want {
		return "", &DigestError{Want: want, Got: got}
	}
	return want, nil
}

// storeRefs are the references the store records and checks: the required
// ones (the subject and foreign layers are neither).
func storeRefs(refs []oci.Ref) []meta.Ref {
	out := make([]meta.Ref, 0, len(refs))
	for _, r := range refs {
		if r.Required {
			out = append(out, meta.Ref{Digest: r.Digest, IsManifest: r.IsManifest()})
		}
	}
	return out
}

// emptyBlob stores the empty JSON blob's bytes if Berth does not have
// them yet (under the garbage-collection protocol).
func (in *Ingester) emptyBlob(ctx context.Context) (meta.Blob, error) {
	d := digest.Digest(oci.EmptyJSONDigest)
	b := meta.Blob{Digest: d, Size: int64(len(oci.EmptyJSON))}
	if _, err := in.db.Blobs.StoredBlob(ctx, d); err == nil {
		return b, nil
	}
	if _, err := in.db.Blobs.StoreBlob(ctx, "", b, meta.UploadClaim{}, meta.Writer{}, storage.Content(in.store, oci.EmptyJSON, d)); err != nil {
		return meta.Blob{}, fmt.Errorf("store the empty blob: %w", err)
	}
	return b, nil
}

// ExpiresAfterLabel is Quay's image label that makes the tags a push sets
// expire: a number and a unit among s, m, h, d, w ("2w", "24h").
const ExpiresAfterLabel = "quay.expires-after"

// maxLabelConfig caps the image configuration read for the label.
const maxLabelConfig = 1 << 20

// expiresAfter reads an image's quay.expires-after label from its
// configuration: when the tags pushed with it expire, which the store
// bounds as Quay does (meta.TagExpirationBounds) (zero: never, also
// when the configuration is not stored yet, too large or malformed, or
// the label's value does not parse).
func (in *Ingester) expiresAfter(ctx context.Context, m *oci.Manifest) time.Time {
	if m.Config == nil || m.Config.Size <= 0 || m.Config.Size > maxLabelConfig || m.Config.Digest == oci.EmptyJSONDigest {
		return time.Time{}
	}
	rc, err := in.store.Reader(ctx, storage.BlobPath(m.Config.Digest), 0)
	if err != nil {
		return time.Time{}
	}
	defer rc.Close()
	raw, err := io.ReadAll(io.LimitReader(rc, maxLabelConfig))
	if err != nil || !bytes.Contains(raw, []byte(ExpiresAfterLabel)) {
		return time.Time{}
	}
	var cfg struct {
		Config struct {
			Labels map[string]string `json:"Labels"`
		} `json:"config"`
	}
	if json.Unmarshal(raw, &cfg) != nil {
		return time.Time{}
	}
	d, err := meta.ParseAge(cfg.Config.Labels[ExpiresAfterLabel])
	if err != nil {
		return time.Time{}
	}
	return time.Now().Add(d)
}
