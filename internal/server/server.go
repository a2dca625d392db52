// Package server is the composition root: it builds every part of Berth
// from a Config, serves HTTP, and shuts down gracefully. Nothing imports it
// but the command.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-dev/berth/internal/api"
	"github.com/berth-dev/berth/internal/authz"
	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/feed"
	"github.com/berth-dev/berth/internal/gate"
	"github.com/berth-dev/berth/internal/gc"
	"github.com/berth-dev/berth/internal/graph"
	"github.com/berth-dev/berth/internal/jobs"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/mirror"
	"github.com/berth-dev/berth/internal/notify"
	"github.com/berth-dev/berth/internal/proxy"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/scan"
	"github.com/berth-dev/berth/internal/scan/index"
	"github.com/berth-dev/berth/internal/web"
	"github.com/berth-dev/berth/internal/wire"
)

// Server is a running Berth.
type Server struct {
	cfg      config.Config
	log      *slog.Logger
	db       *meta.DB
	handler  http.Handler
	notifier *notify.Service
	mirrors  *mirror.MirrorService
	scanner  *scan.Service  // nil when scanning is off
	gc       *gc.Collector  // runs only with gc.enabled; answers the reports always
	updater  *scan.Updater  // nil unless scan.vulndb.updateInterval is set
	graph    *graph.Service // nil when the base-image graph is off
	gates    *gate.Service
	appended chan struct{} // signalled when a local commit appended an event
	wakes    *queueWakes   // the job workers woken by a local commit that enqueued
	metrics  *metrics      // nil when metrics are off
	// draining is set when shutdown begins: /readyz answers 503.
	draining *atomic.Bool
	// metricsAddr is the address of the metrics listener once Serve
	// opened it (metrics.addr set).
	metricsAddr atomic.Pointer[string]
}

