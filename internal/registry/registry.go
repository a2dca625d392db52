package registry

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/authz"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/storage"
)

// Stores are the parts of the metadata store the registry uses, one small
// interface per aggregate (meta.Blobs, meta.Uploads, meta.Manifests,
// meta.Repositories).
type Stores struct {
	Blobs     BlobStore
	Uploads   UploadStore
	Manifests ManifestStore
	// Referrers lists a subject's referrers for the referrers API
	// (meta.Manifests); New refuses Manifests without it.
	Referrers ReferrerReader
	Catalog   Catalog
	// Claims converts upload claims to this process's clock
	// (meta.Uploads); nil takes them as they are (one host's clock).
	Claims ClaimClock
}

// ClaimClock converts an upload claim (its lease's end, on the store's
// clock, which may be the database server's) to this process's clock.
type ClaimClock interface {
	ClaimEnd(claim int64) time.Time
}

// Catalog lists repositories (meta.Repositories).
type Catalog interface {
	ListRepositories(ctx context.Context, last string, n int) ([]string, error)
}

// BlobStore is what the registry needs of blobs and links (meta.Blobs).
type BlobStore interface {
	RepositoryBlob(ctx context.Context, repo string, d digest.Digest) (meta.Blob, error)
	StoredBlob(ctx context.Context, d digest.Digest) (meta.Blob, error)
	RepositoriesWithBlob(ctx context.Context, d digest.Digest, n int) ([]string, error)
	LinkBlob(ctx context.Context, repo string, b meta.Blob, up meta.UploadClaim, w meta.Writer) error
	StoreBlob(ctx context.Context, repo string, b meta.Blob, up meta.UploadClaim, w meta.Writer, bytes meta.BlobBytes) (bool, error)
	TouchBlobLink(ctx context.Context, repo string, d digest.Digest, stale time.Time) (bool, error)
	UnlinkBlob(ctx context.Context, repo string, d digest.Digest) error
}

// UploadStore is what the registry needs of upload sessions (meta.Uploads).
type UploadStore interface {
	CreateUpload(ctx context.Context, u meta.Upload, limit int) error
	GetUpload(ctx context.Context, repo, id string) (meta.Upload, error)
	ClaimUpload(ctx context.Context, repo, id string, lease time.Duration) (meta.Upload, error)
	UploadLease(ctx context.Context, repo, id string) (time.Time, error)
	RenewUpload(ctx context.Context, id string, claim int64, lease time.Duration) (int64, error)
	ReleaseUpload(ctx context.Context, id string, claim int64) error
	AdvanceUpload(ctx context.Context, id string, claim, oldSize, newSize int64, hashState, storageState []byte) error
	DeleteUpload(ctx context.Context, id string, claim int64) error
}

// ManifestStore is what the registry needs of manifests and tags
// (meta.Manifests).
type ManifestStore interface {
	PutManifest(ctx context.Context, p meta.PutManifest) error
	GetManifest(ctx context.Context, repo, tag string, d digest.Digest, withContent bool) (meta.Manifest, error)
	DeleteManifest(ctx context.Context, repo string, d digest.Digest, actor string) error
	ConfirmManifest(ctx context.Context, repo string, d digest.Digest, stale time.Time) (bool, error)
	DeleteTag(ctx context.Context, repo, tag, actor string) error
	ListTags(ctx context.Context, repo, last string, n int) ([]string, error)
}

// ReferrerReader lists a subject's referrers without their annotations
// and reads the annotations of those a page answers (meta.Manifests).
type ReferrerReader interface {
	ReferrerEntries(ctx context.Context, q meta.ReferrerQuery) ([]meta.ReferrerEntry, error)
	ReferrerAnnotations(ctx context.Context, repo string, digests []digest.Digest) (map[digest.Digest]string, error)
}

// Options configure the registry.
type Options struct {
	// MaxManifestBytes caps a manifest body (default 4 MiB).
	MaxManifestBytes int64
	// Policy is the allow-list of artifact types.
	Policy oci.ArtifactPolicy
	// Auth decides access; nil means AllowAll.
	Auth   Authorizer
	Logger *slog.Logger
	// Proxy, if set, is the pull-through cache: consulted only for
	// repositories in a proxy-cache organization.
	Proxy Proxy
	// MaxOpenUploads caps the upload sessions one identity may have open
	// (0: no cap); beyond it a new upload answers 429 TOOMANYREQUESTS.
	MaxOpenUploads int
	// GCDelay is garbage collection's grace period (0: no collection). A
	// blob a client asks for (HEAD or GET) has its repository link
	// confirmed when it is older than half of it, so that a manifest the
	// client pushes next, naming the blob without uploading it, finds it.
	GCDelay time.Duration
	// Redirect sends blob downloads to the storage (S3 presigned URLs).
	Redirect Redirect
}

