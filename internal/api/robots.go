package api

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/authz"
	"github.com/berth-dev/berth/internal/meta"
)

// Robot accounts of the caller's own namespace (/user/robots) and of
// organizations (/organization/{org}/robots), as Quay's endpoints. A
// robot's token is shown once, when it is created or regenerated: only
// its hash is stored.
func (a *API) robotRoutes() {
	for _, base := range []string{"/api/v1/user/robots", "/api/v1/organization/{org}/robots"} {
		a.handle("GET "+base, a.listRobots)
		a.handle("GET "+base+"/{short}", a.getRobot)
		a.handle("PUT "+base+"/{short}", a.createRobot)
		a.handle("DELETE "+base+"/{short}", a.deleteRobot)
		a.handle("POST "+base+"/{short}/regenerate", a.regenerateRobot)
	}
}

// robotNamespace is the namespace whose robots the request manages: the
// organization in the path, which the caller must administer, or the
// calling user's own namespace. Robots and access tokens manage none.
func (a *API) robotNamespace(r *http.Request, id auth.Identity) (string, error) {
	if err := requireUser(id); err != nil {
		return "", err
	}
	if org := r.PathValue("org"); org != "" {
		_, err := a.orgAdmin(r.Context(), id, org)
		return org, err
	}
	if id.Kind != auth.KindUser || id.Name == "" {
		return "", forbidden("only a signed-in user manages its robots; %s is a %s", id.Actor(), id.Kind)
	}
	return id.Name, nil
}

// robotView is a robot as the API shows it. Token is set only in the
// answers to create and regenerate.
type robotView struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Created     string `json:"created"`
	Token       string `json:"token,omitempty"`
}

// robotViewOf shows a robot without its token.
func robotViewOf(u meta.User) robotView {
	return robotView{Name: u.Username, Description: u.Description, Created: quayTime(u.CreatedAt)}
}

// writeRobotToken answers with a view that carries a token, which no
// cache may keep.
func writeRobotToken(w http.ResponseWriter, status int, v robotView) {
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, status, v)
}

// robotOf returns robot ns+short, 404 if there is none.
func (a *API) robotOf(r *http.Request, ns, short string) (meta.User, error) {
	name := ns + "+" + short
	u, err := a.db.Users.UserByName(r.Context(), name)
	if errors.Is(err, meta.ErrUserNotFound) || (err == nil && u.Kind != meta.UserKindRobot) {
		return meta.User{}, notFound("robot %s not found", name)
	}
	return u, err
}

func (a *API) listRobots(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	ns, err := a.robotNamespace(r, id)
	if err != nil {
		return err
	}
	robots, err := a.db.Robots.Robots(r.Context(), ns)
	if err != nil {
		return err
	}
	out := make([]robotView, 0, len(robots))
	for _, u := range robots {
		out = append(out, robotViewOf(u))
	}
	writeJSON(w, http.StatusOK, map[string]any{"robots": out})
	return nil
}

