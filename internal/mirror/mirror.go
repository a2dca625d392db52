package mirror

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/jobs"
	"github.com/berth-dev/berth/internal/meta"
)

// MirrorOptions tune a MirrorService. Zero values mean the defaults.
type MirrorOptions struct {
	// Dial dials upstreams (the SSRF guard's); nil dials directly.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// CheckTarget checks a request's URL when it goes through the
	// mirror's proxy (the SSRF guard's CheckURL): Dial then reaches only
	// the proxy, which would connect wherever it is asked.
	CheckTarget func(ctx context.Context, rawURL string) error
	// Transport, if set, is the base transport of every upstream request
	// (tests); Dial, TLS and proxy settings are then not applied.
	Transport http.RoundTripper
	// Tries bounds the attempts of one upstream request that met a 429 or
	// a 5xx (5); RetryBase is the first backoff (500ms), MaxRetryDelay
	// caps a delay, Retry-After included (30s).
	Tries                    int
	RetryBase, MaxRetryDelay time.Duration
	// PerHost bounds the copies from one upstream host at once in this
	// process (4).
	PerHost int
	// Workers is how many syncs this process runs at once (2).
	Workers int
	// Tick is how often the scheduler looks for due syncs (5s);
	// CancelPoll how often a running sync checks for a cancel (1s).
	Tick, CancelPoll time.Duration
	// MaxTags and MaxTagPages bound an upstream's tag listing
	// (DefaultMaxTags, DefaultMaxTagPages); SyncTimeout bounds a sync
	// (DefaultSyncTimeout). Past any, the sync fails, saying so.
	MaxTags, MaxTagPages int
	SyncTimeout          time.Duration
	Logger               *slog.Logger
	// Metrics, if set, counts finished syncs by outcome.
	Metrics Metrics
	// Auth decides, for the mirror's robot and for the account that last
	// configured the mirror as a sync runs (the anonymous caller when
	// there is none), which repositories of the namespace each may read
	// (pull): a blob is linked without a download only from one both may
	// (Request.MayLink). Nil: none, every missing blob is downloaded.
	Auth Decider
}

// Decider decides whether an identity may act on a repository
// (authz.Authorizer and the API's Open decide so).
type Decider interface {
	Decide(ctx context.Context, id auth.Identity, repo, action string) (bool, error)
}

// Metrics counts the syncs that ran to an end, by outcome: meta.MirrorSuccess,
// meta.MirrorFail or meta.MirrorCancel.
type Metrics interface {
	MirrorSync(outcome string)
}

// SyncStore is the mirror table as the service runs syncs (meta.Mirrors).
// Each call that starts or continues a sync, and each tag deletion,
// answers a *meta.MirrorInactiveError once the repository left state
// MIRROR.
type SyncStore interface {
	GetMirror(ctx context.Context, repo string) (meta.Mirror, error)
	MirrorCancelRequested(ctx context.Context, repo string) (bool, error)
	EnqueueDueMirrors(ctx context.Context, at time.Time) (int, error)
	StartMirrorSync(ctx context.Context, repo, message string) (meta.Mirror, error)
	FinishMirrorSync(ctx context.Context, repo, status, message string) error
	// CancelStartedMirrorSync records the cancel of a started sync and
	// closes it with repo_mirror_sync_failed, saying message.
	CancelStartedMirrorSync(ctx context.Context, repo, reason, message string) error
	DeleteMirroredTag(ctx context.Context, repo, tag, actor string) error
}

// TagStore reads the mirrored repository's tags (meta.Manifests).
type TagStore interface {
	GetManifest(ctx context.Context, repo, tag string, d digest.Digest, withContent bool) (meta.Manifest, error)
	ListTags(ctx context.Context, repo, last string, n int) ([]string, error)
}

// UserStore finds a mirror's robot, and the account that configured it
// (meta.Users).
type UserStore interface {
	UserByName(ctx context.Context, username string) (meta.User, error)
	UserByID(ctx context.Context, id int64) (meta.User, error)
}

