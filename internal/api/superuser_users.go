package api

// Quay's superuser user management: list, read, create, change and
// delete users (GET, POST, PUT and DELETE /api/v1/superuser/users/...).

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
)

type newUserRequest struct {
	Username string `json:"username"`
	Email    string `json:"email"`
}

type newUserResponse struct {
	Username string `json:"username"`
	Email    string `json:"email"`
	Password string `json:"password"`
}

// superuserCreateUser creates a user with a generated password, shown once.
func (a *API) superuserCreateUser(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	if err := needSuperuser(id); err != nil {
		return err
	}
	var req newUserRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if err := checkUsername(req.Username); err != nil {
		return badRequest("invalid username: %v", err)
	}
	if err := checkEmail(req.Email); err != nil {
		return badRequest("%v", err)
	}
	password, err := auth.NewSecret("")
	if err != nil {
		return err
	}
	hash, err := auth.HashPassword(password)
	if err != nil {
		return err
	}
	u, err := a.db.Accounts.CreateUser(r.Context(), meta.User{Username: req.Username, Email: req.Email, SecretHash: hash})
	if errors.Is(err, meta.ErrExists) {
		return badRequest("username %q is already taken", req.Username)
	}
	if err != nil {
		return err
	}
	a.audit(r, id, "user_create", "", u.Username, map[string]string{"username": u.Username})
	writeJSON(w, http.StatusCreated, newUserResponse{Username: u.Username, Email: u.Email, Password: password})
	return nil
}

// installUserView is Quay's superuser view of a user.
type installUserView struct {
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	Username  string `json:"username"`
	Email     string `json:"email"`
	Verified  bool   `json:"verified"`
	SuperUser bool   `json:"super_user"`
	Enabled   bool   `json:"enabled"`
	Created   string `json:"created"`
}

func installUserViewOf(u meta.User) installUserView {
	return installUserView{Kind: "user", Name: u.Username, Username: u.Username, Email: u.Email, Verified: true,
		SuperUser: u.Superuser, Enabled: u.Enabled, Created: quayTime(u.CreatedAt)}
}

// superuserListUsers lists the users (not robots) by name, as Quay's
// superuser panel does: all of them, or with disabled=false only those
// who may sign in. limit pages through them; next_page, when present,
// continues after the page.
func (a *API) superuserListUsers(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	if err := needSuperuser(id); err != nil {
		return err
	}
	q := r.URL.Query()
	withDisabled, err := boolParam(q, "disabled", true)
	if err != nil {
		return err
	}
	limit, err := intParam(q, "limit", 0, 1000)
	if err != nil {
		return err
	}
	uq := meta.UserQuery{After: q.Get("next_page"), EnabledOnly: !withDisabled}
	if limit > 0 {
		uq.Limit = limit + 1
	}
	users, err := a.db.Accounts.ListUsers(r.Context(), uq)
	if err != nil {
		return err
	}
	out := map[string]any{}
	if limit > 0 && len(users) > limit {
		users = users[:limit]
		out["next_page"] = users[limit-1].Username
	}
	views := []installUserView{}
	for _, u := range users {
		views = append(views, installUserViewOf(u))
	}
	out["users"] = views
	writeJSON(w, http.StatusOK, out)
	return nil
}

// installUser looks up a user (not a robot, not an organization) for the
// superuser endpoints.
func (a *API) installUser(ctx context.Context, name string) (meta.User, error) {
	u, err := a.db.Users.UserByName(ctx, name)
	if errors.Is(err, meta.ErrUserNotFound) || (err == nil && u.Kind != meta.UserKindUser) {
		return meta.User{}, notFound("no user %q", name)
	}
	return u, err
}

