// Package api serves /api/v1, Berth's REST API, compatible with Quay's
// where Quay has the endpoint: same paths, field names and status codes.
package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/authz"
	"github.com/berth-dev/berth/internal/meta"
)

// Authenticator identifies API callers and decides repository actions.
// Its answers are decisions, never HTTP errors: the API turns them into
// its answers (see handle and allow).
type Authenticator interface {
	// Authenticate identifies the caller (Basic credentials, or a bearer
	// access token; no credentials is auth.Anonymous): Allow with its
	// identity, Unauthenticated or TooManyRequests with the reason. An
	// error is a failure to decide.
	Authenticate(r *http.Request) (authz.Decision, error)
	// Decide applies auth.Allowed with what the store knows.
	Decide(ctx context.Context, id auth.Identity, repo, action string) (bool, error)
}

// Open is the Authenticator of auth mode "none": every caller is an
// anonymous superuser.
type Open struct{}

// Authenticate implements Authenticator.
func (Open) Authenticate(*http.Request) (authz.Decision, error) {
	return authz.Decision{Verdict: authz.Allow, Identity: auth.Identity{Kind: auth.KindUser, Name: "", Superuser: true}}, nil
}

// Decide implements Authenticator.
func (Open) Decide(context.Context, auth.Identity, string, string) (bool, error) { return true, nil }

// Options configure the API.
type Options struct {
	// FeatureUserInitialize enables POST /api/v1/user/initialize.
	FeatureUserInitialize bool
	// Notifier manages notifications; nil answers 501 on their endpoints.
	Notifier Notifier
	// EmailAuthorizer mails confirmations of addresses for email
	// notifications; nil answers 501 on the authorizedemail endpoints' POST.
	EmailAuthorizer EmailAuthorizer
	// Importer runs imports; nil answers 501.
	Importer Importer
	// Mirrors runs repository mirroring; nil answers 501.
	Mirrors Mirrors
	// ProxyCache manages proxy-cache organizations; nil answers 501.
	ProxyCache ProxyCaches
	// Scanner answers the security endpoints; nil answers 501.
	Scanner Scanner
	// GC explains garbage collection; nil answers 501.
	GC Collector
	// Graph is the base-image graph; nil answers 501.
	Graph Graph
	// Gates evaluates and promotes gates' candidates; nil answers 501.
	Gates Gates
	// Cursors seals the listings' next_page cursors (auth.Sealer, with
	// the installation's key, so that every replica opens them); nil: a
	// key of this process's own.
	Cursors Sealer
	// TrustedOrigin is the registry's public origin (externalURL's scheme
	// and host), whose pages may change things through the API even when
	// a reverse proxy hands the API another Host: browsers that send an
	// Origin but no Sec-Fetch-Site are judged by Origin against Host.
	TrustedOrigin string
	Logger        *slog.Logger
	// Now is the clock of the repositories' cached quota_report (tests);
	// nil: time.Now.
	Now func() time.Time
}

// Sealer encrypts and authenticates what a client must carry without
// reading or forging it (auth.Sealer).
type Sealer interface {
	Seal(plaintext []byte) string
	Open(sealed string) ([]byte, error)
}

// API is the /api/v1 handler.
type API struct {
	db   Stores
	auth Authenticator
	opts Options
	log  *slog.Logger
	mux  *http.ServeMux
	// crossOrigin refuses the state-changing requests a browser sends
	// from another site (see ServeHTTP).
	crossOrigin *http.CrossOriginProtection
	// imports bounds the imports running at once (see importImage).
	imports *importSlots
	// patterns lists what was registered on mux, for the test that keeps
	// the OpenAPI document true.
	patterns []string
}

