package web

import (
	"context"
	"io"
	"net/http"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/gate"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/scan"
)

// Authenticator checks a sign-in and decides repository actions: the
// same *authz.Authorizer the token endpoint, /v2 and /api/v1 use, so
// every page applies their permission decision and login throttle.
type Authenticator interface {
	// Login checks a username and password (throttled per account and
	// address like the token endpoint: *authz.RetryError past a limit).
	Login(ctx context.Context, r *http.Request, username, secret string) (auth.Identity, error)
	// Decide applies auth.Allowed with what the store knows.
	Decide(ctx context.Context, id auth.Identity, repo, action string) (bool, error)
}

// Stores are what the pages read and change, each satisfied by one of
// meta's typed stores (named in the comment); internal/wire builds them.
// Graph, Scanner, Blobs, Admin, Signatures and Emails may be nil (feature
// off; without Emails the confirmation page is 404).
type Stores struct {
	Sessions      SessionStore      // meta.WebSessions
	Repositories  RepositoryStore   // meta.Repositories
	Content       ContentStore      // meta.Manifests
	Referrers     ReferrerLister    // meta.Manifests; New refuses Content without it
	Mirrors       MirrorStore       // meta.Mirrors
	Notifications NotificationStore // meta.Notifications
	Gates         GateStore         // meta.Gates
	Graph         GraphStore        // meta.Graph
	Scanner       Scanner           // *scan.Service
	Blobs         BlobReader        // the storage driver
	Admin         AdminStore        // *meta.DB
	Signatures    SignatureVerifier // *gate.Service
	Emails        EmailConfirmer    // meta.Notifications
}

// SessionStore keeps sign-in sessions.
type SessionStore interface {
	CreateWebSession(ctx context.Context, s meta.WebSession) error
	WebSession(ctx context.Context, idHash string, at time.Time) (meta.WebSession, error)
	DeleteWebSession(ctx context.Context, idHash string) error
}

// RepositoryStore lists repositories and reads one's settings.
type RepositoryStore interface {
	BrowseRepositories(ctx context.Context, q meta.BrowseQuery) ([]meta.RepoCard, error)
	Repository(ctx context.Context, name string) (meta.RepoInfo, error)
}

// ContentStore reads tags and manifests.
type ContentStore interface {
	TagRows(ctx context.Context, repo string, q meta.TagRowQuery) ([]meta.TagRow, int, error)
	GetManifest(ctx context.Context, repo, tag string, d digest.Digest, withContent bool) (meta.Manifest, error)
	// WithTimeMachine is the store's time machine of a window, whose
	// DeletedTags are the tags the API's restore, bounded by the same
	// window, puts back.
	WithTimeMachine(window time.Duration) meta.TimeMachine
}

// ReferrerLister lists a manifest's referrers without their annotations.
type ReferrerLister interface {
	ReferrerEntries(ctx context.Context, q meta.ReferrerQuery) ([]meta.ReferrerEntry, error)
}

// MirrorStore reads a mirror's state.
type MirrorStore interface {
	GetMirror(ctx context.Context, repo string) (meta.Mirror, error)
}

// NotificationStore lists a repository's notifications and their
// deliveries.
type NotificationStore interface {
	Notifications(ctx context.Context, scope, target string) ([]meta.Notification, error)
	Attempts(ctx context.Context, notificationID int64, n int) ([]meta.Attempt, error)
}

// GateStore lists a gate's candidates and their checks.
type GateStore interface {
	Candidates(ctx context.Context, repo string, q meta.CandidateQuery) ([]meta.Candidate, error)
	Checks(ctx context.Context, repo string, d digest.Digest) ([]meta.Check, error)
}

// GraphStore is the base-image graph.
type GraphStore interface {
	Bases(ctx context.Context, repo string, d digest.Digest) ([]meta.GraphBase, error)
	Dependents(ctx context.Context, repo string, d digest.Digest, transitive bool, n int) ([]meta.GraphDependent, error)
}

// Scanner answers an image's security report, and whether the
// vulnerability data behind scanned images' reports is complete, by
// digest, for a page of images at once (an image without a scanned
// report, or not checked, left out).
type Scanner interface {
	Security(ctx context.Context, repo string, m meta.Manifest, withVulns bool) (scan.SecurityInfo, error)
	Coverages(ctx context.Context, digests []string) (map[string]scan.DataCoverage, error)
}

// BlobReader reads a blob's bytes (an image's config).
type BlobReader interface {
	Reader(ctx context.Context, path string, offset int64) (io.ReadCloser, error)
}

// SignatureVerifier verifies a manifest's signatures against the trusted
// keys of its repository's gate, with internal/gate's verifier
// (*gate.Service); keyed is false when the gate trusts no key.
type SignatureVerifier interface {
	ManifestSignatures(ctx context.Context, repo string, d digest.Digest) (sigs []gate.Signature, keyed bool, err error)
}
