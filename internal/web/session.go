package web

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"math"
	"net/http"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/authz"
	"github.com/berth-dev/berth/internal/meta"
)

// Cookies: the session's random id (its SHA-256 is stored), and the
// double-submit CSRF token of visitors without a session.
const (
	sessionCookie = "berth_session"
	csrfCookie    = "berth_csrf"
)

func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func hashID(id string) string {
	s := sha256.Sum256([]byte(id))
	return hex.EncodeToString(s[:])
}

func (u *UI) cookie(r *http.Request, name, value string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: name, Value: value, Path: "/", MaxAge: maxAge, HttpOnly: true,
		Secure: u.opts.SecureCookies || r.TLS != nil, SameSite: http.SameSiteLaxMode}
}

// visitor identifies the caller from its session cookie. Without auth
// (mode "none") everyone is an anonymous superuser, as on the API. A
// visitor without a session gets a double-submit CSRF cookie.
func (u *UI) visitor(w http.ResponseWriter, r *http.Request) (*visitor, error) {
	v := &visitor{id: auth.Anonymous}
	if u.opts.Auth == nil {
		v.id = auth.Identity{Kind: auth.KindUser, Superuser: true}
	} else if c, err := r.Cookie(sessionCookie); err == nil && c.Value != "" {
		h := hashID(c.Value)
		s, err := u.db.Sessions.WebSession(r.Context(), h, u.opts.Now())
		switch {
		case errors.Is(err, meta.ErrSessionNotFound):
			http.SetCookie(w, u.cookie(r, sessionCookie, "", -1))
		case err != nil:
			return v, err
		case s.Enabled:
			v.id = auth.Identity{Kind: auth.KindUser, ID: s.UserID, Name: s.Username, Superuser: s.Superuser}
			v.signedIn, v.csrf, v.session = true, s.CSRF, h
			return v, nil
		}
	}
	if c, err := r.Cookie(csrfCookie); err == nil && len(c.Value) >= 32 {
		v.csrf = c.Value
	} else {
		v.csrf = randomToken()
		http.SetCookie(w, &http.Cookie{Name: csrfCookie, Value: v.csrf, Path: "/", HttpOnly: true,
			Secure: u.opts.SecureCookies || r.TLS != nil, SameSite: http.SameSiteStrictMode})
	}
	return v, nil
}

// checkCSRF refuses a POST whose form does not carry the visitor's token
// (the session's synchronizer token, or the double-submit cookie's), or
// that a browser says came from another origin: one whose host is not
// the request's, unless it is the trusted origin (externalURL's, when a
// proxy hands the UI another Host).
func (u *UI) checkCSRF(r *http.Request, v *visitor) error {
	r.Body = http.MaxBytesReader(nil, r.Body, 1<<20)
	if o := r.Header.Get("Origin"); o != "" && o != "null" {
		ou, err := url.Parse(o)
		trusted := err == nil && u.trustedOrigin != "" && normalOrigin(ou) == u.trustedOrigin
		if err != nil || ou.Host != r.Host && !trusted {
			return fail(http.StatusForbidden, "The form was posted from another site (Origin %s); nothing was changed.", o)
		}
	}
	got := r.PostFormValue("csrf")
	if got == "" || v.csrf == "" || subtle.ConstantTimeCompare([]byte(got), []byte(v.csrf)) != 1 {
		return fail(http.StatusForbidden, "The form's security token is missing or stale; nothing was changed. Reload the page and try again.")
	}
	return nil
}

func (u *UI) signinForm(w http.ResponseWriter, r *http.Request, v *visitor) error {
	if u.opts.Auth == nil {
		return fail(http.StatusNotFound, "Authentication is off on this registry (auth.mode: none): there is nothing to sign in to.")
	}
	u.render(w, r, v, http.StatusOK, "signin", "Sign in", map[string]any{"Next": safeNext(r.URL.Query().Get("next"))})
	return nil
}

// maxEchoedName is the longest submitted name a refused sign-in puts back
// in the form (the sign-in throttle keys and the audit log cut names at
// 256 bytes too).
const maxEchoedName = 256