// New opens the metadata store and storage and assembles the handlers.
func New(ctx context.Context, cfg config.Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid configuration:\n%w", err)
	}
	appended := make(chan struct{}, 1)
	wakes := &queueWakes{}
	dbOpts := []meta.Option{meta.WakeOnAppend(appended), meta.WakeOnEnqueue(wakes.wake), meta.Logger(log),
		meta.TagExpirationBounds(cfg.Lifecycle.ExpirationMinimum, cfg.Lifecycle.ExpirationMaximum)}
	if cfg.Storage.Filesystem.Fsync {
		dbOpts = append(dbOpts, meta.SyncFull()) // acknowledged means on disk, for metadata too
	}
	// What can refuse to start without the database does so before it is
	// opened, which migrates it: a replica of a new version that would stop
	// anyway must not move the schema past the running replicas' (they
	// would all report not ready).
	// One SSRF guard for every outbound request (webhooks, imports,
	// mirrors, the proxy cache).
	guard, err := events.NewGuard(cfg.Notifications.AllowedHosts)
	if err != nil {
		return nil, fmt.Errorf("notifications.allowedHosts: %w", err)
	}
	driver, err := OpenStorage(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	key, err := loadSecretKey(cfg)
	if err != nil {
		return nil, err
	}
	if err := checkRecordedKey(ctx, cfg.DatabaseURL(), key); err != nil {
		return nil, err
	}
	db, err := meta.Open(ctx, cfg.DatabaseURL(), dbOpts...)
	if err != nil {
		return nil, fmt.Errorf("metadata store: %w", err)
	}
	// One sealer for every stored secret.
	sealer, err := openSealer(ctx, db, key)
	if err != nil {
		db.Close()
		return nil, err
	}
	var mets *metrics
	if cfg.Metrics.Enabled {
		mets = newMetrics()
		mets.reg.MustRegister(newDBCollector(retainedFigures{DB: db, events: cfg.GC.Retention.Events}))
	}
	n := cfg.Notifications
	nopts := notify.Options{Server: publicServer(cfg), Guard: guard, SMTPAddr: n.SMTPAddr, SMTPFrom: n.SMTPFrom,
		SMTPUsername: n.SMTPUsername, SMTPPassword: n.SMTPPassword, Logger: log}
	if mets != nil {
		nopts.Metrics = mets
	}
	notifier := notify.New(wire.NotifyStores(db), sealer, nopts)
	mux := http.NewServeMux()
	var authorizer registry.Authorizer = authz.Open{Repositories: db.Repositories()}
	var apiAuth api.Authenticator = api.Open{}
	var webAuth web.Authenticator // nil: auth mode none
	if cfg.Auth.Mode == "token" {
		tokens, err := loadTokens(ctx, db, cfg.Auth, sealer)
		if err != nil {
			db.Close()
			return nil, err
		}
		az := authz.New(wire.AuthzStores(db), tokens, authz.Options{
			Realm:                   cfg.TokenRealm(),
			CreatePrivateRepoOnPush: cfg.CreatePrivateRepoOnPush,
			CreateNamespaceOnPush:   cfg.CreateNamespaceOnPush,
			Logger:                  log,
		})
		authorizer, apiAuth, webAuth = az, az, az
		mux.HandleFunc(authz.TokenPath, az.ServeToken)
	}
	// Upstream registries of the proxy cache: an upstream that accepts and
	// then says nothing is given up on (a blob's body then has its own
	// bound, proxy.Options.BlobTimeout), and idle connections close.
	upstreams := &http.Transport{DialContext: guard.DialContext, ForceAttemptHTTP2: true, TLSHandshakeTimeout: 10 * time.Second,
		ResponseHeaderTimeout: time.Minute, IdleConnTimeout: 90 * time.Second, MaxIdleConns: 100}
	pcache := proxy.New(wire.ProxyStores(db), driver, sealer, proxyOptions(cfg, upstreams, log))
	reg := registry.New(wire.RegistryStores(db), driver, registry.Options{
		MaxManifestBytes: cfg.Registry.MaxManifestBytes,
		Policy:           cfg.ArtifactPolicy(),
		Auth:             authorizer,
		Logger:           log,
		Proxy:            pcache,
		GCDelay:          gcDelay(cfg),
		MaxOpenUploads:   cfg.Registry.MaxOpenUploads,
		Redirect:         blobRedirect(cfg),
	})
	imp := importer{copier: mirror.NewCopier(wire.CopierStores(db), driver, cfg.ArtifactPolicy(), cfg.Registry.MaxManifestBytes, log).WithGCDelay(cfg.GC.Delay), transport: upstreams}
	// A sync links a blob from another repository of its namespace only
	// where the mirror's robot may pull, as the registry decides it.
	mopts := mirror.MirrorOptions{Dial: guard.DialContext, CheckTarget: guard.CheckURL, Logger: log, Auth: apiAuth}
	if mets != nil {
		mopts.Metrics = mets
	}
	mirrors := mirror.NewMirrorService(wire.MirrorStores(db), imp.copier, sealer, mopts)
	var scanner *scan.Service
	apiOpts := api.Options{FeatureUserInitialize: cfg.FeatureUserInitialize, Notifier: notifier, EmailAuthorizer: notifier, Importer: imp,
		Mirrors: mirrors, ProxyCache: pcache, Cursors: sealer, Logger: log}
	if cfg.ExternalURL != "" {
		pub := publicServer(cfg)
		apiOpts.TrustedOrigin = pub.Scheme + "://" + pub.Host
	}
	if cfg.Scan.Enabled {
		index.RouteLibraryLogs(log)
		sopts := scan.Options{
			Limits: index.Limits{MaxLayerBytes: cfg.Scan.MaxLayerBytes, MaxUncompressedBytes: cfg.Scan.MaxUncompressedBytes,
				MaxFileBytes: cfg.Scan.MaxFileBytes},
			SBOM: cfg.Scan.SBOM, Host: publicServer(cfg).Host, Version: buildVersion(), StaleAfter: cfg.Scan.VulnDB.StaleAfter, Logger: log,
		}
		if mets != nil {
			sopts.Metrics = mets
		}
		scanner = scan.New(wire.ScanStores(db), driver, sopts)
		apiOpts.Scanner = scanner
	}
	var updater *scan.Updater
	if v := cfg.Scan.VulnDB; cfg.Scan.Enabled && v.UpdateInterval > 0 {
		// Fetched through the SSRF guard: an internal mirror needs
		// notifications.allowedHosts.
		client := &http.Client{Transport: &http.Transport{DialContext: guard.DialContext, Proxy: http.ProxyFromEnvironment,
			ForceAttemptHTTP2: true, TLSHandshakeTimeout: 10 * time.Second, ResponseHeaderTimeout: time.Minute}}
		fetcher := scan.NewFetcher(db.VulnDB(), scan.FetchOptions{BaseURL: v.BaseURL, CPEMappingURL: v.CPEMappingURL, Client: client,
			StateDir: filepath.Join(cfg.DataDir, "vulndb"), UserAgent: "berth/" + buildVersion()})
		updater = scan.NewUpdater(db.VulnDB(), db.Jobs(), fetcher, scan.UpdaterOptions{Every: v.UpdateInterval, Logger: log})
	}
	// The collector answers the API's reports on every replica; with
	// gc.enabled false it runs no passes (Serve does not start it), and
	// the reports say so.
	gopts := GCOptions(cfg, log)
	if mets != nil {
		gopts.Metrics = mets
	}
	collector := gc.New(wire.GCStores(db, cfg.GC.TimeMachine), driver, gopts)
	if !cfg.GC.Enabled {
		collector.NoPasses()
	}
	apiOpts.GC = collector
	var graphSvc *graph.Service
	if cfg.Graph.Enabled {
		idx := graph.NewIndexer(db.Manifests(), db.Graph(), driver, log)
		graphSvc = graph.New(idx, db.Manifests(), db.Graph(), db.Scans(), db.Jobs(), graph.Options{Debounce: cfg.Graph.Debounce, Logger: log})
		apiOpts.Graph = db.Graph()
	}
	gst := gate.Stores{Gates: db.Gates(), Content: db.Manifests(), Blobs: db.Blobs(), Storage: driver, Registry: publicServer(cfg).Host}
	if scanner != nil {
		gst.Scanner = scanner
	}
	if graphSvc != nil {
		gst.Bases = db.Graph()
	}
	gates := gate.New(gst, log)
	apiOpts.Gates = gates
	apiHandler := api.New(wire.APIStores(db, cfg.GC.TimeMachine), apiAuth, apiOpts)
	// The API's answers and the web UI's pages are cut, as the registry's
	// are, when a client stops reading them (http.bodyIdleTimeout).
	mux.Handle("/api/v1/", registry.IdleSends(apiHandler))
	ui, err := webUI(cfg, db, driver, webAuth, scanner, graphSvc != nil, apiHandler, gates, sealer, log)
	if err != nil {
		db.Close()
		return nil, err
	}
	mux.Handle("/", registry.IdleSends(ui)) // the least specific pattern: /v2, /api/v1, the token and probe routes keep precedence
	mux.Handle("/v2/", reg)
	mux.Handle("/v2", reg)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := db.Ping(r.Context()); err != nil {
			http.Error(w, "metadata store unavailable", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /livez", livez)
	draining := new(atomic.Bool)
	mux.HandleFunc("GET /readyz", readyz(db, driver, log, draining))
	if mets != nil && cfg.Metrics.Addr == "" {
		var h http.Handler = mets.handler(log)
		if !cfg.Metrics.Public {
			h = superusersOnly(apiAuth, log, h)
		}
		mux.Handle("GET /metrics", h)
	}
	var h http.Handler = routes(mux, reg)
	h = idleBodies(h, cfg.HTTP.BodyIdleTimeout)
	if mets != nil {
		h = mets.instrument(h)
	}
	if log.Enabled(ctx, slog.LevelDebug) {
		h = accessLog(log, h)
	}
	proxies, err := cfg.HTTP.TrustedProxyPrefixes()
	if err != nil {
		return nil, fmt.Errorf("http.trustedProxies: %w", err)
	}
	h = forwardedFor(h, proxies)
	return &Server{cfg: cfg, log: log, db: db, handler: h, notifier: notifier, mirrors: mirrors, scanner: scanner, updater: updater, gc: collector,
		graph: graphSvc, gates: gates, appended: appended, wakes: wakes, metrics: mets, draining: draining}, nil
}

// importer runs API imports through the SSRF guard: a user with push
// rights must not make the server fetch from its own network unless the
// operator allowed it (notifications.allowedHosts).
type importer struct {
	copier    *mirror.Copier
	transport http.RoundTripper
}

func (i importer) Import(ctx context.Context, req mirror.ImportRequest) (string, mirror.Stats, error) {
	req.Transport = i.transport
	d, st, err := i.copier.Import(ctx, req)
	return d.String(), st, err
}

// publicServer is how clients reach the registry: externalURL, or the
// listen address (localhost when it names no host).
func publicServer(cfg config.Config) events.Server {
	if u, err := url.Parse(cfg.ExternalURL); err == nil && cfg.ExternalURL != "" {
		return events.Server{Scheme: u.Scheme, Host: u.Host}
	}
	host, port, _ := net.SplitHostPort(cfg.Addr)
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "localhost"
	}
	return events.Server{Scheme: "http", Host: net.JoinHostPort(host, port)}
}

// MetricsAddr is the address of the separate metrics listener (metrics.addr)
// once Serve has opened it; empty before, or when metrics are served on
// the main listener.
func (s *Server) MetricsAddr() string {
	if p := s.metricsAddr.Load(); p != nil {
		return *p
	}
	return ""
}

// Handler is the server's HTTP handler (for tests that serve it themselves).
func (s *Server) Handler() http.Handler { return s.handler }

// Close releases the metadata store.
func (s *Server) Close() error { return s.db.Close() }

// Run serves until ctx is cancelled, then drains in-flight requests.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves on ln until ctx is cancelled.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	flight := new(inFlight)
	srv := &http.Server{
		Handler:           flight.wrap(s.handler),
		ReadHeaderTimeout: s.cfg.HTTP.ReadHeaderTimeout,
		MaxHeaderBytes:    s.cfg.HTTP.MaxHeaderBytes,
		IdleTimeout:       s.cfg.HTTP.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	if s.cfg.GC.Enabled && s.cfg.GC.Delay < 10*time.Minute {
		s.log.Warn("gc.delay is short: a client that takes longer than that between uploading a blob and pushing the manifest naming it has its push refused",
			"gc.delay", s.cfg.GC.Delay)
	}
	if s.cfg.Auth.Mode == "none" {
		// Said loudly, at every start.
		s.log.Warn("AUTHENTICATION IS DISABLED: anyone who can reach this port can push, pull and delete (auth.mode: none)")
	}
	if s.cfg.Auth.Mode == "token" {
		if n, err := s.db.Users().CountUsers(ctx); err == nil && n == 0 {
			s.log.Warn("no users yet: create the first with `berth admin user create NAME --superuser`" +
				" (or enable FEATURE_USER_INITIALIZE and POST /api/v1/user/initialize)")
		}
	}
	s.log.Info("berth is serving", "addr", ln.Addr().String(), "database", s.db.Dialect(),
		"storage", s.cfg.Storage.Driver, storageLocation(s.cfg))
	// Background work: the change feed's dispatcher and its subscribers'
	// workers on the job queue (notification deliveries, scans).
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	worker := jobs.New(s.db.Jobs(), meta.NotifyQueue, s.notifier.Deliver, jobs.Options{Concurrency: s.cfg.Notifications.Workers, Logger: s.log})
	s.wakes.set(meta.NotifyQueue, worker.Wake)
	subs := []feed.Subscriber{notify.NewSubscriber(wire.NotifyStores(s.db))}
	wg.Add(2)
	go func() { defer wg.Done(); worker.Run(bg) }()
	go func() { defer wg.Done(); s.mirrors.Run(bg) }()
	if s.cfg.GC.Enabled {
		wg.Add(1)
		go func() { defer wg.Done(); s.gc.Run(bg) }()
	}
	if s.scanner != nil {
		scans := jobs.New(s.db.Jobs(), meta.ScanQueue, s.scanner.Handle, jobs.Options{Concurrency: s.cfg.Scan.Workers,
			Lease: time.Minute, Logger: s.log})
		s.wakes.set(meta.ScanQueue, scans.Wake)
		subs = append(subs, scan.NewOnPush(s.db.Scans()))
		wg.Add(1)
		go func() { defer wg.Done(); scans.Run(bg) }()
		if err := s.scanner.WarnIfNoData(ctx); err != nil {
			s.log.Warn("check the vulnerability database", "err", err)
		}
	}
	if s.updater != nil {
		wg.Add(1)
		go func() { defer wg.Done(); s.updater.Run(bg) }()
	}
	if s.graph != nil {
		gw := jobs.New(s.db.Jobs(), graph.Queue, s.graph.Handle, jobs.Options{Concurrency: s.cfg.Graph.Workers, Logger: s.log})
		s.wakes.set(graph.Queue, gw.Wake)
		subs = append(subs, s.graph.NewSubscriber(s.db.Jobs()))
		wg.Add(1)
		go func() { defer wg.Done(); gw.Run(bg) }()
	}
	gw := jobs.New(s.db.Jobs(), gate.Queue, s.gates.Handle, jobs.Options{Concurrency: 2, Logger: s.log})
	s.wakes.set(gate.Queue, gw.Wake)
	subs = append(subs, gate.NewSubscriber(s.db.Gates(), s.db.Jobs()))
	wg.Add(1)
	go func() { defer wg.Done(); gw.Run(bg) }()
	dispatcher := feed.New(s.db.Outbox(), subs, feed.Options{Wake: s.appended, Logger: s.log})
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Secrets that earlier versions stored in clear are sealed first,
		// once per start.
		if _, err := s.notifier.SealStoredHeaders(bg); err != nil && bg.Err() == nil {
			s.log.Error("seal notification secrets stored in clear", "err", err)
		}
		dispatcher.Run(bg)
	}()

	var msrv *http.Server
	if s.metrics == nil && s.cfg.Metrics.Addr != "" {
		s.log.Warn("metrics.addr is set but metrics.enabled is false: nothing listens there", "metrics_addr", s.cfg.Metrics.Addr)
	}
	if s.metrics != nil && s.cfg.Metrics.Addr != "" {
		mln, err := net.Listen("tcp", s.cfg.Metrics.Addr)
		if err != nil {
			s.stopBackground(stopBG, &wg, s.cfg.HTTP.ShutdownTimeout)
			return fmt.Errorf("metrics listen: %w", err)
		}
		addr := mln.Addr().String()
		s.metricsAddr.Store(&addr)
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", s.metrics.handler(s.log))
		if s.cfg.Metrics.Pprof {
			servePprof(mux)
		}
		msrv = &http.Server{Handler: mux, ReadHeaderTimeout: s.cfg.HTTP.ReadHeaderTimeout, MaxHeaderBytes: s.cfg.HTTP.MaxHeaderBytes,
			IdleTimeout: s.cfg.HTTP.IdleTimeout, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
		s.log.Info("metrics are served", "addr", addr, "path", "/metrics", "pprof", s.cfg.Metrics.Pprof)
		go func() {
			if err := msrv.Serve(mln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("metrics listener", "err", err)
			}
		}()
	}

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		if msrv != nil {
			msrv.Close()
		}
		s.stopBackground(stopBG, &wg, s.cfg.HTTP.ShutdownTimeout)
		return err
	case <-ctx.Done():
	}
	if msrv != nil {
		defer msrv.Close() // scrapes are cheap to lose; they may watch the shutdown
	}
	return s.shutdown(ctx, srv, errc, flight, stopBG, &wg)
}