// ProxyCacheStore tells the organizations that are pull-through caches
// (meta.ProxyCaches): ProxyCacheOf answers an error wrapping
// meta.ErrNotFound for one that is not.
type ProxyCacheStore interface {
	ProxyCacheOf(ctx context.Context, namespace string) (meta.ProxyCache, error)
}

// ServiceStores are the parts of the metadata store the mirror service
// uses.
type ServiceStores struct {
	Mirrors SyncStore  // meta.Mirrors
	Tags    TagStore   // meta.Manifests
	Queue   jobs.Store // meta.Jobs
	// Users finds the robot a sync writes as: a sync whose robot is gone
	// or may not act (disabled, or its owner is) copies nothing.
	Users UserStore // meta.Users
	// ProxyCaches: a mirror of a proxy cache organization's repository
	// (made before such organizations refused mirrors) does not sync.
	ProxyCaches ProxyCacheStore // meta.ProxyCaches
}

// MirrorService keeps mirrored repositories in sync with their upstreams:
// a scheduler enqueues due syncs on the durable job queue (one per
// repository at a time, across processes) and a worker runs them.
type MirrorService struct {
	db     SyncStore
	tags   TagStore
	users  UserStore
	caches ProxyCacheStore
	copier *Copier
	sealer *auth.Sealer
	opts   MirrorOptions
	log    *slog.Logger
	hosts  hostLimiter
	wake   chan struct{}
	worker *jobs.Worker
}

