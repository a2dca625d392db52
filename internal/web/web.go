// Package web is Berth's web UI: server-rendered pages (html/template)
// with their CSS and a few lines of script embedded in the binary, served
// by `berth serve` at "/". Pages read the metadata store through the small
// interfaces of stores.go, a handful of indexed queries each, and every
// page and action applies the same permission decision as /v2 and /api/v1
// (Authenticator.Decide). Reading works without JavaScript.
package web

import (
	"bytes"
	"context"
	"crypto/rand"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
)

//go:embed templates/*.html static/*
var files embed.FS

// Options configure the UI.
type Options struct {
	// Auth checks sign-ins and decides; nil is auth mode "none": every
	// visitor is an anonymous superuser, as on the API.
	Auth Authenticator
	// Registry is host[:port] of the pull commands the pages show.
	Registry string
	// SecureCookies marks cookies Secure (externalURL is https); they are
	// also Secure on a request that came over TLS.
	SecureCookies bool
	// TrustedOrigin is the registry's public origin (externalURL's scheme
	// and host, as api.Options.TrustedOrigin): forms posted from it are
	// accepted even when a reverse proxy hands the UI another Host. ""
	// accepts only the request's own host.
	TrustedOrigin string
	// SessionTTL is how long a sign-in lasts (default 12 hours).
	SessionTTL time.Duration
	// API runs the pages' API requests as the visitor (*api.API); the
	// organization, user, admin and settings pages and every action need it.
	API API
	// VulnStaleAfter is scan.vulndb.staleAfter (default
	// scan.DefaultStaleAfter): older advisories are called stale.
	VulnStaleAfter time.Duration
	// Queues are the job queues the admin page always lists (idle ones
	// with zeros), as the metrics do.
	Queues []string
	// TimeMachine is gc.timeMachine, the window of the API's tag restore
	// (meta.TimeMachine): the Activity page lists the deleted tags that
	// restore puts back, no other. nil: the configuration's default.
	TimeMachine *time.Duration
	// Cursors seals the repository listing's resume links (auth.Sealer,
	// with the installation's key, so that every replica opens them);
	// nil: a key of this process's own.
	Cursors Sealer
	Logger  *slog.Logger
	// Now is the clock (tests).
	Now func() time.Time
}

// Sealer encrypts and authenticates what a visitor carries without
// reading or forging it (auth.Sealer).
type Sealer interface {
	Seal(plaintext []byte) string
	Open(sealed string) ([]byte, error)
}

// UI is the web UI's handler.
type UI struct {
	db      Stores
	opts    Options
	log     *slog.Logger
	mux     *http.ServeMux
	pages   map[string]*template.Template
	cursors Sealer
	// trustedOrigin is Options.TrustedOrigin as normalOrigin writes it.
	trustedOrigin string
}

// New returns the UI's handler; it refuses Stores with Content and no
// Referrers.
func New(db Stores, opts Options) (*UI, error) {
	if db.Content != nil && db.Referrers == nil {
		return nil, errors.New("web: Stores.Content without Stores.Referrers")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.SessionTTL <= 0 {
		opts.SessionTTL = 12 * time.Hour
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.TimeMachine == nil {
		d := config.Default().GC.TimeMachine
		opts.TimeMachine = &d
	}
	u := &UI{db: db, opts: opts, log: opts.Logger, mux: http.NewServeMux(), pages: map[string]*template.Template{}, cursors: opts.Cursors}
	if o := opts.TrustedOrigin; o != "" {
		ou, err := url.Parse(o)
		if err == nil {
			u.trustedOrigin = normalOrigin(ou)
		}
		if u.trustedOrigin == "" || ou.Path != "" && ou.Path != "/" {
			// Forms from it are refused unless the proxy keeps the Host.
			u.trustedOrigin = ""
			u.log.Warn("externalURL is no origin the web UI can trust for its forms", "origin", o)
		}
	}
	if u.cursors == nil {
		key := make([]byte, 32)
		rand.Read(key)
		sealer, err := auth.NewSealer(key)
		if err != nil {
			return nil, err
		}
		u.cursors = sealer
	}
	for _, p := range []string{"repositories", "repository", "manifest", "activity", "signin", "message",
		"organization", "user", "secret", "admin", "settings"} {
		t, err := template.New(p).Funcs(funcs).ParseFS(files, "templates/layout.html", "templates/partials.html", "templates/"+p+".html")
		if err != nil {
			return nil, fmt.Errorf("web template %s: %w", p, err)
		}
		u.pages[p] = t
	}
	static, err := fs.Sub(files, "static")
	if err != nil {
		return nil, err
	}
	assets := http.StripPrefix("/static/", http.FileServerFS(static))
	u.mux.Handle("GET /static/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		assets.ServeHTTP(w, r)
	}))
	u.mux.HandleFunc("GET /{$}", u.page(u.repositories))
	u.mux.HandleFunc("GET /repository", u.page(u.repositories))
	u.mux.HandleFunc("GET /repository/{path...}", u.page(u.repositoryGET))
	u.mux.HandleFunc("POST /repository/{path...}", u.page(u.repositoryPOST))
	u.mux.HandleFunc("GET /organization/{org}", u.page(u.organization))
	u.mux.HandleFunc("POST /organization/{org}/{action...}", u.page(u.organizationPOST))
	u.mux.HandleFunc("GET /user/{name}", u.page(u.user))
	u.mux.HandleFunc("POST /user/{name}/{action...}", u.page(u.userPOST))
	u.mux.HandleFunc("GET /admin", u.page(u.admin))
	u.mux.HandleFunc("POST /admin/{action...}", u.page(u.adminPOST))
	u.mux.HandleFunc("GET /signin", u.page(u.signinForm))
	u.mux.HandleFunc("POST /signin", u.page(u.signin))
	u.mux.HandleFunc("POST /signout", u.page(u.signout))
	u.mux.HandleFunc("GET /authrepoemail", u.page(u.confirmEmailForm))
	u.mux.HandleFunc("POST /authrepoemail", u.page(u.confirmEmail))
	u.mux.HandleFunc("/", u.page(func(w http.ResponseWriter, r *http.Request, v *visitor) error {
		return errNotFound
	}))
	return u, nil
}