// superuserGetUser describes a user to a superuser.
func (a *API) superuserGetUser(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	if err := needSuperuser(id); err != nil {
		return err
	}
	u, err := a.installUser(r.Context(), r.PathValue("username"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, installUserViewOf(u))
	return nil
}

// superuserUpdateUser sets a user's password, e-mail address or whether
// it may sign in (Quay's changeInstallUser). As in Quay, superusers are
// changed with `berth admin`, not here, so no superuser can lock out
// another, or itself. Disabling a user or setting its password ends its
// web UI sessions; a disabled user's credentials and tokens are refused
// at once (each request checks).
func (a *API) superuserUpdateUser(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	if err := needSuperuser(id); err != nil {
		return err
	}
	var req struct {
		Password *string `json:"password"`
		Email    *string `json:"email"`
		Enabled  *bool   `json:"enabled"`
	}
	if err := decode(w, r, &req); err != nil {
		return err
	}
	ctx := r.Context()
	u, err := a.installUser(ctx, r.PathValue("username"))
	if err != nil {
		return err
	}
	if u.Superuser {
		return badRequest("Cannot update a superuser: use berth admin user")
	}
	var change meta.UserChange
	changed := map[string]any{"username": u.Username}
	if req.Password != nil {
		if !auth.PasswordLengthOK(*req.Password) {
			return badRequest("invalid password: it must be %d to %d characters long", auth.MinPasswordLength, auth.MaxPasswordLength)
		}
		hash, err := auth.HashPassword(*req.Password)
		if err != nil {
			return err
		}
		change.SecretHash, changed["password"] = &hash, true
	}
	if req.Email != nil {
		if err := checkEmail(*req.Email); err != nil {
			return badRequest("%v", err)
		}
		change.Email, changed["email"] = req.Email, *req.Email
	}
	if req.Enabled != nil {
		change.Enabled, changed["enabled"] = req.Enabled, *req.Enabled
	}
	if change == (meta.UserChange{}) {
		return badRequest("nothing to change: give password, email or enabled")
	}
	u, err = a.db.Accounts.UpdateUser(ctx, u.Username, change)
	if errors.Is(err, meta.ErrUserNotFound) {
		return notFound("no user %q", r.PathValue("username"))
	}
	if err != nil {
		return err
	}
	a.audit(r, id, "user_change", "", u.Username, changed)
	writeJSON(w, http.StatusOK, installUserViewOf(u))
	return nil
}

// superuserDeleteUser deletes a user with its namespace, robots and
// repositories.
func (a *API) superuserDeleteUser(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	if err := needSuperuser(id); err != nil {
		return err
	}
	ctx := r.Context()
	name := r.PathValue("username")
	u, err := a.installUser(ctx, name)
	if err != nil {
		return err
	}
	if u.Superuser {
		return badRequest("Cannot delete other superusers")
	}
	// An organization must keep an owner: refused before anything goes.
	if sole, err := a.db.Orgs.SoleOwnerOf(ctx, u.ID); err != nil {
		return err
	} else if len(sole) > 0 {
		return soleOwnerRefusal(name, sole)
	}
	// Repositories live in the namespace by name only: delete them first,
	// so that whoever takes the name next does not inherit them. Again
	// after, for a push that raced the first pass.
	if err := a.deleteNamespaceRepositories(ctx, name, id.Actor()); err != nil {
		return err
	}
	err = a.db.Accounts.DeleteUser(ctx, name)
	if errors.Is(err, meta.ErrLastOwner) {
		// Left an organization's only owner meanwhile (another owner
		// deleted or removed at the same moment): its repositories are
		// gone (it was being deleted), the account stays.
		sole, _ := a.db.Orgs.SoleOwnerOf(ctx, u.ID)
		return soleOwnerRefusal(name, sole)
	}
	if err != nil && !errors.Is(err, meta.ErrUserNotFound) {
		return err
	}
	if err := a.deleteNamespaceRepositories(ctx, name, id.Actor()); err != nil {
		return err
	}
	a.audit(r, id, "user_delete", "", name, map[string]string{"username": name})
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *API) deleteNamespaceRepositories(ctx context.Context, ns, actor string) error {
	for {
		repos, err := a.db.Repositories.RepositoriesPage(ctx, meta.RepoQuery{Namespace: ns, Limit: 100})
		if err != nil || len(repos) == 0 {
			return err
		}
		for _, repo := range repos {
			if err := a.db.Repositories.DeleteRepository(ctx, repo.Name, actor); err != nil && !errors.Is(err, meta.ErrRepositoryNotFound) {
				return err
			}
		}
	}
}

// soleOwnerRefusal refuses to delete the only owner of organizations.
func soleOwnerRefusal(name string, orgs []string) error {
	if len(orgs) == 0 {
		return badRequest("%s was the only owner of an organization; add another user to its %s team first", name, meta.OwnersTeam)
	}
	return badRequest("%s is the only owner of organization %s; add another user to its %s team first", name, strings.Join(orgs, ", "), meta.OwnersTeam)
}