// NewMirrorService returns the mirror service; Run starts it.
func NewMirrorService(db ServiceStores, copier *Copier, sealer *auth.Sealer, opts MirrorOptions) *MirrorService {
	if opts.Tries <= 0 {
		opts.Tries = 5
	}
	if opts.RetryBase <= 0 {
		opts.RetryBase = 500 * time.Millisecond
	}
	if opts.MaxRetryDelay <= 0 {
		opts.MaxRetryDelay = 30 * time.Second
	}
	if opts.PerHost <= 0 {
		opts.PerHost = 4
	}
	if opts.Workers <= 0 {
		opts.Workers = 2
	}
	if opts.Tick <= 0 {
		opts.Tick = 5 * time.Second
	}
	if opts.CancelPoll <= 0 {
		opts.CancelPoll = time.Second
	}
	if opts.MaxTags <= 0 {
		opts.MaxTags = DefaultMaxTags
	}
	if opts.MaxTagPages <= 0 {
		opts.MaxTagPages = DefaultMaxTagPages
	}
	if opts.SyncTimeout <= 0 {
		opts.SyncTimeout = DefaultSyncTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &MirrorService{db: db.Mirrors, tags: db.Tags, users: db.Users, caches: db.ProxyCaches, copier: copier, sealer: sealer, opts: opts, log: opts.Logger.With("component", "mirror"),
		hosts: hostLimiter{n: opts.PerHost}, wake: make(chan struct{}, 1)}
	s.worker = jobs.New(db.Queue, meta.MirrorQueue, s.handle, jobs.Options{Concurrency: opts.Workers, Logger: opts.Logger})
	return s
}

// Run schedules and runs syncs until ctx is cancelled.
func (s *MirrorService) Run(ctx context.Context) {
	done := make(chan struct{})
	go func() { defer close(done); s.worker.Run(ctx) }()
	t := time.NewTicker(s.opts.Tick)
	defer t.Stop()
	for {
		if n, err := s.db.EnqueueDueMirrors(ctx, time.Now()); err != nil && ctx.Err() == nil {
			s.log.Warn("mirror scheduler", "err", err)
		} else if n > 0 {
			s.worker.Wake()
		}
		select {
		case <-ctx.Done():
			<-done
			return
		case <-t.C:
		case <-s.wake:
		}
	}
}

// Wake makes the scheduler look for due syncs now (after sync-now).
func (s *MirrorService) Wake() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Seal seals an upstream password for storage.
func (s *MirrorService) Seal(password string) string {
	if password == "" {
		return ""
	}
	return s.sealer.Seal([]byte(password))
}

func (s *MirrorService) handle(ctx context.Context, j meta.Job) error {
	var p struct {
		Repository string `json:"repository"`
	}
	if err := json.Unmarshal(j.Payload, &p); err != nil {
		return jobs.Permanent(err)
	}
	return s.Sync(ctx, p.Repository)
}

// Sync runs one sync of a repository's mirror and records its outcome. It
// returns an error only when the sync was interrupted by shutdown (the job
// then runs again) or its outcome could not be recorded.
func (s *MirrorService) Sync(ctx context.Context, repo string) error {
	m, err := s.db.GetMirror(ctx, repo)
	if errors.Is(err, meta.ErrMirrorNotFound) {
		return nil // deleted since
	}
	if err != nil {
		return err
	}
	msg := fmt.Sprintf("'%s' with tag pattern '%s'", m.ExternalReference, strings.Join(m.RootRule.Value, ","))
	// notStarted ends a sync that does not run, status CANCEL with reason
	// (if any): with no event, unless it is one that had started and was
	// cut short (shutdown, a lost lease: the mirror is still SYNCING, its
	// job runs again), whose repo_mirror_sync_started it closes with
	// repo_mirror_sync_failed saying why.
	notStarted := func(reason, why string) error {
		if m.Status == meta.MirrorSyncing {
			return s.db.CancelStartedMirrorSync(ctx, repo, reason, fmt.Sprintf("%s: cancelled %s", msg, why))
		}
		return s.db.FinishMirrorSync(ctx, repo, meta.MirrorCancel, reason)
	}
	if m.CancelRequested {
		return notStarted("", "by a sync-cancel request")
	}
	if !m.Enabled {
		return notStarted("", "(the mirror is disabled)")
	}
	if why, err := s.inProxyCache(ctx, repo); err != nil {
		return err
	} else if why != "" {
		// Its tags are the proxy cache's: the sync does not start, and
		// the status says why.
		s.log.Warn("mirror sync skipped", "repository", repo, "reason", why)
		return notStarted(why, "("+why+")")
	}
	started, err := s.db.StartMirrorSync(ctx, repo, msg)
	var inactive *meta.MirrorInactiveError
	if errors.As(err, &inactive) {
		// The repository left state MIRROR (taken over by its users):
		// nothing is synced, and the status says why.
		s.log.Info("mirror sync skipped", "repository", repo, "state", inactive.State)
		return notStarted(inactive.Error(), "("+inactive.Error()+")")
	}
	if err != nil {
		return err
	}
	m = started
	rec := context.WithoutCancel(ctx)
	account, why, err := s.robot(ctx, m)
	if err != nil {
		return err
	} else if why != "" {
		// The robot may not act: nothing is copied as it.
		s.log.Warn("mirror sync refused", "repository", repo, "robot", m.RobotUsername, "reason", why)
		s.count(meta.MirrorFail)
		return s.db.FinishMirrorSync(rec, repo, meta.MirrorFail, fmt.Sprintf("%s: %s", msg, why))
	}
	link, err := s.mayLink(ctx, m, account)
	if err != nil {
		return err
	}
	// A sync has an end, whatever its upstream does: past it, it fails
	// and its job ends (the lease is renewed only while it runs).
	tctx, stop := context.WithTimeoutCause(ctx, s.opts.SyncTimeout,
		fmt.Errorf("the sync did not finish within %s (Berth's limit for one sync)", s.opts.SyncTimeout))
	defer stop()
	sctx, cancel := context.WithCancelCause(tctx)
	defer cancel(nil)
	go s.watchCancel(sctx, cancel, m)
	res, err := s.sync(sctx, m, link)
	var robot *robotRefusedError
	if err != nil && tctx.Err() != nil && ctx.Err() == nil {
		err = context.Cause(tctx) // the sync's deadline, not what it cut
	}
	switch {
	case errors.As(err, &inactive) || errors.As(context.Cause(sctx), &inactive):
		// The state changed during the sync: it stopped before its next
		// write (a tag deletion checks the state in its own transaction).
		s.log.Info("mirror sync stopped", "repository", repo, "state", inactive.State)
		s.count(meta.MirrorCancel)
		return s.db.CancelStartedMirrorSync(rec, repo, inactive.Error(), fmt.Sprintf("%s: cancelled: %v", msg, inactive))
	case errors.As(context.Cause(sctx), &robot):
		// The robot, or its owner, was disabled or deleted during the
		// sync: it stopped before its next write.
		s.log.Warn("mirror sync stopped", "repository", repo, "robot", m.RobotUsername, "reason", robot.why)
		s.count(meta.MirrorFail)
		return s.db.FinishMirrorSync(rec, repo, meta.MirrorFail, fmt.Sprintf("%s: %s", msg, robot.why))
	case errors.Is(err, errCancelled) || errors.Is(context.Cause(sctx), errCancelled):
		s.log.Info("mirror sync cancelled", "repository", repo)
		s.count(meta.MirrorCancel)
		return s.db.CancelStartedMirrorSync(rec, repo, "", msg+": cancelled by a sync-cancel request")
	case ctx.Err() != nil:
		return ctx.Err() // shutdown or lost lease: the job runs again
	case err != nil:
		s.log.Warn("mirror sync failed", "repository", repo, "err", err)
		var refused *events.RefusedError
		if errors.As(err, &refused) {
			// The guard's reason once, rather than once per URL tried.
			err = refused
		}
		s.count(meta.MirrorFail)
		return s.db.FinishMirrorSync(rec, repo, meta.MirrorFail, fmt.Sprintf("%s: %v", msg, err))
	}
	s.log.Info("mirror sync done", "repository", repo, "copied", res.copied, "unchanged", res.unchanged, "deleted", res.deleted,
		"kept_immutable", res.kept.count(false), "skipped_refused", res.kept.count(true))
	s.count(meta.MirrorSuccess)
	return s.db.FinishMirrorSync(rec, repo, meta.MirrorSuccess, msg+keptMessage(res.kept))
}

var errCancelled = errors.New("mirror sync cancelled")

// mayLink is whether a sync of the mirror may link a blob from another
// repository of its namespace: when both its robot and the account that
// last configured it (m.ConfiguredBy) may pull from there, as Auth
// decides (nil Auth: never), once per repository for the sync. Any
// repository admin may choose any robot of the namespace and the
// upstream: deciding as the robot alone would let one link, from a
// manifest of theirs naming it, a private layer only the robot may read.
// A mirror with a robot and no such account (configured before Berth
// recorded it, by an access token or with authentication off, or the
// account is deleted or disabled) decides as its robot and the anonymous
// caller instead: it links only from a repository anyone may pull from
// (a public one; under auth mode "none", whose decider allows the
// anonymous caller everything, any), and downloads every other blob its
// repository lacks. A mirror without a robot (auth mode "none") decides
// as the anonymous caller alone. The robot's account, looked up as the
// sync started (robot), is passed by its ID: a decision then needs no
// look-up of its own (the sync stops if the robot is deleted or disabled
// meanwhile, watchCancel). Make one per sync: its decisions last as long
// as it does.
func (s *MirrorService) mayLink(ctx context.Context, m meta.Mirror, robot meta.User) (MayLink, error) {
	if s.opts.Auth == nil {
		return nil, nil
	}
	ids := []auth.Identity{auth.Anonymous}
	if m.RobotUsername != "" {
		by, err := s.configurer(ctx, m)
		if err != nil {
			return nil, err
		}
		second := auth.Anonymous // no configurer: what anyone may read
		if by != nil {
			second = *by
		}
		// ID 0 (no user store): the decider looks the robot up by name.
		ids = []auth.Identity{{Kind: auth.KindRobot, ID: robot.ID, Name: m.RobotUsername}, second}
	}
	return remember(func(ctx context.Context, repo string) bool {
		for _, id := range ids {
			ok, err := s.opts.Auth.Decide(ctx, id, repo, auth.ActionPull)
			if err != nil {
				s.log.Warn("mirror link decision: the source's blobs are downloaded", "repository", m.Repository, "source", repo, "err", err)
			}
			if err != nil || !ok {
				return false
			}
		}
		return true
	}), nil
}

// configurer is the identity of the account that last configured the
// mirror, as the sync starts: nil if there is none (m.ConfiguredBy 0, no
// user store) or it may not act (deleted, disabled, or the user owning a
// robot is); mayLink then decides as the anonymous caller.
func (s *MirrorService) configurer(ctx context.Context, m meta.Mirror) (*auth.Identity, error) {
	if m.ConfiguredBy == 0 || s.users == nil {
		return nil, nil
	}
	u, err := s.users.UserByID(ctx, m.ConfiguredBy)
	if errors.Is(err, meta.ErrUserNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up the account that configured the mirror: %w", err)
	}
	if !u.Active() {
		return nil, nil
	}
	kind := auth.KindUser
	if u.Kind == meta.UserKindRobot {
		kind = auth.KindRobot
	}
	return &auth.Identity{Kind: kind, ID: u.ID, Name: u.Username, Superuser: u.Superuser}, nil
}

// robotRefusedError stops a sync whose robot may no longer act.
type robotRefusedError struct{ why string }

func (e *robotRefusedError) Error() string { return e.why }

// robotRefused says why the mirror's robot may not write ("" if it may):
// it was deleted, or it is disabled, or the user whose namespace it
// belongs to is (a disabled user's robots act as nothing).
func (s *MirrorService) robotRefused(ctx context.Context, m meta.Mirror) (string, error) {
	_, why, err := s.robot(ctx, m)
	return why, err
}

// robot is the mirror's robot's account (zero without a robot or a user
// store) and why it may not write ("" if it may), as robotRefused.
func (s *MirrorService) robot(ctx context.Context, m meta.Mirror) (meta.User, string, error) {
	if m.RobotUsername == "" || s.users == nil {
		return meta.User{}, "", nil
	}
	u, err := s.users.UserByName(ctx, m.RobotUsername)
	switch {
	case errors.Is(err, meta.ErrUserNotFound):
		return meta.User{}, fmt.Sprintf("the mirror's robot %s does not exist; nothing was synced (set robot_username to an existing robot)", m.RobotUsername), nil
	case err != nil:
		return meta.User{}, "", err
	case !u.Active():
		return meta.User{}, fmt.Sprintf("the mirror's robot %s is disabled, or the user it belongs to is; nothing was synced", m.RobotUsername), nil
	}
	return u, "", nil
}

// inProxyCache says why the mirror of repo does not sync when its
// organization is a proxy cache ("" when it is not): the organization
// became one while it had the mirror, before that was refused, and a sync
// would overwrite the cached tags with another upstream's images.
func (s *MirrorService) inProxyCache(ctx context.Context, repo string) (string, error) {
	if s.caches == nil {
		return "", nil
	}
	ns, _, _ := strings.Cut(repo, "/")
	_, err := s.caches.ProxyCacheOf(ctx, ns)
	if errors.Is(err, meta.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("look up the proxy cache of %s: %w", ns, err)
	}
	return fmt.Sprintf("%s is a proxy cache organization: its tags are its upstream's, so its mirrors do not sync; nothing was synced "+
		"(turn this mirror off with is_enabled false)", ns), nil
}

func (s *MirrorService) count(outcome string) {
	if s.opts.Metrics != nil {
		s.opts.Metrics.MirrorSync(outcome)
	}
}

// watchCancel stops a sync in flight when it is cancelled, when its
// repository leaves state MIRROR, or when its robot may no longer act
// (disabled or deleted, or its owner is).
func (s *MirrorService) watchCancel(ctx context.Context, cancel context.CancelCauseFunc, m meta.Mirror) {
	t := time.NewTicker(s.opts.CancelPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c, err := s.db.MirrorCancelRequested(ctx, m.Repository)
			var inactive *meta.MirrorInactiveError
			switch {
			case errors.As(err, &inactive):
				cancel(err) // the repository left state MIRROR: stop the copy in flight
				return
			case err == nil && c:
				cancel(errCancelled)
				return
			}
			if why, err := s.robotRefused(ctx, m); err == nil && why != "" {
				cancel(&robotRefusedError{why})
				return
			}
		}
	}
}