// New returns the /api/v1 handler over the metadata stores.
func New(db Stores, authn Authenticator, opts Options) *API {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Cursors == nil {
		key := make([]byte, 32)
		rand.Read(key)
		opts.Cursors, _ = auth.NewSealer(key)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if db.Usage != nil {
		// Repositories' usage is summed once per repoUsageTTL at most.
		db.Usage = &repoUsageCache{UsageStore: db.Usage, now: opts.Now}
	}
	a := &API{db: db, auth: authn, opts: opts, log: opts.Logger, mux: http.NewServeMux(), crossOrigin: http.NewCrossOriginProtection(),
		imports: newImportSlots(maxImportsPerCaller, maxImports)}
	if opts.TrustedOrigin != "" {
		if err := a.crossOrigin.AddTrustedOrigin(opts.TrustedOrigin); err != nil {
			opts.Logger.Warn("externalURL is no origin the API can trust for cross-site checks", "origin", opts.TrustedOrigin, "err", err)
		}
	}
	a.routes()
	return a
}

// ServeHTTP implements http.Handler. Before any handler runs it refuses:
//   - a path or query that holds a NUL byte or invalid UTF-8 (no name or
//     value can hold one, and PostgreSQL cannot store or compare it), or
//     a query value over maxQueryValue bytes (no name, tag or cursor is
//     that long; SQLite refuses a LIKE pattern over 50,000 bytes);
//   - with 403, a request other than GET, HEAD or OPTIONS that a browser
//     sent from another site (Sec-Fetch-Site, or else an Origin that is
//     not the request's host: net/http's CrossOriginProtection). A
//     browser may hold the Basic credentials of a user who signed in to
//     the API and send them with a page's cross-site form; clients that
//     are not browsers send neither header, and the web UI's own calls
//     (Act) none.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !meta.ValidText(r.URL.Path) || !validQuery(r.URL.Query()) {
		a.fail(w, r, badRequest("the path or query holds a NUL byte or invalid UTF-8"))
		return
	}
	if !shortQuery(r.URL.Query()) {
		a.fail(w, r, badRequest("a query value is over %d bytes", maxQueryValue))
		return
	}
	if err := a.crossOrigin.Check(r); err != nil {
		a.fail(w, r, forbidden("a browser sent this request from another site (Origin %q, Sec-Fetch-Site %q): cross-site requests may not change anything; nothing was changed",
			r.Header.Get("Origin"), r.Header.Get("Sec-Fetch-Site")))
		return
	}
	a.mux.ServeHTTP(w, r)
}

func validQuery(q url.Values) bool {
	for k, vs := range q {
		if !meta.ValidText(k) {
			return false
		}
		for _, v := range vs {
			if !meta.ValidText(v) {
				return false
			}
		}
	}
	return true
}

// maxQueryValue bounds a query parameter's value.
const maxQueryValue = 4096

func shortQuery(q url.Values) bool {
	for _, vs := range q {
		for _, v := range vs {
			if len(v) > maxQueryValue {
				return false
			}
		}
	}
	return true
}

// handler is an API handler: it returns an error to answer, or nil when it
// has written its answer.
type handler func(w http.ResponseWriter, r *http.Request, id auth.Identity) error

// handle registers a handler that first identifies the caller. A caller
// refused is answered before the handler runs: 401 for bad credentials or
// a registry token, 429 with a Retry-After for a login refused for now.
func (a *API) handle(pattern string, h handler) {
	a.patterns = append(a.patterns, pattern)
	a.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		if id, ok := actingIdentity(r); ok {
			if err := h(w, r, id); err != nil {
				a.fail(w, r, err)
			}
			return
		}
		d, err := a.auth.Authenticate(r)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		switch d.Verdict {
		case authz.Allow:
		case authz.TooManyRequests: // throttled, or too many logins at once
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(max(d.RetryAfter.Seconds(), 1)))))
			a.fail(w, r, apiError(http.StatusTooManyRequests, "too_many_requests", "%s", d.Reason))
			return
		case authz.Unauthenticated:
			a.fail(w, r, unauthorized("%s", d.Reason))
			return
		default:
			a.fail(w, r, fmt.Errorf("authentication without a verdict (%s)", d.Verdict))
			return
		}
		if err := h(w, r, d.Identity); err != nil {
			a.fail(w, r, err)
		}
	})
}

// Error is an API error in Quay's shape.
type Error struct {
	Status  int    `json:"status"`
	Type    string `json:"error_type"`
	Message string `json:"error_message"`
	Detail  string `json:"detail"`
	Title   string `json:"title"`
}

func (e *Error) Error() string { return e.Message }

func apiError(status int, typ, format string, args ...any) *Error {
	msg := fmt.Sprintf(format, args...)
	return &Error{Status: status, Type: typ, Message: msg, Detail: msg, Title: typ}
}

func badRequest(format string, args ...any) *Error {
	return apiError(http.StatusBadRequest, "invalid_request", format, args...)
}
func unauthorized(format string, args ...any) *Error {
	return apiError(http.StatusUnauthorized, "invalid_token", format, args...)
}
func forbidden(format string, args ...any) *Error {
	return apiError(http.StatusForbidden, "insufficient_scope", format, args...)
}
func notFound(format string, args ...any) *Error {
	return apiError(http.StatusNotFound, "not_found", format, args...)
}