// buildVersion is the module version the binary was built from, for
// generated documents; "dev" for a local build.
func buildVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// GCOptions are the housekeeping settings of cfg (also used by
// `berth admin gc`).
func GCOptions(cfg config.Config, log *slog.Logger) gc.Options {
	r := cfg.GC.Retention
	return gc.Options{Interval: cfg.GC.Interval, Delay: cfg.GC.Delay, UploadExpiry: cfg.GC.UploadExpiry, UploadMaxAge: cfg.GC.UploadMaxAge, Logger: log,
		Retention: meta.Retention{Events: r.Events, DoneJobs: r.DoneJobs, DeadJobs: r.DeadJobs, Attempts: r.Attempts, Audit: r.Audit}}
}

// proxyOptions are the pull-through cache's settings of cfg: its
// per-organization limits (proxyCache) and the registry's manifest cap
// and allow-list, with upstreams carrying its requests.
func proxyOptions(cfg config.Config, upstreams http.RoundTripper, log *slog.Logger) proxy.Options {
	p := cfg.ProxyCache
	return proxy.Options{Transport: upstreams, Policy: cfg.ArtifactPolicy(), MaxManifestBytes: cfg.Registry.MaxManifestBytes,
		MaxManifestFetches: p.MaxManifestFetches, ManifestWait: p.ManifestWait, MaxBlobFetches: p.MaxBlobFetches, BlobWait: p.BlobWait,
		Logger: log}
}

// gcDelay is the collection delay the registry must respect: the blob
// links a client asks about are confirmed against it. Also with
// gc.enabled false: `berth admin gc`, or another replica, may collect
// (a confirmation is one write per link and half-delay).
func gcDelay(cfg config.Config) time.Duration {
	return cfg.GC.Delay
}
