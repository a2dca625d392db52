// Package config holds Berth's configuration: defaults, a YAML file,
// BERTH_* environment variables and command-line flags, in that order of
// precedence, and validation that names the field at fault.
package config

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/berth-dev/berth/internal/oci"
)

// Config is the whole configuration of a Berth server.
type Config struct {
	// Addr is the HTTP listen address.
	Addr string `yaml:"addr"`
	// DataDir holds the embedded defaults: the SQLite database and the
	// filesystem storage.
	DataDir  string   `yaml:"dataDir"`
	Database Database `yaml:"database"`
	Storage  Storage  `yaml:"storage"`
	Auth     Auth     `yaml:"auth"`
	Registry Registry `yaml:"registry"`
	HTTP     HTTP     `yaml:"http"`
	Log      Log      `yaml:"log"`
	// ExternalURL is how clients reach the registry (scheme://host[:port]);
	// notification payloads use it for docker_url and homepage. Empty:
	// http:// and the listen address.
	ExternalURL string `yaml:"externalURL"`
	// SecretKey (32 bytes, base64) seals stored secrets such as webhook
	// signing secrets. Empty: a key generated in DataDir/secret.key.
	// Replicas sharing a database must share it.
	SecretKey     string        `yaml:"secretKey"`
	Notifications Notifications `yaml:"notifications"`
	Scan          Scan          `yaml:"scan"`
	GC            GC            `yaml:"gc"`
	Lifecycle     Lifecycle     `yaml:"lifecycle"`
	Graph         Graph         `yaml:"graph"`
	Metrics       Metrics       `yaml:"metrics"`
	Runtime       Runtime       `yaml:"runtime"`
	// ProxyCache bounds the pull-through cache's upstream work.
	ProxyCache ProxyCache `yaml:"proxyCache"`
	// AllowedArtifactTypes is Quay's ALLOWED_OCI_ARTIFACT_TYPES: a map from
	// config media type to allowed layer media types. Empty means the
	// default list (images, Helm charts, cosign signatures, SBOMs and
	// attestations).
	AllowedArtifactTypes map[string][]string `yaml:"ALLOWED_OCI_ARTIFACT_TYPES"`
	// FeatureUserInitialize enables POST /api/v1/user/initialize, which
	// creates the first user while none exists (Quay's setting).
	FeatureUserInitialize bool `yaml:"FEATURE_USER_INITIALIZE"`
	// CreatePrivateRepoOnPush makes repositories created by a push private.
	CreatePrivateRepoOnPush bool `yaml:"CREATE_PRIVATE_REPO_ON_PUSH"`
	// CreateNamespaceOnPush lets a push to an unknown namespace create an
	// organization owned by the pusher.
	CreateNamespaceOnPush bool `yaml:"CREATE_NAMESPACE_ON_PUSH"`
}

// Database selects the metadata database.
type Database struct {
	// URL is postgres://... for PostgreSQL; empty means SQLite in DataDir.
	URL string `yaml:"url"`
}

// Storage selects the blob storage driver.
type Storage struct {
	// Driver is "filesystem" (the default) or "s3".
	Driver     string     `yaml:"driver"`
	Filesystem Filesystem `yaml:"filesystem"`
	S3         S3         `yaml:"s3"`
}

// Filesystem configures the filesystem driver.
type Filesystem struct {
	// RootDirectory defaults to DataDir/storage.
	RootDirectory string `yaml:"rootDirectory"`
	// Fsync flushes each committed blob to disk before it is acknowledged.
	Fsync bool `yaml:"fsync"`
}

// Auth selects how requests are authenticated.
type Auth struct {
	// Mode "token" (the default) authenticates every push and every pull
	// of a private repository (Docker token auth, and Basic auth on /v2).
	// Mode "none" runs the registry open, for local development and tests.
	Mode string `yaml:"mode"`
	// TokenTTL is the lifetime of registry tokens, 60s to 24h.
	TokenTTL time.Duration `yaml:"tokenTTL"`
	// Realm is the token endpoint URL announced in challenges; empty
	// is externalURL's /v2/auth, or without externalURL derived from each
	// request's Host and TLS (set one of them behind a proxy that ends
	// TLS or rewrites Host).
	Realm string `yaml:"realm"`
	// Service is the token audience.
	Service string `yaml:"service"`
}