// Proxy is the pull-through cache (internal/proxy) as the handler sees
// it. Proxies must be cheap (it is asked on tag pulls and misses of every
// repository); Manifest and Blob are asked only when Proxies is true and
// return meta.ErrManifestNotFound / meta.ErrBlobNotFound (wrapped) when
// upstream has nothing either.
type Proxy interface {
	Proxies(ctx context.Context, repo string) bool
	// Manifest answers a pull by tag or by digest; cached is what the
	// repository has (nil if nothing).
	Manifest(ctx context.Context, repo, tag string, d digest.Digest, cached *meta.Manifest, withContent bool, who Puller) (meta.Manifest, error)
	// Blob stores and links a blob the repository's manifests name.
	Blob(ctx context.Context, repo string, d digest.Digest, who Puller) (meta.Blob, error)
}

// Puller is who pulls through the cache, as far as the cache needs it.
// Permissions are per repository: what one puller may reuse or create is
// no other's.
type Puller struct {
	// MayPull reports whether the puller may pull another repository
	// (what a gate holds there aside): only from one it may is a blob
	// linked without a download.
	MayPull func(repo string) bool
	// Create is how the pull creates the repository if it does not exist
	// (meta.Writer.Create), decided when the cache is about to store: as a
	// push does, the user or robot who may create it administers it; one
	// who may not (it existed when the pull was allowed, and was deleted
	// since), and an anonymous puller, create nothing (MustExist); an
	// access token creates it, administered by nobody, where its scopes
	// let it pull.
	Create func(ctx context.Context, repo string) (*meta.RepoCreate, error)
}

// identityDecider is the optional capability of an authorizer to decide
// for an identity outside its request (authz.Authorizer.Decide).
type identityDecider interface {
	Decide(ctx context.Context, id auth.Identity, repo, action string) (bool, error)
}

// puller is who pulls through the cache, from the pull's decision.
func (reg *Registry) puller(r *http.Request, d authz.Decision) Puller {
	return Puller{
		MayPull: reg.mayPull(r, d.Identity),
		Create: func(ctx context.Context, repo string) (*meta.RepoCreate, error) {
			id := d.Identity
			dec, ok := reg.authz.(identityDecider)
			switch {
			case !ok:
				// Auth mode none: anyone may create it; private, with
				// nobody's permission.
				return &meta.RepoCreate{}, nil
			case id.Kind == auth.KindToken:
				// An access token creates what its scopes let it pull
				// where nothing is (a first pull), private and with
				// nobody's permission; not a public repository outside
				// them, deleted since the pull was allowed.
				may, err := dec.Decide(ctx, id, repo, ActionPull)
				if err != nil {
					return nil, err
				}
				if !may {
					return &meta.RepoCreate{MustExist: true}, nil
				}
				return &meta.RepoCreate{}, nil
			case (id.Kind != auth.KindUser && id.Kind != auth.KindRobot) || id.ID == 0:
				// An anonymous puller creates nothing: a public
				// repository let it in, deleted since.
				return &meta.RepoCreate{MustExist: true}, nil
			}
			may, err := dec.Decide(ctx, id, repo, ActionPush)
			if err != nil {
				return nil, err
			}
			if !may {
				return &meta.RepoCreate{MustExist: true}, nil
			}
			return &meta.RepoCreate{AdminUserID: id.ID}, nil
		},
	}
}

// mayPull answers whether the pull's identity may pull another
// repository (a link's source), asked at most once per repository in the
// request. It decides on the identity, not on the request's credentials:
// the registry token of a docker, podman or containerd pull names only
// the repository pulled, and asked of another it answers a challenge.
// As for a mount's source, an authorizer failing is no source.
func (reg *Registry) mayPull(r *http.Request, id auth.Identity) func(repo string) bool {
	decide := reg.sourceDecider(r, id)
	var mu sync.Mutex
	asked := map[string]bool{}
	return func(repo string) bool {
		mu.Lock()
		defer mu.Unlock()
		may, ok := asked[repo]
		if !ok {
			may = decide(repo)
			asked[repo] = may
		}
		return may
	}
}

