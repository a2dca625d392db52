package api

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/notify"
)

// EmailAuthorizer mails the confirmation of an address for a target's
// email notifications (*notify.Service).
type EmailAuthorizer interface {
	RequestEmailAuthorization(ctx context.Context, scope, target, addr string) (meta.AuthorizedEmail, error)
}

// authorizedEmailEndpoints are Quay's repository authorized e-mail
// endpoints: an email notification of the repository mails only the
// addresses confirmed through them.
func (a *API) authorizedEmailEndpoints() []repoEndpoint {
	h := func(w http.ResponseWriter, r *http.Request, id auth.Identity, repo string, args []string) error {
		if _, err := a.repoInfo(r.Context(), id, repo, auth.ActionAdmin); err != nil {
			return err
		}
		// dispatchRepository decoded the path's segments already.
		return a.authorizedEmail(w, r, id, meta.ScopeRepository, repo, url.PathEscape(args[0]))
	}
	return []repoEndpoint{
		{http.MethodGet, "authorizedemail/{}", h},
		{http.MethodPost, "authorizedemail/{}", h},
	}
}

// authorizedEmailRoutes registers the organization's form, for its
// organization-wide notifications.
func (a *API) authorizedEmailRoutes() {
	h := func(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
		c, err := a.orgAdmin(r.Context(), id, r.PathValue("org"))
		if err != nil {
			return err
		}
		return a.authorizedEmail(w, r, id, meta.ScopeOrganization, c.org.Name, url.PathEscape(r.PathValue("email")))
	}
	a.handle("GET /api/v1/organization/{org}/authorizedemail/{email}", h)
	a.handle("POST /api/v1/organization/{org}/authorizedemail/{email}", h)
}

// authorizedEmail answers GET (the authorization of an address) and POST
// (mail it a confirmation) for a target, the caller's right to
// administer it already checked; rawEmail is the path segment.
func (a *API) authorizedEmail(w http.ResponseWriter, r *http.Request, id auth.Identity, scope, target, rawEmail string) error {
	ctx := r.Context()
	email, err := url.PathUnescape(rawEmail)
	if err != nil {
		return badRequest("invalid e-mail address in the path")
	}
	if _, err := notify.ParseAuthorizedEmail(email); err != nil {
		return badRequest("%v", err)
	}
	if r.Method == http.MethodGet {
		ae, err := a.db.Emails.AuthorizedEmail(ctx, scope, target, email)
		if errors.Is(err, meta.ErrEmailAuthorizationNotFound) {
			return notFound("no authorization of %s was asked for", email)
		}
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, authorizedEmailView(ae))
		return nil
	}
	ea := a.opts.EmailAuthorizer
	if ea == nil {
		return apiError(http.StatusNotImplemented, "not_implemented", "notifications are not enabled on this server")
	}
	ae, err := ea.RequestEmailAuthorization(ctx, scope, target, email)
	var inv *notify.InvalidError
	switch {
	case errors.As(err, &inv):
		return badRequest("%s", inv.Msg)
	case errors.Is(err, notify.ErrNoSMTP):
		return apiError(http.StatusNotImplemented, "not_implemented", "%v: no confirmation can be mailed", err)
	case errors.Is(err, meta.ErrEmailAuthorizationTooSoon):
		w.Header().Set("Retry-After", strconv.Itoa(int(meta.EmailAuthorizationInterval.Seconds())))
		return apiError(http.StatusTooManyRequests, "too_many_requests", "%v: wait before asking again", err)
	case errors.Is(err, meta.ErrTooManyEmailAuthorizations):
		return apiError(http.StatusTooManyRequests, "too_many_requests", "%v: at most %d addresses may wait for confirmation", err, meta.MaxPendingEmailAuthorizations)
	case err != nil:
		return err
	}
	a.audit(r, id, "authorize_email", repoOf(scope, target), nsOf(scope, target), map[string]string{"email": ae.Email})
	writeJSON(w, http.StatusOK, authorizedEmailView(ae))
	return nil
}

// authorizedEmailView is an authorization as Quay shows it.
func authorizedEmailView(ae meta.AuthorizedEmail) map[string]any {
	v := map[string]any{"email": ae.Email, "confirmed": ae.Confirmed}
	if ae.Scope == meta.ScopeOrganization {
		v["namespace"], v["organization"] = ae.Target, ae.Target
		return v
	}
	ns, name := splitRepo(ae.Target)
	v["namespace"], v["repository"] = ns, name
	return v
}