// fail answers an error: API errors as they are, anything else as a
// logged 500 that reveals nothing.
func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	var e *Error
	if !errors.As(err, &e) && errors.Is(err, meta.ErrInvalidText) {
		e = badRequest("a value holds a NUL byte or invalid UTF-8")
	}
	if e == nil && errors.Is(err, meta.ErrCreatorGone) {
		e = forbidden("the account making this request was deleted")
	}
	if e == nil && meta.StorageFull(err) {
		a.log.Error("storage full: api request refused", "method", r.Method, "path", r.URL.Path, "err", err)
		e = apiError(http.StatusInsufficientStorage, "storage_full", "the server's storage is full: nothing was changed; retry once space is freed")
	}
	if e == nil {
		if r.Context().Err() == nil {
			a.log.Error("api request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		}
		e = apiError(http.StatusInternalServerError, "internal_error", "internal server error; see the server log")
	}
	if e.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="berth"`)
	}
	writeJSON(w, e.Status, e)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// maxBody caps a request body.
const maxBody = 1 << 20

// decode reads a JSON body into v, refusing unknown fields, trailing data,
// bodies over maxBody and bodies of another Content-Type (jsonContent),
// with a clear message.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); !jsonContent(ct) {
		return badRequest("the body is sent as %q; send it as application/json", ct)
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	raw, err := io.ReadAll(r.Body)
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return apiError(http.StatusRequestEntityTooLarge, "invalid_request", "request body over %d bytes", maxBody)
	}
	if err != nil {
		return badRequest("reading the request body: %v", err)
	}
	// JSON may escape a NUL (\u0000), which no stored text can hold
	// (invalid UTF-8 is replaced by the decoder).
	if bytes.Contains(raw, []byte(`u0000`)) {
		var probe any
		if json.Unmarshal(raw, &probe) == nil && holdsNUL(probe) {
			return badRequest("a string in the body holds a NUL character")
		}
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		switch {
		case errors.Is(err, io.EOF):
			return badRequest("request body is empty; a JSON object is required")
		default:
			return badRequest("malformed JSON body: %v", err)
		}
	}
	if dec.More() {
		return badRequest("malformed JSON body: data after the JSON object")
	}
	return nil
}

// jsonContent reports whether a request's Content-Type may carry its JSON
// body: application/json (or a +json type), none, or
// application/x-www-form-urlencoded, which curl -d sends by default (and
// in which a browser's form cannot send a JSON object: it percent-encodes
// its braces and quotes). text/plain and multipart/form-data, the other
// types a cross-site form may send, are refused.
func jsonContent(ct string) bool {
	if ct == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil && !errors.Is(err, mime.ErrInvalidMediaParameter) { // a bad parameter still names the type
		return false
	}
	return mt == "application/json" || strings.HasSuffix(mt, "+json") || mt == "application/x-www-form-urlencoded"
}

// requireUser refuses anonymous callers.
func requireUser(id auth.Identity) error {
	if id.Kind == auth.KindAnonymous {
		return unauthorized("authentication required")
	}
	return nil
}

// allow refuses a repository action the caller may not perform: 401 for
// anonymous callers, 403 otherwise.
func (a *API) allow(ctx context.Context, id auth.Identity, repo, action string) error {
	ok, err := a.auth.Decide(ctx, id, repo, action)
	if err != nil {
		return err
	}
	if ok {
		return nil
	}
	if id.Kind == auth.KindAnonymous {
		return unauthorized("authentication required")
	}
	if action == auth.ActionChecks {
		return forbidden("%s may not see the gate's candidates of %s or post their checks (it is not one of the gate's checkers)", id.Actor(), repo)
	}
	return forbidden("%s may not %s %s", id.Actor(), action, repo)
}

// audit records a security-relevant action.
func (a *API) audit(r *http.Request, id auth.Identity, kind, repo, namespace string, md any) {
	b, _ := json.Marshal(md)
	if namespace == "" {
		namespace, _, _ = strings.Cut(repo, "/")
	}
	// The address as login failures record it (authz.ClientAddress): an
	// IPv6 client's without brackets.
	if err := a.db.Audit.AppendAudit(r.Context(), meta.AuditEntry{Kind: kind, Actor: id.Actor(), IP: authz.ClientAddress(r), Namespace: namespace, Repository: repo, Metadata: b}); err != nil {
		a.log.Warn("audit log", "err", err)
	}
}

// holdsNUL reports whether a decoded JSON value holds a NUL in any string
// or object key.
func holdsNUL(v any) bool {
	switch x := v.(type) {
	case string:
		return strings.ContainsRune(x, 0)
	case []any:
		for _, e := range x {
			if holdsNUL(e) {
				return true
			}
		}
	case map[string]any:
		for k, e := range x {
			if strings.ContainsRune(k, 0) || holdsNUL(e) {
				return true
			}
		}
	}
	return false
}