// sourceDecider decides a link's source for the pull's identity: a user
// or robot on its standing; an access token on its scopes when they were
// bounded by its creator's rights in this request (Basic credentials, or
// its secret as a bearer token); anyone else, and an access token's
// registry token (whose scopes its creator may no longer grant: they are
// bounded only on the token endpoint's decisions, not in the identity it
// carries), as an anonymous puller (public repositories). An authorizer
// that cannot decide for an identity (auth mode none) is asked as the
// request.
func (reg *Registry) sourceDecider(r *http.Request, id auth.Identity) func(repo string) bool {
	dec, ok := reg.authz.(identityDecider)
	if !ok {
		return func(repo string) bool {
			src, err := reg.authz.Authorize(r, repoScope(repo, ActionPull))
			return err == nil && src.Allowed()
		}
	}
	switch c := authz.CredentialsOf(r); {
	case (id.Kind == auth.KindUser || id.Kind == auth.KindRobot) && id.ID != 0:
	case id.Kind == auth.KindToken && (c.Basic || strings.HasPrefix(c.Bearer, authz.SecretPrefix)):
	default:
		id = auth.Anonymous
	}
	return func(repo string) bool {
		may, err := dec.Decide(r.Context(), id, repo, ActionPull)
		if err != nil {
			reg.log.Warn("proxy cache: decide a link's source", "repository", repo, "err", err)
		}
		return err == nil && may
	}
}

// proxied reports whether the repository is served by the pull-through
// cache.
func (reg *Registry) proxied(ctx context.Context, repo string) bool {
	return reg.opts.Proxy != nil && reg.opts.Proxy.Proxies(ctx, repo)
}

// errProxyPush refuses writes to a proxy-cache organization: its content
// is upstream's.
var errProxyPush = errorf(http.StatusForbidden, CodeDenied, "this organization is a proxy cache: pushes are refused", nil)

// Registry is the http.Handler of the /v2 API.
type Registry struct {
	meta    Stores
	store   storage.Driver
	opts    Options
	log     *slog.Logger
	authz   Authorizer
	maxList int
	bufs    sync.Pool // *[]byte copy buffers for upload bodies
}

// New returns the /v2 handler. It panics when md has Manifests and no
// Referrers: a wiring mistake, refused before any request is served.
func New(md Stores, store storage.Driver, opts Options) *Registry {
	if md.Manifests != nil && md.Referrers == nil {
		panic("registry.New: Stores.Manifests without Stores.Referrers")
	}
	if opts.MaxManifestBytes <= 0 {
		opts.MaxManifestBytes = 4 << 20
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	authz := opts.Auth
	if authz == nil {
		authz = AllowAll{}
	}
	reg := &Registry{meta: md, store: store, opts: opts, log: opts.Logger, authz: authz, maxList: 10000}
	reg.bufs.New = func() any { b := make([]byte, pipelineDepth*pipelinePart); return &b }
	return reg
}

// route is a parsed /v2 path.
type route struct {
	kind   string // base, catalog, tags, manifest, blob, uploads, upload, referrers
	name   string
	ref    string
	digest digest.Digest
}

// parsePath splits a /v2 path. Repository names may be nested, so the
// route is recognized from the end of the path; the name is validated
// before anything else touches it.
func parsePath(p string) (route, *Error) {
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		if p == "/v2" {
			return route{kind: "base"}, nil
		}
		return route{}, errorf(http.StatusNotFound, CodeUnsupported, "not a registry API path", nil)
	}
	if rest == "" {
		return route{kind: "base"}, nil
	}
	if rest == "_catalog" {
		return route{kind: "catalog"}, nil
	}
	segs := strings.Split(rest, "/")
	n := len(segs)
	var rt route
	var nameSegs []string
	switch {
	case n >= 3 && segs[n-2] == "tags" && segs[n-1] == "list":
		rt.kind, nameSegs = "tags", segs[:n-2]
	case n >= 4 && segs[n-3] == "blobs" && segs[n-2] == "uploads" && segs[n-1] == "":
		rt.kind, nameSegs = "uploads", segs[:n-3]
	case n >= 3 && segs[n-2] == "blobs" && segs[n-1] == "uploads":
		rt.kind, nameSegs = "uploads", segs[:n-2]
	case n >= 4 && segs[n-3] == "blobs" && segs[n-2] == "uploads":
		rt.kind, rt.ref, nameSegs = "upload", segs[n-1], segs[:n-3]
	case n >= 3 && segs[n-2] == "blobs":
		rt.kind, rt.ref, nameSegs = "blob", segs[n-1], segs[:n-2]
	case n >= 3 && segs[n-2] == "manifests":
		rt.kind, rt.ref, nameSegs = "manifest", segs[n-1], segs[:n-2]
	case n >= 3 && segs[n-2] == "referrers":
		rt.kind, rt.ref, nameSegs = "referrers", segs[n-1], segs[:n-2]
	default:
		return route{}, errorf(http.StatusNotFound, CodeUnsupported, "not a registry API path", nil)
	}
	rt.name = strings.Join(nameSegs, "/")
	if err := oci.ValidateName(rt.name); err != nil {
		return route{}, errorf(http.StatusBadRequest, CodeNameInvalid, err.Error(), map[string]string{"name": rt.name})
	}
	switch rt.kind {
	case "blob", "referrers":
		d, err := oci.ParseDigest(rt.ref)
		if err != nil {
			return route{}, errorf(http.StatusBadRequest, CodeDigestInvalid, err.Error(), nil)
		}
		rt.digest = d
	case "upload":
		if !validUploadID(rt.ref) {
			return route{}, errUploadUnknown
		}
	}
	return rt, nil
}

