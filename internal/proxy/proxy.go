// Package proxy is the pull-through cache: an organization configured as
// a proxy cache for an upstream registry (or one namespace of it) serves
// pulls of repositories and tags it does not have by fetching them
// upstream and keeping them. Manifests are fetched when pulled; blobs and
// the children of an index when first requested. A cached tag is checked
// against upstream (one HEAD, or a GET when the HEAD's answer lacks the
// digest) once it is older than the organization's expiration; content pulled by digest is kept for the expiration after
// its last pull (meta's proxyKept), and then as long as gc.delay keeps
// anything unreferenced.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/singleflight"

	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/storage"
)

// Stores are the parts of the metadata store the cache uses.
type Stores struct {
	Caches CacheStore // meta.ProxyCaches
	Blobs  BlobStore  // meta.Blobs
}

// CacheStore is the table of proxy organizations and the cache's record
// of upstream checks (meta.ProxyCaches).
type CacheStore interface {
	ProxyCaches(ctx context.Context) ([]meta.ProxyCache, error)
	ProxyTagChecked(ctx context.Context, repo, tag string) (digest.Digest, time.Time, error)
	TouchProxyTag(ctx context.Context, repo, tag string, d digest.Digest, at time.Time) error
	ProxyBlobReferenced(ctx context.Context, repo string, d digest.Digest) (size int64, ok bool, err error)
	PutProxyManifest(ctx context.Context, p meta.PutManifest, checkedAt time.Time) error
	QuotaRoom(ctx context.Context, ns string, added int64) error
}

// BlobStore stores and links the blobs the cache fetches (meta.Blobs).
type BlobStore interface {
	StoredBlob(ctx context.Context, d digest.Digest) (meta.Blob, error)
	RepositoryBlob(ctx context.Context, repo string, d digest.Digest) (meta.Blob, error)
	NamespaceRepositoriesWithBlob(ctx context.Context, ns string, d digest.Digest, n int) ([]string, error)
	LinkBlob(ctx context.Context, repo string, b meta.Blob, up meta.UploadClaim, w meta.Writer) error
	StoreBlob(ctx context.Context, repo string, b meta.Blob, up meta.UploadClaim, w meta.Writer, bytes meta.BlobBytes) (bool, error)
}

// Sealer seals upstream passwords at rest (auth.Sealer).
type Sealer interface {
	Seal(plaintext []byte) string
	Open(sealed string) ([]byte, error)
}

// Options configure the cache.
type Options struct {
	// Transport carries upstream requests; the server passes the SSRF
	// guard's. Nil means http.DefaultTransport.
	Transport http.RoundTripper
	Policy    oci.ArtifactPolicy
	// MaxManifestBytes caps an upstream manifest (default 4 MiB).
	MaxManifestBytes int64
	// ConfigTTL is how long the table of proxy organizations is cached
	// before it is read again (default 10s). Changes made through this
	// replica's API apply at once (Invalidate).
	ConfigTTL time.Duration
	// BlobTimeout bounds one upstream blob download (default 1h).
	BlobTimeout time.Duration
	// BlobStall cuts a blob download that delivers nothing for this long
	// (default 2m).
	BlobStall time.Duration
	// ManifestTimeout bounds one upstream manifest fetch or check
	// (default 2m): an upstream that accepts and never answers must not
	// hold the pulls waiting on it, nor their goroutines, for ever.
	ManifestTimeout time.Duration
	// MaxManifestFetches bounds the upstream manifest fetches and checks
	// one proxy organization runs at once in this process (default 8):
	// each holds up to a manifest's size while its upstream answers. A
	// pull that needs another waits for a turn up to ManifestWait
	// (default ManifestTimeout), then is answered 429 TOOMANYREQUESTS.
	MaxManifestFetches int
	ManifestWait       time.Duration
	// MaxBlobFetches bounds the upstream blob downloads one proxy
	// organization runs at once in this process (default 16): each
	// outlives the pulls that asked for it, up to BlobTimeout. A pull of a
	// blob that needs another waits for a turn up to BlobWait (default 2
	// minutes), then is answered 429 TOOMANYREQUESTS.
	MaxBlobFetches int
	BlobWait       time.Duration
	// NotFoundTTL is how long a manifest the upstream answered 404 for
	// (by tag or digest, per organization, upstream and repository) is
	// answered 404 MANIFEST_UNKNOWN again without asking the upstream
	// (default 60s; kept in this process, at most maxMisses of them).
	NotFoundTTL time.Duration
	// Now is the clock (tests).
	Now    func() time.Time
	Logger *slog.Logger
}