// Registry tunes the /v2 API.
type Registry struct {
	// MaxManifestBytes caps the size of a pushed manifest.
	MaxManifestBytes int64 `yaml:"maxManifestBytes"`
	// AllowV11Artifacts admits image-spec v1.1 artifacts (empty config and
	// an artifactType) whose artifactType is not in the allow-list.
	AllowV11Artifacts bool `yaml:"allowV11Artifacts"`
	// MaxOpenUploads caps the upload sessions one identity may have open
	// at once (0: no cap).
	MaxOpenUploads int `yaml:"maxOpenUploads"`
}

// HTTP bounds what one client connection may hold: slow or stalled
// clients are cut instead of holding memory and upload claims forever.
type HTTP struct {
	// ReadHeaderTimeout bounds the time to receive a request's headers.
	ReadHeaderTimeout time.Duration `yaml:"readHeaderTimeout"`
	// MaxHeaderBytes caps the size of a request's headers.
	MaxHeaderBytes int `yaml:"maxHeaderBytes"`
	// BodyIdleTimeout cuts a request whose body delivers less than 16 KiB
	// in this long (stalled or trickling clients); an upload cut this way
	// keeps the bytes it received and can be resumed.
	BodyIdleTimeout time.Duration `yaml:"bodyIdleTimeout"`
	// IdleTimeout closes a kept-alive connection with no request.
	IdleTimeout time.Duration `yaml:"idleTimeout"`
	// ShutdownDelay is how long a stopping server (SIGTERM) keeps serving
	// while /readyz answers 503, so that load balancers stop sending it
	// requests before it closes its listener (0: close at once).
	ShutdownDelay time.Duration `yaml:"shutdownDelay"`
	// ShutdownTimeout bounds how long a stopping server lets in-flight
	// requests finish; an upload still streaming then is cut and keeps
	// what it received, resumable on any replica.
	ShutdownTimeout time.Duration `yaml:"shutdownTimeout"`
	// TrustedProxies are the load balancers in front of Berth (CIDRs or
	// addresses): a request from one is taken to come from the address
	// its X-Forwarded-For names (the rightmost that is not a trusted
	// proxy), for login throttling and the logs. Empty: the header is
	// ignored, and every client behind a load balancer shares its address.
	TrustedProxies []string `yaml:"trustedProxies"`
}

// TokenRealm is the token endpoint announced in challenges: auth.realm,
// else externalURL's /v2/auth, else "" (derived from each request).
func (c Config) TokenRealm() string {
	if c.Auth.Realm != "" || c.ExternalURL == "" {
		return c.Auth.Realm
	}
	return strings.TrimRight(c.ExternalURL, "/") + "/v2/auth"
}

