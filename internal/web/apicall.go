package web

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/berth-dev/berth/internal/auth"
)

// API runs /api/v1 requests in-process as a visitor (*api.API's Act). The
// organization, user, admin and settings pages read through it, and every
// action of the UI is one of its requests: the API's handler applies its
// own validation, permission decision and audit entry, so the UI holds no
// copy of those rules.
type API interface {
	Act(ctx context.Context, id auth.Identity, remoteAddr, method, path string, body []byte) (status int, answer []byte)
}

// apiError is an API answer other than 2xx.
type apiError struct {
	Status  int
	Message string
}

func (e *apiError) Error() string { return e.Message }

// call runs an API request as the visitor: body (nil for none) is sent as
// JSON, a 2xx answer is decoded into out (when not nil), and any other
// answer is returned as an *apiError with the API's message.
func (u *UI) call(r *http.Request, v *visitor, method, path string, body, out any) error {
	if u.opts.API == nil {
		return fail(http.StatusNotImplemented, "This page needs the API, which this server does not serve.")
	}
	var raw []byte
	if body != nil {
		var err error
		if raw, err = json.Marshal(body); err != nil {
			return err
		}
	}
	status, answer := u.opts.API.Act(r.Context(), v.id, r.RemoteAddr, method, path, raw)
	if status >= 300 {
		var e struct {
			Message string `json:"error_message"`
		}
		if json.Unmarshal(answer, &e) != nil || e.Message == "" {
			e.Message = strings.TrimSpace(string(answer))
		}
		return &apiError{Status: status, Message: e.Message}
	}
	if out != nil && len(answer) > 0 {
		if err := json.Unmarshal(answer, out); err != nil {
			return fmt.Errorf("decode the API's answer to %s %s: %w", method, path, err)
		}
	}
	return nil
}

// pageError turns an API refusal into the page's answer: what the caller
// may not see is "not found" (401, 403 and 404 alike, so that a visitor
// learns nothing of what exists), a bad request shows the API's message.
func pageError(err error) error {
	e, ok := err.(*apiError)
	if !ok {
		return err
	}
	switch e.Status {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound:
		return errNotFound
	case http.StatusNotImplemented:
		return fail(http.StatusNotFound, "%s", e.Message)
	}
	return fail(e.Status, "%s", e.Message)
}

// actionError turns an API refusal of an action into the page's answer:
// the API's message with its status (403 says who may do it).
func actionError(err error) error {
	e, ok := err.(*apiError)
	if !ok {
		return err
	}
	if e.Status == http.StatusUnauthorized {
		return fail(http.StatusForbidden, "Sign in to do this: %s.", e.Message)
	}
	return fail(e.Status, "%s", e.Message)
}

// esc escapes one path segment of an API path.
func esc(s string) string { return url.PathEscape(s) }

// repoAPI is the API path of a repository, with an optional suffix. Each
// of the name's components is escaped: a name taken from the page's path
// can hold a decoded "?" or "#", which must not end the API path early
// (and so reach another action); the API refuses such a name. The name
// always ends at a "-" segment, so that the API reads no endpoint into
// it: without it, acme/ci/gate would be the gate of acme/ci, and
// acme/app/tag/v1 tag v1 of acme/app.
func repoAPI(repo string, suffix ...string) string {
	parts := strings.Split(repo, "/")
	for i, c := range parts {
		parts[i] = esc(c)
	}
	p := "/api/v1/repository/" + strings.Join(parts, "/") + "/-"
	for _, s := range suffix {
		p += "/" + s
	}
	return p
}