// Service is the pull-through cache.
type Service struct {
	db      Stores
	store   storage.Driver
	sealer  Sealer
	opts    Options
	log     *slog.Logger
	config  atomic.Pointer[snapshot]
	loading sync.Mutex
	flight  singleflight.Group
	// insecure carries the requests to upstreams whose organization
	// turned TLS verification off.
	insecure http.RoundTripper
	// fetching bounds the manifest fetches of each organization,
	// downloading its blob downloads.
	fetching    orgLimiter
	downloading orgLimiter
	// misses remembers the manifests upstreams do not have, for
	// NotFoundTTL.
	misses *missCache
}

// snapshot is the table of proxy organizations at one time.
type snapshot struct {
	byOrg  map[string]meta.ProxyCache
	loaded time.Time
}

// New returns the cache.
func New(db Stores, store storage.Driver, sealer Sealer, opts Options) *Service {
	if opts.Transport == nil {
		opts.Transport = http.DefaultTransport
	}
	if opts.MaxManifestBytes <= 0 {
		opts.MaxManifestBytes = 4 << 20
	}
	if opts.ConfigTTL <= 0 {
		opts.ConfigTTL = 10 * time.Second
	}
	if opts.BlobTimeout <= 0 {
		opts.BlobTimeout = time.Hour
	}
	if opts.BlobStall <= 0 {
		opts.BlobStall = 2 * time.Minute
	}
	if opts.ManifestTimeout <= 0 {
		opts.ManifestTimeout = 2 * time.Minute
	}
	if opts.MaxManifestFetches <= 0 {
		opts.MaxManifestFetches = 8
	}
	if opts.ManifestWait <= 0 {
		opts.ManifestWait = opts.ManifestTimeout
	}
	if opts.MaxBlobFetches <= 0 {
		opts.MaxBlobFetches = 16
	}
	if opts.BlobWait <= 0 {
		opts.BlobWait = 2 * time.Minute
	}
	if opts.NotFoundTTL <= 0 {
		opts.NotFoundTTL = defaultNotFoundTTL
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	insecure := opts.Transport
	if t, ok := opts.Transport.(*http.Transport); ok {
		// One transport for every insecure upstream, made once: a clone
		// per fetch would leave a pool of idle connections behind each.
		t = t.Clone()
		t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // the organization asked for it
		insecure = t
	}
	return &Service{db: db, store: store, sealer: sealer, opts: opts, log: opts.Logger, insecure: insecure,
		fetching: orgLimiter{n: opts.MaxManifestFetches}, downloading: orgLimiter{n: opts.MaxBlobFetches},
		misses: newMissCache(opts.NotFoundTTL, maxMisses)}
}

// SealPassword seals an upstream password for the store.
func (s *Service) SealPassword(pw string) string { return s.sealer.Seal([]byte(pw)) }

// ValidateUpstream checks an upstream_registry value.
func (s *Service) ValidateUpstream(upstream string, insecure bool) error {
	_, _, err := ParseUpstream(upstream, insecure)
	return err
}

// Invalidate makes the next lookup read the configuration again, and
// forgets the upstream misses remembered (a new upstream or account may
// have what the old one had not).
func (s *Service) Invalidate() {
	s.config.Store(nil)
	s.misses.reset()
}

// lookup returns the proxy configuration of the repository's
// organization. It reads a snapshot refreshed every ConfigTTL; while one
// request refreshes it the others use the previous one.
func (s *Service) lookup(ctx context.Context, repo string) (meta.ProxyCache, string, bool) {
	org, path, ok := strings.Cut(repo, "/")
	if !ok {
		return meta.ProxyCache{}, "", false
	}
	snap := s.config.Load()
	if snap == nil || s.opts.Now().Sub(snap.loaded) > s.opts.ConfigTTL {
		if snap == nil {
			s.loading.Lock() // nothing to fall back on: wait for the load
		} else if !s.loading.TryLock() {
			pc, ok := snap.byOrg[org]
			return pc, path, ok
		}
		if cur := s.config.Load(); cur != nil && cur != snap && s.opts.Now().Sub(cur.loaded) <= s.opts.ConfigTTL {
			snap = cur // loaded meanwhile
		} else if fresh, err := s.load(ctx); err != nil {
			s.log.Error("proxy cache: read configuration", "err", err)
		} else {
			snap = fresh
		}
		s.loading.Unlock()
	}
	if snap == nil {
		return meta.ProxyCache{}, "", false
	}
	pc, ok := snap.byOrg[org]
	return pc, path, ok
}

func (s *Service) load(ctx context.Context) (*snapshot, error) {
	list, err := s.db.Caches.ProxyCaches(context.WithoutCancel(ctx))
	if err != nil {
		return nil, err
	}
	snap := &snapshot{byOrg: make(map[string]meta.ProxyCache, len(list)), loaded: s.opts.Now()}
	for _, pc := range list {
		snap.byOrg[pc.Namespace] = pc
	}
	s.config.Store(snap)
	return snap, nil
}

// Proxies reports whether the repository is in a proxy-cache
// organization. It costs a map lookup (and, once per ConfigTTL, a query).
func (s *Service) Proxies(ctx context.Context, repo string) bool {
	_, _, ok := s.lookup(ctx, repo)
	return ok
}

// upstream is where a proxied repository's content comes from.
type upstream struct {
	repo name.Repository
	opts []remote.Option
	// rt is the transport opts carry (checkTag watches the answers on it).
	rt  http.RoundTripper
	ttl time.Duration
}

// ParseUpstream splits "host[:port][/prefix]" into the registry and the
// repository prefix, checking both.
func ParseUpstream(s string, insecure bool) (name.Registry, string, error) {
	s = strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(s, "https://"), "http://"), "/")
	host, prefix, _ := strings.Cut(s, "/")
	var nopts []name.Option
	if insecure {
		nopts = append(nopts, name.Insecure)
	}
	reg, err := name.NewRegistry(host, append(nopts, name.StrictValidation)...)
	if err != nil {
		return name.Registry{}, "", fmt.Errorf("upstream registry %q: %w", s, err)
	}
	if prefix != "" {
		if _, err := name.NewRepository(host+"/"+prefix, nopts...); err != nil {
			return name.Registry{}, "", fmt.Errorf("upstream namespace %q: %w", prefix, err)
		}
	}
	return reg, prefix, nil
}