// TrustedProxyPrefixes parses TrustedProxies.
func (h HTTP) TrustedProxyPrefixes() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range h.TrustedProxies {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("%q is neither a CIDR nor an IP address", s)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// Notifications configures delivery.
type Notifications struct {
	// AllowedHosts lets webhooks reach internal addresses, which are
	// refused by default (loopback, link-local and metadata, private
	// ranges): CIDRs, IPs, host names, or "private" / "loopback".
	AllowedHosts []string `yaml:"allowedHosts"`
	// Workers is the number of concurrent deliveries per process.
	Workers      int    `yaml:"workers"`
	SMTPAddr     string `yaml:"smtpAddr"`
	SMTPFrom     string `yaml:"smtpFrom"`
	SMTPUsername string `yaml:"smtpUsername"`
	SMTPPassword string `yaml:"smtpPassword"`
}

// Scan configures the security scanner.
type Scan struct {
	// Enabled indexes and matches every image manifest stored.
	Enabled bool `yaml:"enabled"`
	// Workers is the number of concurrent scan jobs per process.
	Workers int `yaml:"workers"`
	// SBOM attaches each scanned image's computed SPDX SBOM as a referrer.
	SBOM bool `yaml:"sbom"`
	// MaxLayerBytes: a larger (compressed) layer is not read; its image's
	// status is unsupported.
	MaxLayerBytes int64 `yaml:"maxLayerBytes"`
	// MaxUncompressedBytes bounds what one layer may expand to
	// (decompression bombs).
	MaxUncompressedBytes int64 `yaml:"maxUncompressedBytes"`
	// MaxFileBytes: larger files in a layer are skipped by the extractors.
	MaxFileBytes int64  `yaml:"maxFileBytes"`
	VulnDB       VulnDB `yaml:"vulndb"`
}

// VulnDB configures where vulnerability data is fetched from, and when.
type VulnDB struct {
	// BaseURL serves OSV's <BaseURL>/<Ecosystem>/all.zip files: OSV's
	// public bucket, or an internal mirror for air-gapped sites.
	BaseURL string `yaml:"baseURL"`
	// CPEMappingURL serves Red Hat's repository-to-cpe.json.
	CPEMappingURL string `yaml:"cpeMappingURL"`
	// UpdateInterval runs `berth admin vulndb fetch` on this schedule in
	// the server (one replica at a time). Zero: never.
	UpdateInterval time.Duration `yaml:"updateInterval"`
	// StaleAfter is the age past which an ecosystem's data is reported
	// stale (security endpoint, logs).
	StaleAfter time.Duration `yaml:"staleAfter"`
}

// GC configures online garbage collection (manifests, blob links, blobs)
// and housekeeping (abandoned uploads, retention of bookkeeping rows).
type GC struct {
	// Enabled runs a pass in the server every Interval.
	Enabled  bool          `yaml:"enabled"`
	Interval time.Duration `yaml:"interval"`
	// Delay is the grace period: a manifest, a repository's link to a
	// blob, or a blob created, linked or confirmed more recently is never
	// collected (a client's manifest PUT must find what it uploaded).
	Delay time.Duration `yaml:"delay"`
	// UploadExpiry: an upload session nobody wrote to for this long is
	// removed with its bytes, and so are upload bytes no session owns.
	UploadExpiry time.Duration `yaml:"uploadExpiry"`
	// UploadMaxAge: an upload session opened this long ago is removed
	// with its bytes however recently it was written to (CNCF
	// Distribution's uploadpurging age): its bytes count in no quota
	// until a manifest names them. At least 1h; it cannot be turned off.
	UploadMaxAge time.Duration `yaml:"uploadMaxAge"`
	// TimeMachine keeps what a tag pointed at, after the tag was deleted,
	// expired, pruned or moved, restorable for this long (Quay's time
	// machine: POST .../tag/{tag}/restore); 0 keeps nothing.
	TimeMachine time.Duration `yaml:"timeMachine"`
	// Retention keeps bookkeeping rows this long; 0 keeps them forever.
	Retention Retention `yaml:"retention"`
}

// Lifecycle bounds tag expirations as Quay's LABELED_EXPIRATION_MINIMUM
// and LABELED_EXPIRATION_MAXIMUM do: every expiration, set through the
// API or by an image's quay.expires-after label, is moved to at least
// ExpirationMinimum and at most ExpirationMaximum after the tag's start
// (when it was last pushed or moved).
type Lifecycle struct {
	// ExpirationMinimum is Quay's 1h by default; 0 sets no minimum.
	ExpirationMinimum time.Duration `yaml:"expirationMinimum"`
	// ExpirationMaximum is Quay's 104w (17472h) by default.
	ExpirationMaximum time.Duration `yaml:"expirationMaximum"`
}

// Graph configures the base-image graph (docs/graph.md).
type Graph struct {
	// Enabled indexes every image stored (what it is built on) and fires
	// base_image_updated when a base tag moves.
	Enabled bool `yaml:"enabled"`
	// Debounce delays base_image_updated after a base tag moves; a tag
	// that moves again within it fires once, for where it ends (0: at
	// once).
	Debounce time.Duration `yaml:"debounce"`
	// Workers index images and fire triggers.
	Workers int `yaml:"workers"`
}

// Runtime tunes the Go runtime of `berth serve`.
type Runtime struct {
	// GCHeapFloorBytes keeps the garbage collector's heap goal at least
	// this large while the live heap is small (server.HeapFloor): far
	// fewer collections under load for that much more memory. 0 leaves
	// the goal to GOGC alone, as does setting GOGC in the environment.
	GCHeapFloorBytes int64 `yaml:"gcHeapFloorBytes"`
	// ExtraProcs is added to Go's GOMAXPROCS, the number of threads that
	// run Go code at once (server.ExtraProcs): a thread blocked in a file
	// system call (an fsync, a direct write, SQLite's reads and writes)
	// holds its share until Go's monitor takes it back, and the extra ones
	// keep the cores busy meanwhile. 0 leaves GOMAXPROCS to Go, as does
	// setting GOMAXPROCS in the environment; it is not added under a CPU
	// limit below the machine's cores (a container's quota).
	ExtraProcs int `yaml:"extraProcs"`
}

// Metrics configures the Prometheus endpoint (docs/metrics.md).
type Metrics struct {
	// Enabled serves /metrics.
	Enabled bool `yaml:"enabled"`
	// Addr, if set, serves /metrics on its own listener (HOST:PORT), with
	// no authentication (meant for a private network), and not on the
	// main one. Empty: on the main listener.
	Addr string `yaml:"addr"`
	// Public lets anyone scrape /metrics on the main listener; false asks
	// for a superuser's Basic credentials or API token there.
	Public bool `yaml:"public"`
	// Pprof also serves Go's runtime profiles (/debug/pprof/) on the
	// metrics listener, for profiling a running server. It needs Addr:
	// profiles are never served on the main listener.
	Pprof bool `yaml:"pprof"`
}

// Retention of bookkeeping rows.
type Retention struct {
	// Events: outbox events that every subscriber of the change feed has
	// handled (never one a delivery still needs).
	Events time.Duration `yaml:"events"`
	// DoneJobs and DeadJobs: completed and dead-lettered jobs.
	DoneJobs time.Duration `yaml:"doneJobs"`
	DeadJobs time.Duration `yaml:"deadJobs"`
	// Attempts: notification delivery attempts.
	Attempts time.Duration `yaml:"attempts"`
	// Audit: audit log entries.
	Audit time.Duration `yaml:"audit"`
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text or json
}

// Default returns the configuration of `berth serve` with no settings.
func Default() Config {
	return Config{
		Addr:     ":5000",
		DataDir:  "berth-data",
		Storage:  Storage{Driver: "filesystem", Filesystem: Filesystem{Fsync: true}, S3: defaultS3()},
		Auth:     Auth{Mode: "token", TokenTTL: 5 * time.Minute, Service: "berth"},
		Registry: Registry{MaxManifestBytes: 4 << 20, AllowV11Artifacts: true, MaxOpenUploads: 1000},
		GC: GC{Enabled: true, Interval: 10 * time.Minute, Delay: time.Hour, UploadExpiry: 24 * time.Hour, UploadMaxAge: 7 * 24 * time.Hour, TimeMachine: 7 * 24 * time.Hour,
			Retention: Retention{Events: 30 * 24 * time.Hour, DoneJobs: 7 * 24 * time.Hour, DeadJobs: 90 * 24 * time.Hour,
				Attempts: 30 * 24 * time.Hour, Audit: 365 * 24 * time.Hour}},
		Graph:   Graph{Enabled: true, Workers: 2},
		Metrics: Metrics{Enabled: true},
		Runtime: Runtime{GCHeapFloorBytes: 32 << 20, ExtraProcs: 1},
		HTTP:    HTTP{ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 64 << 10, BodyIdleTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute, ShutdownTimeout: 30 * time.Second},
		Log:     Log{Level: "info", Format: "text"},

		CreatePrivateRepoOnPush: true,
		Notifications:           Notifications{Workers: 4},
		ProxyCache:              defaultProxyCache(),
		Lifecycle:               Lifecycle{ExpirationMinimum: time.Hour, ExpirationMaximum: 104 * 7 * 24 * time.Hour}, // Quay's 1h and 104w
		Scan: Scan{Enabled: true, Workers: 2, SBOM: true, MaxLayerBytes: 2 << 30,
			MaxUncompressedBytes: 8 << 30, MaxFileBytes: 256 << 20,
			VulnDB: VulnDB{BaseURL: "https://osv-vulnerabilities.storage.googleapis.com",
				CPEMappingURL: "https://security.access.redhat.com/data/meta/v1/repository-to-cpe.json", StaleAfter: 7 * 24 * time.Hour}},
	}
}

// LoadFile merges a YAML file over c: each setting the file names replaces
// c's, a map or a list whole. Unknown keys are refused, so a typo does not
// silently fall back to a default. A duration is written with its unit
// (90s, 15m, 24h), or as 0.
func (c *Config) LoadFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	// A duration may be written 0, as the documentation says to turn
	// things off; any other bare number is refused with the setting's name.
	if b, err = zeroDurations(b); err != nil {
		return fmt.Errorf("config file %s:\n%w", path, err)
	}
	// A map the file names replaces the one set before (defaults, the
	// BERTH_CONFIG_DEFAULTS file) instead of being merged into it, as a
	// list does: the decoder adds a mapping's keys to a map it is given.
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err == nil && len(doc.Content) > 0 {
		clearNamedMaps(doc.Content[0], reflect.ValueOf(c).Elem())
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, errEOF) {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	return nil
}

// DatabaseURL is the metadata database to open.
func (c *Config) DatabaseURL() string {
	if c.Database.URL != "" {
		return c.Database.URL
	}
	return filepath.Join(c.DataDir, "berth.db")
}

// StorageRoot is the filesystem driver's root directory.
func (c *Config) StorageRoot() string {
	if c.Storage.Filesystem.RootDirectory != "" {
		return c.Storage.Filesystem.RootDirectory
	}
	return filepath.Join(c.DataDir, "storage")
}

// ArtifactPolicy is the effective allow-list.
func (c *Config) ArtifactPolicy() oci.ArtifactPolicy {
	allowed := c.AllowedArtifactTypes
	if len(allowed) == 0 {
		allowed = oci.DefaultAllowedArtifacts()
	}
	return oci.ArtifactPolicy{Allowed: allowed, AllowV11Artifacts: c.Registry.AllowV11Artifacts}
}

// Validate checks every setting and reports all problems, each with its
// field path.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if _, port, err := net.SplitHostPort(c.Addr); err != nil {
		bad("addr", "%q is not HOST:PORT: %v", c.Addr, err)
	} else if port == "" {
		bad("addr", "%q has no port", c.Addr)
	}
	if c.DataDir == "" {
		bad("dataDir", "must not be empty")
	}
	if u := c.Database.URL; u != "" && !strings.HasPrefix(u, "postgres://") && !strings.HasPrefix(u, "postgresql://") &&
		!strings.HasPrefix(u, "sqlite:") {
		bad("database.url", "%q: want postgres://..., postgresql://... or sqlite:PATH", redactURL(u))
	}
	switch c.Storage.Driver {
	case "filesystem":
	case "s3":
		c.Storage.S3.validate(bad)
	default:
		bad("storage.driver", "unknown driver %q (supported: filesystem, s3)", c.Storage.Driver)
	}
	switch c.Auth.Mode {
	case "none", "token":
	default:
		bad("auth.mode", "unknown mode %q (supported: token, none)", c.Auth.Mode)
	}
	// Docker's token specification asks for expires_in of at least 60
	// seconds, and the docker client takes a token for 60 s: one shorter
	// would expire under a client that still uses it.
	if c.Auth.TokenTTL < time.Minute || c.Auth.TokenTTL > 24*time.Hour {
		bad("auth.tokenTTL", "%s is outside 60s..24h (Docker clients hold a registry token for at least 60s)", c.Auth.TokenTTL)
	}
	if c.Auth.Service == "" {
		bad("auth.service", "must not be empty")
	}
	if c.Auth.Realm != "" && !strings.HasPrefix(c.Auth.Realm, "http://") && !strings.HasPrefix(c.Auth.Realm, "https://") {
		bad("auth.realm", "%q is not an http(s) URL", c.Auth.Realm)
	}
	if m := c.Registry.MaxManifestBytes; m < 1<<10 || m > 64<<20 {
		bad("registry.maxManifestBytes", "%d is outside 1024..67108864", m)
	}
	if d := c.HTTP.ReadHeaderTimeout; d < time.Second || d > 10*time.Minute {
		bad("http.readHeaderTimeout", "%s is outside 1s..10m", d)
	}
	if m := c.HTTP.MaxHeaderBytes; m < 4<<10 || m > 16<<20 {
		bad("http.maxHeaderBytes", "%d is outside 4096..16777216", m)
	}
	if d := c.HTTP.BodyIdleTimeout; d < time.Second || d > time.Hour {
		bad("http.bodyIdleTimeout", "%s is outside 1s..1h", d)
	}
	if d := c.HTTP.IdleTimeout; d < time.Second || d > time.Hour {
		bad("http.idleTimeout", "%s is outside 1s..1h", d)
	}
	if d := c.HTTP.ShutdownDelay; d < 0 || d > 10*time.Minute {
		bad("http.shutdownDelay", "%s is outside 0s..10m", d)
	}
	if d := c.HTTP.ShutdownTimeout; d < time.Second || d > time.Hour {
		bad("http.shutdownTimeout", "%s is outside 1s..1h", d)
	}
	if _, err := c.HTTP.TrustedProxyPrefixes(); err != nil {
		bad("http.trustedProxies", "%v", err)
	}
	if c.SecretKey != "" {
		// Checked here, before the database is opened (and migrated); the
		// key itself is never in the message.
		if k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(c.SecretKey)); err != nil || len(k) != 32 {
			bad("secretKey", "want 32 bytes, base64-encoded (openssl rand -base64 32)")
		}
	}
	if m := c.Registry.MaxOpenUploads; m < 0 {
		bad("registry.maxOpenUploads", "%d must not be negative (0: no cap)", m)
	}
	c.ProxyCache.validate(bad)
	if d := c.GC.Interval; d < time.Second || d > 24*time.Hour {
		bad("gc.interval", "%s is outside 1s..24h", d)
	}
	if d := c.GC.Delay; d < time.Second {
		bad("gc.delay", "%s is under 1s", d)
	}
	if d := c.GC.TimeMachine; d < 0 || d > 10*365*24*time.Hour {
		bad("gc.timeMachine", "%s is outside 0 (off)..10 years", d)
	}
	if d := c.Lifecycle.ExpirationMinimum; d < 0 {
		bad("lifecycle.expirationMinimum", "%s is negative (0: no minimum)", d)
	}
	if d := c.Lifecycle.ExpirationMaximum; d < time.Second || d < c.Lifecycle.ExpirationMinimum {
		bad("lifecycle.expirationMaximum", "%s is under 1s or under lifecycle.expirationMinimum (%s)", d, c.Lifecycle.ExpirationMinimum)
	}
	if d := c.GC.UploadExpiry; d < time.Hour {
		bad("gc.uploadExpiry", "%s is under 1h: a slow client's upload must survive a pause", d)
	}
	if d := c.GC.UploadMaxAge; d < time.Hour {
		bad("gc.uploadMaxAge", "%s is under 1h (it cannot be turned off: an upload session's bytes count in no quota, so its age is bounded)", d)
	}
	for field, d := range map[string]time.Duration{"gc.retention.events": c.GC.Retention.Events, "gc.retention.doneJobs": c.GC.Retention.DoneJobs,
		"gc.retention.deadJobs": c.GC.Retention.DeadJobs, "gc.retention.attempts": c.GC.Retention.Attempts, "gc.retention.audit": c.GC.Retention.Audit} {
		if d != 0 && d < time.Hour {
			bad(field, "%s is under 1h (0 keeps forever)", d)
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "unknown level %q (debug, info, warn, error)", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", "unknown format %q (text, json)", c.Log.Format)
	}
	if c.ExternalURL != "" {
		if u, err := url.Parse(c.ExternalURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			bad("externalURL", "%q is not scheme://host[:port]", c.ExternalURL)
		}
	}
	if f := c.Runtime.GCHeapFloorBytes; f < 0 || f > 64<<30 {
		bad("runtime.gcHeapFloorBytes", "%d is outside 0..68719476736 (64 GiB; 0: no floor)", f)
	}
	if n := c.Runtime.ExtraProcs; n < 0 || n > 64 {
		bad("runtime.extraProcs", "%d is outside 0..64 (0: GOMAXPROCS as Go sets it)", n)
	}
	if w := c.Notifications.Workers; w < 1 || w > 256 {
		bad("notifications.workers", "%d is outside 1..256", w)
	}
	c.Notifications.validate(bad)
	if w := c.Graph.Workers; w < 1 || w > 64 {
		bad("graph.workers", "%d is outside 1..64", w)
	}
	if d := c.Graph.Debounce; d < 0 || d > 24*time.Hour {
		bad("graph.debounce", "%s is outside 0..24h", d)
	}
	if a := c.Metrics.Addr; a != "" {
		if _, port, err := net.SplitHostPort(a); err != nil {
			bad("metrics.addr", "%q is not HOST:PORT: %v", a, err)
		} else if port == "" {
			bad("metrics.addr", "%q has no port", a)
		} else if samePort(a, c.Addr) {
			bad("metrics.addr", "%q takes the main listen address's port %s (leave it empty to serve /metrics there)", a, port)
		}
		if c.Metrics.Public {
			bad("metrics.public", "applies to the main listener only; with metrics.addr set, /metrics is not served there")
		}
	} else if c.Metrics.Pprof {
		bad("metrics.pprof", "needs metrics.addr: profiles are served only on the metrics listener, never on the main one")
	}
	if w := c.Scan.Workers; w < 1 || w > 64 {
		bad("scan.workers", "%d is outside 1..64", w)
	}
	for path, v := range map[string]int64{"scan.maxLayerBytes": c.Scan.MaxLayerBytes,
		"scan.maxUncompressedBytes": c.Scan.MaxUncompressedBytes, "scan.maxFileBytes": c.Scan.MaxFileBytes} {
		if v < 1 {
			bad(path, "%d must be positive", v)
		}
	}
	for path, v := range map[string]string{"scan.vulndb.baseURL": c.Scan.VulnDB.BaseURL, "scan.vulndb.cpeMappingURL": c.Scan.VulnDB.CPEMappingURL} {
		if u, err := url.Parse(v); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
			bad(path, "%q is not an http(s) URL without a query", redactURL(v))
		}
	}
	if d := c.Scan.VulnDB.UpdateInterval; d != 0 && (d < 5*time.Minute || d > 30*24*time.Hour) {
		bad("scan.vulndb.updateInterval", "%s is outside 5m..720h (0 turns scheduled updates off)", d)
	}
	if d := c.Scan.VulnDB.StaleAfter; d < time.Hour {
		bad("scan.vulndb.staleAfter", "%s is under 1h", d)
	}
	if err := oci.ValidateArtifactTypes(c.AllowedArtifactTypes); err != nil {
		bad("ALLOWED_OCI_ARTIFACT_TYPES", "%v", err)
	}
	return errors.Join(errs...)
}

// samePort reports whether two listen addresses would collide: the same
// port on the same host, or on any host where one of them listens on all
// interfaces ("", 0.0.0.0, ::).
func samePort(a, b string) bool {
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || pa != pb {
		return false
	}
	all := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return ha == hb || all(ha) || all(hb)
}

// redactURL hides the user information (a password) and the query of a
// URL, or the password of a key=value connection string.
func redactURL(s string) string {
	if i := strings.Index(s, "://"); i >= 0 {
		rest := s[i+3:]
		// All of the user information goes, whatever it holds ('?', '#',
		// '/' in a password): everything before the last '@' (one in a
		// query hides more than needed, never less).
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			rest = "REDACTED" + rest[at:]
		}
		if q := strings.IndexAny(rest, "?#"); q >= 0 {
			rest = rest[:q] + "?REDACTED" // a query may hold a token or a password
		}
		return s[:i+3] + rest
	}
	// A key=value connection string (host=db user=u password=p).
	return keyValueSecret.ReplaceAllString(s, "${1}=REDACTED")
}

// keyValueSecret finds the password of a key=value connection string.
var keyValueSecret = regexp.MustCompile(`(?i)\b(password|passwd|sslpassword)\s*=\s*('[^']*'|\S+)`)
