package authz

import (
	"net/http"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/registry"
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

// Authorize implements registry.Authorizer.
func (o Open) Authorize(_ http.ResponseWriter, r *http.Request, res registry.Resource) (meta.Writer, error) {
	if res.Type != "repository" {
		return meta.Writer{}, nil
	}
	for _, action := range res.Actions {
		if action != registry.ActionPush && action != registry.ActionDelete {
			continue
		}
		ri, err := o.Repositories.Repository(r.Context(), res.Name)
		if err != nil {
			return meta.Writer{}, err
		}
		if !auth.StateAllows(auth.Anonymous, repoOf(ri), action) {
			return meta.Writer{}, &registry.Error{Status: http.StatusForbidden, Code: registry.CodeDenied,
				Message: StateRefusal(res.Name, ri.State, action), Detail: detail(res)}
		}
	}
	if contains(res.Actions, registry.ActionPush) {
		return meta.Writer{Create: &meta.RepoCreate{OwnerlessOrg: true}}, nil
	}
	return meta.Writer{}, nil
}