// ServeHTTP implements http.Handler.
func (reg *Registry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	rt, rerr := parsePath(r.URL.Path)
	if rerr != nil {
		writeError(w, r, rerr)
		return
	}
	var err error
	switch rt.kind {
	case "base":
		err = reg.base(w, r)
	case "catalog":
		err = reg.catalog(w, r)
	case "tags":
		err = reg.tags(w, r, rt)
	case "manifest":
		err = reg.manifest(w, r, rt)
	case "blob":
		err = reg.blob(w, r, rt)
	case "uploads":
		err = reg.startUpload(w, r, rt)
	case "upload":
		err = reg.upload(w, r, rt)
	case "referrers":
		err = reg.referrers(w, r, rt)
	}
	if err != nil {
		reg.fail(w, r, err)
	}
}

// fail answers an error: registry errors as they are, anything else as a
// logged internal error.
func (reg *Registry) fail(w http.ResponseWriter, r *http.Request, err error) {
	var e *Error
	if errors.As(err, &e) {
		writeError(w, r, e)
		return
	}
	var missingNS *meta.NamespaceMissingError
	if errors.As(err, &missingNS) {
		// The namespace went between authorization and commit.
		writeError(w, r, errorf(http.StatusForbidden, CodeDenied, missingNS.Error(), nil))
		return
	}
	if errors.Is(err, meta.ErrCreatorGone) {
		// The pushing account was deleted between authorization and commit.
		writeError(w, r, errorf(http.StatusForbidden, CodeDenied, "the account making this push was deleted", nil))
		return
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// The body stalled past the server's idle deadline
		// (http.bodyIdleTimeout); an upload kept what it received.
		reg.log.Info("request body stalled; request cut", "method", r.Method, "path", r.URL.Path)
		writeError(w, r, errorf(http.StatusRequestTimeout, CodeBlobUploadInvalid,
			"the request body made no progress in time; an upload keeps the bytes received: ask its status and resume", nil))
		return
	}
	if errors.Is(err, meta.ErrInvalidText) {
		// Input that slipped past validation and that the database cannot
		// store: the client's fault, not the server's.
		writeError(w, r, errorf(http.StatusBadRequest, CodeUnsupported, "the request holds a NUL byte or invalid UTF-8", nil))
		return
	}
	if errors.Is(err, storage.ErrFileTooLarge) {
		// A blob past what the storage holds in one file: no retry helps.
		reg.log.Error("blob too large for the storage: request refused", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, r, errorf(http.StatusRequestEntityTooLarge, CodeBlobUploadInvalid,
			"the blob is larger than this registry's storage holds in one file (storage.s3.partSize)", nil))
		return
	}
	if meta.StorageFull(err) {
		// Before the check below: an error with an answer of its own is
		// answered even when the request's context has ended (written to
		// a client that is gone, it goes nowhere; to one still there,
		// nothing written would reach it as an empty 200).
		reg.log.Error("storage full: request refused", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, r, errStorageFull)
		return
	}
	if errors.Is(err, context.Canceled) || r.Context().Err() != nil {
		reg.log.Debug("request ended by client", "method", r.Method, "path", r.URL.Path, "err", err)
		return
	}
	reg.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	writeError(w, r, errInternal)
}

func (reg *Registry) base(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return notAllowed(w, "GET, HEAD")
	}
	if _, err := reg.authorize(w, r, Resource{}); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", "2")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		w.Write([]byte("{}"))
	}
	return nil
}

func repoScope(name string, actions ...string) Resource {
	return Resource{Type: "repository", Name: name, Actions: actions}
}