// signin checks a user's password with the token endpoint's check and
// throttle, and starts a session: only for a user's own password (an API
// token acting as its user is for clients, and a session would outlive
// its revocation), and only while the user is enabled and still has the
// password checked (a reset or a disable between the check and the
// session's creation, which ends the user's sessions, leaves none).
func (u *UI) signin(w http.ResponseWriter, r *http.Request, v *visitor) error {
	if u.opts.Auth == nil {
		return fail(http.StatusNotFound, "Authentication is off on this registry (auth.mode: none).")
	}
	name, pass, next := r.PostFormValue("username"), r.PostFormValue("password"), safeNext(r.PostFormValue("next"))
	again := func(status int, msg string) error {
		echo := name
		if len(echo) > maxEchoedName {
			// No account has such a name: not worth a page of it.
			echo = ""
		}
		u.render(w, r, v, status, "signin", "Sign in", map[string]any{"Next": next, "Error": msg, "Username": echo})
		return nil
	}
	id, err := u.opts.Auth.Login(r.Context(), r, name, pass)
	var retry *authz.RetryError
	switch {
	case errors.As(err, &retry):
		w.Header().Set("Retry-After", itoa(int(math.Ceil(retry.RetryAfter().Seconds()))))
		return again(http.StatusTooManyRequests, "Too many sign-in attempts; try again in a few minutes.")
	case errors.Is(err, authz.ErrBadCredentials), errors.Is(err, authz.ErrDisabled):
		return again(http.StatusUnauthorized, "Wrong username or password.")
	case err != nil:
		return err
	case id.Kind != auth.KindUser || id.ViaToken || id.SecretFingerprint == "":
		return again(http.StatusUnauthorized, "Sign in with a user account and its password (robot and access tokens are for clients).")
	}
	sid := randomToken()
	s := meta.WebSession{IDHash: hashID(sid), UserID: id.ID, CSRF: randomToken(), ExpiresAt: u.opts.Now().Add(u.opts.SessionTTL),
		SecretFingerprint: id.SecretFingerprint}
	if err := u.db.Sessions.CreateWebSession(r.Context(), s); errors.Is(err, meta.ErrStaleSignIn) {
		return again(http.StatusUnauthorized, "Wrong username or password.")
	} else if err != nil {
		return err
	}
	if v.session != "" {
		u.db.Sessions.DeleteWebSession(r.Context(), v.session)
	}
	http.SetCookie(w, u.cookie(r, sessionCookie, sid, int(u.opts.SessionTTL.Seconds())))
	http.Redirect(w, r, next, http.StatusSeeOther)
	return nil
}

func (u *UI) signout(w http.ResponseWriter, r *http.Request, v *visitor) error {
	if v.session != "" {
		if err := u.db.Sessions.DeleteWebSession(r.Context(), v.session); err != nil {
			return err
		}
	}
	http.SetCookie(w, u.cookie(r, sessionCookie, "", -1))
	http.Redirect(w, r, "/", http.StatusSeeOther)
	return nil
}

// safeNext keeps a redirect target on this site: a path of its own,
// without a scheme or a host, and without a backslash, a control
// character or a space, which browsers read as "/" or strip ("/\t/evil"
// is "//evil", another host, to them). Anything else is "/".
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.ContainsFunc(next, func(r rune) bool {
		return r == '\\' || unicode.IsControl(r) || unicode.IsSpace(r) || r == utf8.RuneError
	}) {
		return "/"
	}
	if u, err := url.Parse(next); err != nil || u.Scheme != "" || u.Host != "" || u.Opaque != "" || u.User != nil {
		return "/"
	}
	return next
}

// normalOrigin is an origin as scheme://host[:port], lowercase, without
// the scheme's default port (as browsers send it); "" when u is no
// http(s) origin.
func normalOrigin(u *url.URL) string {
	scheme, host, port := strings.ToLower(u.Scheme), strings.ToLower(u.Hostname()), u.Port()
	if (scheme != "http" && scheme != "https") || host == "" || u.User != nil {
		return ""
	}
	if port == "" || scheme == "http" && port == "80" || scheme == "https" && port == "443" {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]" // IPv6
	}
	if port != "" {
		host += ":" + port
	}
	return scheme + "://" + host
}