// ServeHTTP implements http.Handler: every answer carries the security
// headers (no inline script, no framing, no sniffing, no referrer to
// other sites).
func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	if !meta.ValidText(r.URL.Path) || !meta.ValidText(r.URL.RawQuery) {
		http.Error(w, "the path or query holds a NUL byte or invalid UTF-8", http.StatusBadRequest)
		return
	}
	u.mux.ServeHTTP(w, r)
}

// visitor is who asks: an identity, and the session's CSRF token (or the
// anonymous double-submit token).
type visitor struct {
	id       auth.Identity
	signedIn bool
	csrf     string
	session  string // the session cookie's id hash
}

// pageFunc answers a request; an error is rendered by page.
type pageFunc func(w http.ResponseWriter, r *http.Request, v *visitor) error

// webError is an answer other than 200 with a message.
type webError struct {
	status int
	msg    string
}

func (e *webError) Error() string { return e.msg }

var errNotFound = &webError{http.StatusNotFound, "Not found, or you may not see it."}

func fail(status int, format string, args ...any) error {
	return &webError{status, fmt.Sprintf(format, args...)}
}

// page identifies the visitor, checks the CSRF token of a POST before
// anything runs, and renders an error as a page.
func (u *UI) page(f pageFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := u.visitor(w, r)
		if err == nil && r.Method == http.MethodPost {
			err = u.checkCSRF(r, v)
		}
		if err == nil {
			err = f(w, r, v)
		}
		if err == nil {
			return
		}
		var we *webError
		if !errors.As(err, &we) && errors.Is(err, meta.ErrRepositoryNotFound) {
			// Deleted between the page's reads (after readable found it).
			we = errNotFound
		}
		if we == nil && meta.StorageFull(err) {
			u.log.Error("storage full: web request refused", "method", r.Method, "path", r.URL.Path, "err", err)
			we = &webError{http.StatusInsufficientStorage, "The server's storage is full: nothing was changed. Try again once space is freed."}
		}
		if we == nil {
			if r.Context().Err() == nil {
				u.log.Error("web request failed", "method", r.Method, "path", r.URL.Path, "err", err)
			}
			we = &webError{http.StatusInternalServerError, "Something went wrong; the server log says what."}
		}
		if we.status == http.StatusNotFound && !v.signedIn && u.opts.Auth != nil {
			we = &webError{http.StatusNotFound, we.msg + " Signing in may show more."}
		}
		data := map[string]any{"Message": we.msg, "Status": we.status}
		if back, label := formPage(r); label != "" && r.Method != http.MethodGet && r.Method != http.MethodHead {
			// A form's refusal links back to the form's page.
			data["Back"], data["BackLabel"] = back, label
		}
		u.render(w, r, v, we.status, "message", "Error", data)
	}
}

// pageData is what the layout renders around a page.
type pageData struct {
	Title    string
	User     string
	SignedIn bool
	Open     bool
	Super    bool
	CSRF     string
	// Path is where the header's "Sign in" returns.
	Path string
	Data any
}

// render writes a page. Its Path (where signing in returns) is the
// request's, or for a form's POST the form's page (formPage).
func (u *UI) render(w http.ResponseWriter, r *http.Request, v *visitor, status int, page, title string, data any) {
	path, _ := formPage(r)
	pd := pageData{Title: title, User: v.id.Name, SignedIn: v.signedIn, Open: u.opts.Auth == nil, Super: v.id.Superuser,
		CSRF: v.csrf, Path: path, Data: data}
	var buf bytes.Buffer
	if err := u.pages[page].ExecuteTemplate(&buf, "layout", pd); err != nil {
		u.log.Error("render page", "page", page, "err", err)
		http.Error(w, "the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// allowed applies the permission decision of /v2 and /api/v1.
func (u *UI) allowed(ctx context.Context, v *visitor, repo, action string) (bool, error) {
	if u.opts.Auth == nil {
		return true, nil
	}
	return u.opts.Auth.Decide(ctx, v.id, repo, action)
}

// readable returns the repository when the visitor may read it, else
// errNotFound (whether it exists or not: only those who may see it learn
// that).
func (u *UI) readable(ctx context.Context, v *visitor, repo string) (meta.RepoInfo, error) {
	if err := oci.ValidateName(repo); err != nil || !strings.Contains(repo, "/") {
		return meta.RepoInfo{}, errNotFound
	}
	if ok, err := u.allowed(ctx, v, repo, auth.ActionRead); err != nil {
		return meta.RepoInfo{}, err
	} else if !ok {
		return meta.RepoInfo{}, errNotFound
	}
	ri, err := u.db.Repositories.Repository(ctx, repo)
	if err != nil {
		return meta.RepoInfo{}, err
	}
	if !ri.Exists {
		return meta.RepoInfo{}, errNotFound
	}
	return ri, nil
}
