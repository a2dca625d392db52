package server

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/authz"
	"github.com/berth-dev/berth/internal/gc"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/mirror"
	"github.com/berth-dev/berth/internal/notify"
	"github.com/berth-dev/berth/internal/scan"
)

// metrics are the server's Prometheus metrics, in a registry of its own
// (no global state: two servers in one process, as in tests, do not
// share counters). The HTTP names follow CNCF Distribution and the GitLab
// registry (registry_http_*), so their dashboards port with a rename of
// the route label's values; docs/metrics.md lists them all.
type metrics struct {
	reg *prometheus.Registry

	inFlight  prometheus.Gauge
	requests  *prometheus.CounterVec   // method, route, code
	duration  *prometheus.HistogramVec // method, route
	bytesIn   *prometheus.CounterVec   // route
	bytesOut  *prometheus.CounterVec   // route
	delivered *prometheus.CounterVec   // method, outcome
	scans     *prometheus.CounterVec   // outcome
	syncs     *prometheus.CounterVec   // outcome
	gcRuns    *prometheus.CounterVec   // error
	gcDeletes *prometheus.CounterVec   // kind
	gcBytes   prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	f := func(c prometheus.Collector) { m.reg.MustRegister(c) }
	m.inFlight = prometheus.NewGauge(prometheus.GaugeOpts{Name: "registry_http_in_flight_requests",
		Help: "Requests being served."})
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "registry_http_requests_total",
		Help: "Requests served, by method, route and status code."}, []string{"method", "route", "code"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "registry_http_request_duration_seconds",
		Help:    "Time to serve a request (until the handler returned: the whole body for a blob), by method and route.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}}, []string{"method", "route"})
	m.bytesIn = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "registry_http_request_size_bytes_total",
		Help: "Bytes of request bodies read, by route."}, []string{"route"})
	m.bytesOut = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "registry_http_response_size_bytes_total",
		Help: "Bytes of response bodies written, by route."}, []string{"route"})
	m.delivered = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "registry_notifications_deliveries_total",
		Help: "Notification delivery attempts by method and outcome (success, failure, held)."}, []string{"method", "outcome"})
	m.scans = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "registry_scans_total",
		Help: "Manifest scans by outcome (scanned, unsupported, failed, error, deleted)."}, []string{"outcome"})
	m.syncs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "registry_mirror_syncs_total",
		Help: "Mirror syncs that ran to an end, by outcome (success, fail, cancel)."}, []string{"outcome"})
	m.gcRuns = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "registry_gc_runs_total",
		Help: "Garbage collection passes of this process, by whether they met an error."}, []string{"error"})
	m.gcDeletes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "registry_gc_deletes_total",
		Help: "What garbage collection removed, by kind (manifest, blob_link, blob, upload, leftover_upload, leftover_blob)."}, []string{"kind"})
	m.gcBytes = prometheus.NewCounter(prometheus.CounterOpts{Name: "registry_gc_storage_deleted_bytes_total",
		Help: "Bytes garbage collection deleted from storage (blobs, expired uploads and leftovers)."})
	for _, c := range []prometheus.Collector{m.inFlight, m.requests, m.duration, m.bytesIn, m.bytesOut, m.delivered, m.scans, m.syncs,
		m.gcRuns, m.gcDeletes, m.gcBytes, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		f(c)
	}
	// Series that exist from the start, so that rate() sees the first
	// increment and dashboards show zeros rather than "no data".
	for _, o := range []string{"success", "fail", "cancel"} {
		m.syncs.WithLabelValues(o)
	}
	for _, k := range []string{"manifest", "blob_link", "blob", "upload", "leftover_upload", "leftover_blob"} {
		m.gcDeletes.WithLabelValues(k)
	}
	return m
}

// retainedFigures are the store's figures as the retention of events
// (gc.retention.events) sees the change feed: its lag gauge lists the
// subscribers pruning still waits for, not those abandoned.
type retainedFigures struct {
	*meta.DB
	events time.Duration
}

func (f retainedFigures) Figures(ctx context.Context) (meta.Figures, error) {
	return f.FiguresRetaining(ctx, f.events)
}

// handler serves the metrics in the Prometheus text (or protobuf) format.
// A collector that fails (the database did not answer) is logged and left
// out; the rest is still served.
func (m *metrics) handler(log *slog.Logger) http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             30 * time.Second,
	})
}

// The subsystems' metric interfaces (notify, scan, mirror, gc).
var (
	_ notify.Metrics = (*metrics)(nil)
	_ scan.Metrics   = (*metrics)(nil)
	_ mirror.Metrics = (*metrics)(nil)
	_ gc.Metrics     = (*metrics)(nil)
)

func (m *metrics) Delivery(method, outcome string) {
	m.delivered.WithLabelValues(method, outcome).Inc()
}
func (m *metrics) Scan(outcome string)       { m.scans.WithLabelValues(outcome).Inc() }
func (m *metrics) MirrorSync(outcome string) { m.syncs.WithLabelValues(strings.ToLower(outcome)).Inc() }