// upstream is a mirror's upstream repository with the options to reach it.
type upstream struct {
	repo name.Repository
	opts []remote.Option
	// auth and rt are what opts carry: the credentials and the transport.
	auth authn.Authenticator
	rt   http.RoundTripper
	// link is how the sync's copies decide to link a blob (mayLink): one
	// for the sync, remembering its decisions.
	link MayLink
}

func (s *MirrorService) upstream(m meta.Mirror) (upstream, error) {
	var nopts []name.Option
	if !m.VerifyTLS {
		nopts = append(nopts, name.Insecure)
	}
	repo, err := name.NewRepository(m.ExternalReference, nopts...)
	if err != nil {
		return upstream{}, fmt.Errorf("external_reference %q: %w", m.ExternalReference, err)
	}
	base := s.opts.Transport
	if base == nil {
		tr := &http.Transport{ForceAttemptHTTP2: true, TLSHandshakeTimeout: 10 * time.Second,
			ResponseHeaderTimeout: time.Minute, IdleConnTimeout: 90 * time.Second}
		if s.opts.Dial != nil {
			tr.DialContext = s.opts.Dial
		}
		if !m.VerifyTLS {
			tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
		}
		if p := m.Proxy.HTTPSProxy + m.Proxy.HTTPProxy; p != "" {
			tr.Proxy = proxyFunc(m.Proxy, s.opts.CheckTarget)
		}
		base = tr
	}
	// Manifests and tag list pages are read no further than their caps.
	base = s.copier.upstreamLimits(base)
	if m.VerifyTLS {
		// HTTPS only, credentials included, even to a loopback or private
		// address; verify_tls false allows plain HTTP.
		base = events.HTTPSOnly{Next: base, Host: repo.RegistryStr(), Allow: "set verify_tls to false to allow it"}
	}
	rt := &retryTransport{next: base, tries: s.opts.Tries, base: s.opts.RetryBase, maxDelay: s.opts.MaxRetryDelay}
	a := authn.Authenticator(authn.Anonymous)
	if m.Username != "" {
		pw := ""
		if m.PasswordSealed != "" {
			b, err := s.sealer.Open(m.PasswordSealed)
			if err != nil {
				return upstream{}, fmt.Errorf("open the upstream password: %w", err)
			}
			pw = string(b)
		}
		a = &authn.Basic{Username: m.Username, Password: pw}
	}
	// Our transport retries; go-containerregistry's own retries are off.
	return upstream{repo: repo, opts: []remote.Option{remote.WithAuth(a), remote.WithTransport(rt),
		remote.WithRetryBackoff(remote.Backoff{Steps: 1})}, auth: a, rt: rt}, nil
}

