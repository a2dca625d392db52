package api

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/notify"
)

// Notifier manages notifications for the API.
type Notifier interface {
	Create(ctx context.Context, scope, target, actor string, in notify.Input) (meta.Notification, error)
	Test(ctx context.Context, n meta.Notification, repo string) error
}

// notificationEndpoints are Quay's repository notification endpoints, plus
// Berth's delivery attempts.
func (a *API) notificationEndpoints() []repoEndpoint {
	h := func(op string) repoHandler {
		return func(w http.ResponseWriter, r *http.Request, id auth.Identity, repo string, args []string) error {
			if _, err := a.repoInfo(r.Context(), id, repo, auth.ActionAdmin); err != nil {
				return err
			}
			uuid := ""
			if len(args) > 0 {
				uuid = args[0]
			}
			return a.notification(w, r, id, op, meta.ScopeRepository, repo, uuid)
		}
	}
	return []repoEndpoint{
		{http.MethodGet, "notification/", h("list")},
		{http.MethodPost, "notification/", h("create")},
		{http.MethodGet, "notification/{}", h("get")},
		{http.MethodDelete, "notification/{}", h("delete")},
		{http.MethodPost, "notification/{}", h("reset")},
		{http.MethodPost, "notification/{}/test", h("test")},
		{http.MethodGet, "notification/{}/attempts", h("attempts")},
	}
}

// notificationRoutes registers the organization-wide and registry-wide
// notifications (beyond Quay: one receiver can hear a whole organization).
func (a *API) notificationRoutes() {
	org := func(op string) handler {
		return func(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
			c, err := a.orgAdmin(r.Context(), id, r.PathValue("org"))
			if err != nil {
				return err
			}
			return a.notification(w, r, id, op, meta.ScopeOrganization, c.org.Name, r.PathValue("uuid"))
		}
	}
	registry := func(op string) handler {
		return func(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
			if err := requireUser(id); err != nil {
				return err
			}
			if !id.Superuser {
				return forbidden("registry-wide notifications are for superusers")
			}
			return a.notification(w, r, id, op, meta.ScopeRegistry, "", r.PathValue("uuid"))
		}
	}
	for prefix, mk := range map[string]func(string) handler{"/api/v1/organization/{org}/notification/": org, "/api/v1/superuser/notification/": registry} {
		a.handle("GET "+prefix+"{$}", mk("list"))
		a.handle("POST "+prefix+"{$}", mk("create"))
		a.handle("GET "+prefix+"{uuid}", mk("get"))
		a.handle("DELETE "+prefix+"{uuid}", mk("delete"))
		a.handle("POST "+prefix+"{uuid}", mk("reset"))
		a.handle("POST "+prefix+"{uuid}/test", mk("test"))
		a.handle("GET "+prefix+"{uuid}/attempts", mk("attempts"))
	}
}

