package api

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
)

// permissionSubject resolves the user, robot or team a permission path
// names: its user id or team id.
func (a *API) permissionSubject(ctx context.Context, kind, repo, name string) (userID, teamID int64, err error) {
	ns, _ := splitRepo(repo)
	if kind == "team" {
		t, err := a.db.Teams.TeamByName(ctx, ns, name)
		if errors.Is(err, meta.ErrTeamNotFound) {
			return 0, 0, notFound("no team %q in %s", name, ns)
		}
		return 0, t.ID, err
	}
	u, err := a.db.Users.UserByName(ctx, name)
	if errors.Is(err, meta.ErrUserNotFound) {
		return 0, 0, notFound("no user or robot %q", name)
	}
	if err != nil {
		return 0, 0, err
	}
	if u.Kind == meta.UserKindRobot && !strings.HasPrefix(name, ns+"+") {
		return 0, 0, badRequest("robot %s belongs to another namespace than %s", name, ns)
	}
	return u.ID, 0, nil
}

// permissions serves .../permissions/{kind}/ (GET: all of them) and
// .../permissions/{kind}/{name} (GET, PUT {"role"}, DELETE), for
// repository admins.
func (a *API) permissions(kind string) repoHandler {
	return func(w http.ResponseWriter, r *http.Request, id auth.Identity, repo string, args []string) error {
		ctx := r.Context()
		ri, err := a.repoInfo(ctx, id, repo, auth.ActionAdmin)
		if err != nil {
			return err
		}
		var name string
		if len(args) > 0 {
			name = args[0]
		}
		ns, _ := splitRepo(repo)
		if r.Method == http.MethodPut || r.Method == http.MethodDelete {
			var req struct {
				Role string `json:"role"`
			}
			if r.Method == http.MethodPut {
				if err := decode(w, r, &req); err != nil {
					return err
				}
				if _, err := auth.ParseRole(req.Role); err != nil {
					return badRequest("%v", err)
				}
			}
			userID, teamID, err := a.permissionSubject(ctx, kind, repo, name)
			if err != nil {
				return err
			}
			if r.Method == http.MethodDelete {
				if err := a.db.Permissions.DeletePermission(ctx, ri.ID, userID, teamID); errors.Is(err, meta.ErrNotFound) {
					return notFound("%s %q has no permission on %s", kind, name, repo)
				} else if err != nil {
					return err
				}
				a.audit(r, id, "permission_delete", repo, "", map[string]string{"repo": repo, kind: name})
				w.WriteHeader(http.StatusNoContent)
				return nil
			}
			// The repository or the subject may have been deleted since:
			// answered as if the request came after.
			switch err := a.db.Permissions.SetPermission(ctx, ri.ID, userID, teamID, req.Role); {
			case errors.Is(err, meta.ErrRepositoryNotFound):
				return notFound("repository %s not found", repo)
			case errors.Is(err, meta.ErrTeamNotFound):
				return notFound("no team %q in %s", name, ns)
			case errors.Is(err, meta.ErrUserNotFound):
				return notFound("no user or robot %q", name)
			case err != nil:
				return err
			}
			a.audit(r, id, "permission_change", repo, "", map[string]string{"repo": repo, kind: name, "role": req.Role})
		}
		perms, err := a.db.Permissions.RepoPermissions(ctx, ri.ID, ns, kind, name)
		if err != nil {
			return err
		}
		views := map[string]permView{}
		for _, p := range perms {
			v := permView{Role: p.Role, Name: p.Name}
			if kind == "user" {
				v.IsRobot, v.IsOrgMember = &p.IsRobot, &p.IsOrgMember
			}
			views[p.Name] = v
		}
		if name == "" {
			writeJSON(w, http.StatusOK, map[string]any{"permissions": views})
		} else if v, ok := views[name]; ok {
			writeJSON(w, http.StatusOK, v)
		} else {
			return notFound("%s %q has no permission on %s", kind, name, repo)
		}
		return nil
	}
}