func (a *API) getRobot(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	ns, err := a.robotNamespace(r, id)
	if err != nil {
		return err
	}
	u, err := a.robotOf(r, ns, r.PathValue("short"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, robotViewOf(u))
	return nil
}

// maxRobotDescription is Quay's limit on a robot's description.
const maxRobotDescription = 255

// maxUsername is the longest username a login accepts, which a robot's
// full name must fit.
const maxUsername = 255

// decodeOptional decodes a JSON body into v if there is one; an empty
// body leaves v as it is.
func decodeOptional(w http.ResponseWriter, r *http.Request, v any) error {
	br := bufio.NewReader(r.Body)
	if _, err := br.Peek(1); errors.Is(err, io.EOF) {
		return nil
	}
	r.Body = struct {
		io.Reader
		io.Closer
	}{br, r.Body}
	return decode(w, r, v)
}

func (a *API) createRobot(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	ns, err := a.robotNamespace(r, id)
	if err != nil {
		return err
	}
	short := r.PathValue("short")
	if err := checkUsername(short); err != nil {
		return badRequest("invalid robot name: %v", err)
	}
	name := ns + "+" + short
	if len(name) > maxUsername {
		return badRequest("robot name %s is longer than %d characters", name, maxUsername)
	}
	var body struct {
		Description string `json:"description"`
		// UnstructuredMetadata is Quay's free-form object about the
		// robot. Berth accepts it, so that Quay's clients can create
		// robots, but neither stores nor returns it.
		UnstructuredMetadata map[string]any `json:"unstructured_metadata"`
	}
	if err := decodeOptional(w, r, &body); err != nil {
		return err
	}
	if len(body.Description) > maxRobotDescription {
		return badRequest("robot description over %d bytes", maxRobotDescription)
	}
	if err := a.capRobots(r.Context(), ns); err != nil {
		return err
	}
	token, err := auth.NewSecret(authz.SecretPrefix)
	if err != nil {
		return err
	}
	u, err := a.db.Robots.CreateRobot(r.Context(), ns, short, auth.HashSecret(token))
	switch {
	case errors.Is(err, meta.ErrExists):
		return badRequest("robot %s already exists", name)
	case errors.Is(err, meta.ErrNamespaceNotFound):
		return notFound("namespace %q not found", ns)
	case err != nil:
		return err
	}
	if body.Description != "" {
		if err := a.db.Robots.SetUserDescription(r.Context(), name, body.Description); err != nil {
			return err
		}
		u.Description = body.Description
	}
	a.audit(r, id, "robot_create", "", ns, map[string]string{"robot": name})
	v := robotViewOf(u)
	v.Token = token
	writeRobotToken(w, http.StatusCreated, v)
	return nil
}

// maxRobotsPerNamespace caps a namespace's robots: each is listed, with
// what it may do, on the namespace's robot pages.
const maxRobotsPerNamespace = 500

// capRobots refuses a new robot in a namespace that has
// maxRobotsPerNamespace. It counts before CreateRobot, not in its
// transaction: the RobotStore interface offers no capped creation.
// Concurrent creations may so pass the cap by as many as run at once, a
// bound still (each is an administrator's request).
func (a *API) capRobots(ctx context.Context, ns string) error {
	robots, err := a.db.Robots.Robots(ctx, ns)
	if err != nil {
		return err
	}
	if len(robots) >= maxRobotsPerNamespace {
		return badRequest("namespace %s has %d robots, the most it may hold (%d robots): delete one first", ns, len(robots), maxRobotsPerNamespace)
	}
	return nil
}

func (a *API) deleteRobot(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	ns, err := a.robotNamespace(r, id)
	if err != nil {
		return err
	}
	name := ns + "+" + r.PathValue("short")
	err = a.db.Robots.DeleteRobot(r.Context(), name)
	switch {
	case errors.Is(err, meta.ErrUserNotFound):
		return notFound("robot %s not found", name)
	case errors.Is(err, meta.ErrRobotInUse):
		return badRequest("robot %s cannot be deleted: %v", name, err)
	case err != nil:
		return err
	}
	a.audit(r, id, "robot_delete", "", ns, map[string]string{"robot": name})
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *API) regenerateRobot(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	ns, err := a.robotNamespace(r, id)
	if err != nil {
		return err
	}
	u, err := a.robotOf(r, ns, r.PathValue("short"))
	if err != nil {
		return err
	}
	token, err := auth.NewSecret(authz.SecretPrefix)
	if err != nil {
		return err
	}
	if err := a.db.Robots.SetUserSecret(r.Context(), u.Username, auth.HashSecret(token)); errors.Is(err, meta.ErrUserNotFound) {
		return notFound("robot %s not found", u.Username)
	} else if err != nil {
		return err
	}
	a.audit(r, id, "robot_regenerate", "", ns, map[string]string{"robot": u.Username})
	v := robotViewOf(u)
	v.Token = token
	writeRobotToken(w, http.StatusOK, v)
	return nil
}
