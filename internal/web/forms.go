package web

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/berth-dev/berth/internal/gate"
	"github.com/berth-dev/berth/internal/oci"
)

// A refused form. When the visitor can fix what it sent (the API, or the
// UI's own check, answered 400, 409 or 422), the page the form belongs to
// is rendered again with the message in the form's section and the
// fields as they were typed (formFlash): nothing typed is lost. Any other
// error is a page of its own, which links back to the form's page
// (formPage), as the header's "Sign in" does.

// formFlash is what a refused form leaves on its page: the section and
// the action (the form's path under the page) it came from, the message,
// and what the visitor sent. Form is only ever the request's own fields:
// a page shows it back to whoever just typed it, never a stored secret.
type formFlash struct {
	Section, Action, Error string
	Form                   url.Values
	// Gate is the gate's policy as typed (the settings page).
	Gate *gate.Config
}

// Kept is what was typed in the form of action, or nil when another form
// (or none) was refused.
func (f formFlash) Kept(action string) url.Values {
	if f.Form == nil || f.Action != action {
		return nil
	}
	return f.Form
}

// Has says whether the form of action was refused with value among key's
// values (a ticked checkbox, a chosen option).
func (f formFlash) Has(action, key, value string) bool {
	return slices.Contains(f.Kept(action)[key], value)
}

// refusal is the status and message of an error the visitor can fix in
// the form, and whether it is one.
func refusal(err error) (int, string, bool) {
	var status int
	var msg string
	var ae *apiError
	var we *webError
	switch {
	case errors.As(err, &ae):
		status, msg = ae.Status, ae.Message
	case errors.As(err, &we):
		status, msg = we.status, we.msg
	default:
		return 0, "", false
	}
	switch status {
	case http.StatusBadRequest, http.StatusConflict, http.StatusUnprocessableEntity:
		return status, msg, true
	}
	return 0, "", false
}

// refused answers an action's error: a refusal the visitor can fix
// renders the form's page again (page, with a formFlash of the section
// and action); anything else, or a page that cannot be read now, is the
// error's own page (actionError).
func (u *UI) refused(r *http.Request, err error, section, action string, page func(status int, flash formFlash) error) error {
	status, msg, ok := refusal(err)
	if !ok {
		return actionError(err)
	}
	if perr := page(status, formFlash{Section: section, Action: action, Error: msg, Form: submitted(r)}); perr != nil {
		var we *webError
		if !errors.As(perr, &we) {
			u.log.Warn("web: the page of a refused form could not be read", "path", r.URL.Path, "err", perr)
		}
		return actionError(err)
	}
	return nil
}

// submitted is the request's form fields but the CSRF token.
func submitted(r *http.Request) url.Values {
	form := url.Values{}
	for k, vs := range r.PostForm {
		if k != "csrf" {
			form[k] = vs
		}
	}
	return form
}

// formPage is the page a request belongs to, for the header's "Sign in"
// (?next=) and an error page's link back, with that link's text: the
// request's own path and query for a GET or HEAD; for a form's POST, the
// page whose form posts there (a POST path has no page of its own: signing
// in and returning there was a 404), "/" (and no text) when none does.
func formPage(r *http.Request) (path, label string) {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return r.URL.RequestURI(), ""
	}
	segs := strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")
	switch {
	case len(segs) >= 3 && segs[0] == "repository":
		name, action := routePOST(segs[1:])
		repo := strings.Join(name, "/")
		if oci.ValidateName(repo) != nil || !strings.Contains(repo, "/") {
			return "/", ""
		}
		switch {
		case len(action) >= 1 && action[0] == "settings":
			return repoPath(repo) + "/settings", "Back to the settings of " + repo
		case len(action) == 1 && (action[0] == "restore-tag" || action[0] == "sync-now"),
			len(action) == 3 && action[0] == "notification":
			return repoPath(repo) + "/activity", "Back to the activity of " + repo
		case len(action) == 3 && action[0] == "manifest":
			return repoPath(repo) + "/manifest/" + esc(action[1]), "Back to the manifest"
		}
		return repoPath(repo), "Back to " + repo
	case len(segs) >= 3 && segs[0] == "organization" && segs[1] != "":
		return "/organization/" + esc(segs[1]), "Back to organization " + segs[1]
	case len(segs) >= 3 && segs[0] == "user" && segs[1] != "":
		return "/user/" + esc(segs[1]), "Back to your account"
	case len(segs) >= 2 && segs[0] == "admin":
		return "/admin", "Back to the administration page"
	}
	return "/", ""
}