// notification serves one operation on the notifications of a scope, the
// caller's right to administer it already checked.
func (a *API) notification(w http.ResponseWriter, r *http.Request, id auth.Identity, op, scope, target, uuid string) error {
	ctx := r.Context()
	if a.opts.Notifier == nil {
		return apiError(http.StatusNotImplemented, "not_implemented", "notifications are not enabled on this server")
	}
	switch op {
	case "list":
		ns, err := a.db.Notifications.Notifications(ctx, scope, target)
		if err != nil {
			return err
		}
		views := make([]map[string]any, 0, len(ns))
		for _, n := range ns {
			views = append(views, notify.View(n))
		}
		writeJSON(w, http.StatusOK, map[string]any{"notifications": views})
		return nil
	case "create":
		var in notify.Input
		if err := decode(w, r, &in); err != nil {
			return err
		}
		n, err := a.opts.Notifier.Create(ctx, scope, target, id.Actor(), in)
		var inv *notify.InvalidError
		if errors.As(err, &inv) {
			return badRequest("%s", inv.Msg)
		}
		if errors.Is(err, meta.ErrRepositoryNotFound) {
			// Deleted since the caller's rights were checked.
			return notFound("repository %s not found", target)
		}
		if errors.Is(err, meta.ErrNamespaceNotFound) {
			return notFound("organization %s not found", target)
		}
		if err != nil {
			return err
		}
		a.audit(r, id, "add_repo_notification", repoOf(scope, target), nsOf(scope, target), map[string]string{"event": n.Event, "method": n.Method, "uuid": n.UUID})
		writeJSON(w, http.StatusCreated, notify.View(n))
		return nil
	}
	n, err := a.db.Notifications.NotificationByUUID(ctx, scope, target, uuid)
	if errors.Is(err, meta.ErrNotificationNotFound) {
		return notFound("notification %s not found", uuid)
	}
	if err != nil {
		return err
	}
	switch op {
	case "get":
		writeJSON(w, http.StatusOK, notify.View(n))
	case "delete":
		if err := a.db.Notifications.DeleteNotification(ctx, n.ID); err != nil {
			return err
		}
		a.audit(r, id, "delete_repo_notification", repoOf(scope, target), nsOf(scope, target), map[string]string{"uuid": n.UUID})
		w.WriteHeader(http.StatusNoContent)
	case "reset":
		if err := a.db.Notifications.ResetNotificationFailures(ctx, n.ID); err != nil {
			return err
		}
		a.audit(r, id, "reset_repo_notification", repoOf(scope, target), nsOf(scope, target), map[string]string{"uuid": n.UUID})
		w.WriteHeader(http.StatusNoContent)
	case "test":
		repo := target
		if scope != meta.ScopeRepository {
			repo = nsOf(scope, target) + "/sample"
			if scope == meta.ScopeRegistry {
				repo = "sample/repository"
			}
		}
		if err := a.opts.Notifier.Test(ctx, n, repo); errors.Is(err, meta.ErrTestDeliveryPending) {
			// One test at a time per notification: its outcome is in
			// .../attempts once it has run (within a delivery timeout).
			w.Header().Set("Retry-After", strconv.Itoa(int(events.DeliveryTimeout.Seconds())))
			return apiError(http.StatusTooManyRequests, "too_many_requests",
				"a test delivery of notification %s is already queued or running: see its outcome in GET .../notification/%s/attempts, then test again", n.UUID, n.UUID)
		} else if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, map[string]any{})
	case "attempts":
		return a.attempts(w, r, n)
	}
	return nil
}

// maxAttemptsPage is the most attempts one answer of .../attempts holds.
const maxAttemptsPage = 100

// attempts answers a page of a notification's delivery attempts, newest
// first: ?limit= of them (at most, and by default, 100), before the
// attempt ?next_page= names (the next_page of the previous answer, present
// while older attempts remain).
func (a *API) attempts(w http.ResponseWriter, r *http.Request, n meta.Notification) error {
	q := r.URL.Query()
	limit, err := intParam(q, "limit", maxAttemptsPage, maxAttemptsPage)
	if err != nil {
		return err
	}
	var before int64
	if s := q.Get("next_page"); s != "" {
		if before, err = strconv.ParseInt(s, 10, 64); err != nil || before <= 0 {
			return badRequest("invalid next_page %q", s)
		}
	}
	at, err := a.db.Notifications.AttemptsBefore(r.Context(), n.ID, before, limit+1)
	if err != nil {
		return err
	}
	out := map[string]any{}
	if len(at) > limit {
		at = at[:limit]
		out["next_page"] = strconv.FormatInt(at[limit-1].ID, 10)
	}
	out["attempts"] = at
	writeJSON(w, http.StatusOK, out)
	return nil
}

func repoOf(scope, target string) string {
	if scope == meta.ScopeRepository {
		return target
	}
	return ""
}

func nsOf(scope, target string) string {
	if scope == meta.ScopeOrganization {
		return target
	}
	ns, _ := splitRepo(target)
	return ns
}