func (m *metrics) GCPass(rep gc.Report, err error) {
	m.gcRuns.WithLabelValues(strconv.FormatBool(err != nil)).Inc()
	for kind, n := range map[string]int{"manifest": rep.Collected.Manifests, "blob_link": rep.Collected.Links, "blob": rep.Collected.Blobs,
		"upload": rep.Uploads, "leftover_upload": rep.Leftovers, "leftover_blob": rep.BlobLeftovers} {
		m.gcDeletes.WithLabelValues(kind).Add(float64(n))
	}
	m.gcBytes.Add(float64(rep.Collected.Bytes + rep.UploadBytes + rep.LeftoverBytes + rep.BlobLeftoverBytes))
}

// instrument counts and times every request, by a route label from a
// small fixed set (never a repository name, a tag or a digest).
func (m *metrics) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		route, method := routeLabel(r.URL.Path), methodLabel(r.Method)
		m.inFlight.Inc()
		start := time.Now()
		mw := &meteredWriter{ResponseWriter: w, status: http.StatusOK}
		var body *countedBody
		if r.Body != nil && r.Body != http.NoBody {
			body = &countedBody{ReadCloser: r.Body}
			r.Body = body
		}
		defer func() {
			m.inFlight.Dec()
			m.duration.WithLabelValues(method, route).Observe(time.Since(start).Seconds())
			m.requests.WithLabelValues(method, route, strconv.Itoa(mw.status)).Inc()
			if mw.bytes > 0 {
				m.bytesOut.WithLabelValues(route).Add(float64(mw.bytes))
			}
			if body != nil && body.n > 0 {
				m.bytesIn.WithLabelValues(route).Add(float64(body.n))
			}
		}()
		next.ServeHTTP(mw, r)
	})
}

// meteredWriter records the status and counts the body bytes. ReadFrom
// hands the source to the connection's own ReadFrom, so that a blob GET
// (io.Copy from an *os.File) still goes out with sendfile.
type meteredWriter struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
	bytes       int64
}

func (w *meteredWriter) WriteHeader(code int) {
	if !w.wroteHeader && code >= 200 {
		w.status, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *meteredWriter) Write(b []byte) (int, error) {
	w.wroteHeader = true
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (w *meteredWriter) ReadFrom(r io.Reader) (int64, error) {
	w.wroteHeader = true
	var n int64
	var err error
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(writerOnly{w.ResponseWriter}, r)
	}
	w.bytes += n
	return n, err
}

// Flush keeps streaming responses streaming.
func (w *meteredWriter) Flush() {
	w.wroteHeader = true
	http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the connection (read
// deadlines of idleBodies, for one).
func (w *meteredWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// writerOnly hides a ReadFrom method so io.Copy does not recurse.
type writerOnly struct{ io.Writer }

// countedBody counts the bytes read from a request body.
type countedBody struct {
	io.ReadCloser
	n int64
}

func (b *countedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	return n, err
}

// routeLabel classifies a path into a small fixed set of routes:
// the /v2 API's (base, catalog, tags, manifest, blob, blob_upload,
// referrers, token), "api" for /api/v1, the probes, "metrics", and
// "other" for anything else, hostile paths included.
func routeLabel(p string) string {
	if p == authz.TokenPath {
		return "token"
	}
	if p == "/v2" || p == "/v2/" {
		return "base"
	}
	if rest, ok := strings.CutPrefix(p, "/v2/"); ok {
		if rest == "_catalog" {
			return "catalog"
		}
		segs := strings.Split(rest, "/")
		n := len(segs)
		switch {
		case n >= 3 && segs[n-2] == "tags" && segs[n-1] == "list":
			return "tags"
		case n >= 3 && segs[n-2] == "blobs" && segs[n-1] == "uploads",
			n >= 4 && segs[n-3] == "blobs" && segs[n-2] == "uploads":
			return "blob_upload"
		case n >= 3 && segs[n-2] == "blobs":
			return "blob"
		case n >= 3 && segs[n-2] == "manifests":
			return "manifest"
		case n >= 3 && segs[n-2] == "referrers":
			return "referrers"
		}
		return "other"
	}
	if p == "/api/v1" || strings.HasPrefix(p, "/api/v1/") {
		return "api"
	}
	switch p {
	case "/healthz", "/livez", "/readyz":
		return "probe"
	case "/metrics":
		return "metrics"
	}
	return "other"
}

// methodLabel keeps the method label to the methods the APIs use.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions:
		return m
	}
	return "OTHER"
}

// authenticator identifies callers (authz.Authorizer; api.Open when auth
// is off).
type authenticator interface {
	Authenticate(r *http.Request) (authz.Decision, error)
}

// superusersOnly serves next to superusers (Basic credentials or an API
// token) and refuses everyone else: /metrics on the main listener unless
// metrics.public is set.
func superusersOnly(a authenticator, log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, err := a.Authenticate(r)
		switch {
		case err != nil:
			log.Error("authenticate a metrics scrape", "err", err)
			http.Error(w, "cannot authenticate now", http.StatusServiceUnavailable)
		case d.Verdict == authz.TooManyRequests:
			http.Error(w, d.Reason, http.StatusTooManyRequests)
		case d.Verdict != authz.Allow || d.Identity.Kind == auth.KindAnonymous:
			w.Header().Set("WWW-Authenticate", `Basic realm="berth metrics"`)
			http.Error(w, "metrics need a superuser's credentials or API token (or metrics.public, or metrics.addr)", http.StatusUnauthorized)
		case !d.Identity.Superuser:
			http.Error(w, "metrics are for superusers", http.StatusForbidden)
		default:
			next.ServeHTTP(w, r)
		}
	})
}