func (s *Service) upstreamOf(ctx context.Context, pc meta.ProxyCache, path string) (upstream, error) {
	reg, prefix, err := ParseUpstream(pc.Upstream, pc.Insecure)
	if err != nil {
		return upstream{}, err
	}
	if prefix != "" {
		path = prefix + "/" + path
	}
	repo := reg.Repo(path)
	rt := s.opts.Transport
	if pc.Insecure {
		rt = s.insecure
	}
	// A manifest is read no further than Berth's cap: go-containerregistry
	// alone would hold up to 100 MiB per fetch.
	rt = events.UpstreamLimits{Next: rt, MaxManifestBytes: s.opts.MaxManifestBytes}
	if !pc.Insecure {
		// HTTPS only, credentials included, even to a loopback or private
		// address (where go-containerregistry would fall back to plain
		// HTTP by itself); insecure allows plain HTTP.
		rt = events.HTTPSOnly{Next: rt, Host: reg.RegistryStr(), Allow: "set insecure to true to allow it"}
	}
	// 429 is not retried here: the pulling client is told at once, with
	// Retry-After (upstreamError), rather than kept waiting while the
	// upstream's limit holds.
	opts := []remote.Option{remote.WithContext(ctx), remote.WithTransport(rt), remote.WithUserAgent("berth-proxy-cache"),
		remote.WithRetryStatusCodes(http.StatusRequestTimeout, http.StatusInternalServerError, http.StatusBadGateway,
			http.StatusServiceUnavailable, http.StatusGatewayTimeout)}
	if pc.Username != "" {
		pw := ""
		if pc.PasswordSealed != "" {
			b, err := s.sealer.Open(pc.PasswordSealed)
			if err != nil {
				return upstream{}, fmt.Errorf("unseal upstream password of %s: %w", pc.Namespace, err)
			}
			pw = string(b)
		}
		opts = append(opts, remote.WithAuth(&authn.Basic{Username: pc.Username, Password: pw}))
	}
	return upstream{repo: repo, opts: opts, rt: rt, ttl: time.Duration(pc.ExpirationS) * time.Second}, nil
}

// notFound reports whether an upstream error says the content is not
// there (as opposed to the upstream failing).
func notFound(err error) bool {
	var terr *transport.Error
	if errors.As(err, &terr) {
		return terr.StatusCode == http.StatusNotFound
	}
	return false
}
