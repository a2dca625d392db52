package authz

import (
	"net/http"
	"slices"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
)

// Open is the authorizer of auth mode "none": no authentication, but the
// repository states still hold: a read-only or mirrored repository takes
// no push or delete over the registry API (a mirror writes through its own
// path, not over HTTP). With no accounts to own it, a push into a
// namespace that does not exist creates it as an organization without
// owners (never a namespace that is neither a user nor an organization).
type Open struct {
	Repositories RepositoryStore
}

// Authorize decides a /v2 request for auth mode "none".
func (o Open) Authorize(r *http.Request, res auth.Scope) (Decision, error) {
	if res.Type != "repository" {
		return allow(auth.Anonymous, meta.Writer{}), nil
	}
	for _, action := range res.Actions {
		if action != auth.ActionPush && action != auth.ActionDelete {
			continue
		}
		ri, err := o.Repositories.Repository(r.Context(), res.Name)
		if err != nil {
			return Decision{}, err
		}
		if !auth.StateAllows(auth.Anonymous, repoOf(ri), action) {
			return deny(StateRefusal(res.Name, ri.State, action), res), nil
		}
	}
	if slices.Contains(res.Actions, auth.ActionPush) {
		return allow(auth.Anonymous, meta.Writer{Create: &meta.RepoCreate{OwnerlessOrg: true}}), nil
	}
	return allow(auth.Anonymous, meta.Writer{}), nil
}