// UpstreamRegistry is the registry host[:port] an external_reference
// names, as a sync reaches it (Docker Hub's for a reference without a
// host); for a reference that does not parse, its first path component.
func UpstreamRegistry(ref string) string {
	if r, err := name.NewRepository(ref); err == nil {
		return r.RegistryStr()
	}
	host, _, _ := strings.Cut(ref, "/")
	return strings.ToLower(host)
}

// proxyFunc routes upstream requests through the mirror's proxy, except
// hosts of no_proxy (comma-separated names or suffixes). A request sent
// through the proxy has its own target checked first (check, if set).
func proxyFunc(p meta.MirrorProxy, check func(ctx context.Context, rawURL string) error) func(*http.Request) (*url.URL, error) {
	return func(r *http.Request) (*url.URL, error) {
		u, err := proxyOf(p, r)
		if err != nil || u == nil || check == nil {
			return u, err
		}
		if err := check(r.Context(), r.URL.String()); err != nil {
			return nil, err
		}
		return u, nil
	}
}

// proxyOf is the proxy of a request: none for hosts of no_proxy.
func proxyOf(p meta.MirrorProxy, r *http.Request) (*url.URL, error) {
	host := r.URL.Hostname()
	for _, np := range strings.Split(p.NoProxy, ",") {
		np = strings.TrimPrefix(strings.TrimSpace(np), ".")
		if np != "" && (host == np || strings.HasSuffix(host, "."+np)) {
			return nil, nil
		}
	}
	raw := p.HTTPSProxy
	if r.URL.Scheme == "http" || raw == "" {
		raw = p.HTTPProxy
	}
	if raw == "" {
		return nil, nil
	}
	return url.Parse(raw)
}
