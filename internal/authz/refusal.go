package authz

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/registry"
)

// Every refusal of a known identity says why, in the spec's error body
// (clients print its message): a namespace that does not exist, a mirror,
// a read-only repository, or a missing permission. Anonymous callers are
// challenged instead: they must log in first.

// refuse is the answer to a known identity that may not perform action on
// the resource's repository.
func (a *Authorizer) refuse(ctx context.Context, id auth.Identity, res registry.Resource, action string) (*registry.Error, error) {
	repo := res.Name
	ri, err := a.store.Repositories.Repository(ctx, repo)
	if err != nil {
		return nil, err
	}
	if !ri.Exists {
		missing, err := a.namespaceMissing(ctx, repo)
		if err != nil {
			return nil, err
		}
		if missing {
			return namespaceRefusal(id, repo, action, a.opts.CreateNamespaceOnPush), nil
		}
	}
	if ri.Exists && isWrite(action) && !auth.StateAllows(id, repoOf(ri), action) {
		// Only someone who may read the repository learns its state.
		if canRead, err := a.Decide(ctx, id, repo, auth.ActionPull); err != nil {
			return nil, err
		} else if canRead {
			return &registry.Error{Status: http.StatusForbidden, Code: registry.CodeDenied,
				Message: StateRefusal(repo, ri.State, action), Detail: detail(res)}, nil
		}
	}
	return &registry.Error{Status: http.StatusForbidden, Code: registry.CodeDenied,
		Message: fmt.Sprintf("%s may not %s %s", id.Actor(), action, repo), Detail: detail(res)}, nil
}

// namespaceRefusal answers an action on a repository whose namespace does
// not exist: a read finds nothing (404: nothing is there to hide), a push
// is DENIED and says how to make it work.
func namespaceRefusal(id auth.Identity, repo, action string, createOnPush bool) *registry.Error {
	ns, _, _ := strings.Cut(repo, "/")
	if !isWrite(action) {
		return &registry.Error{Status: http.StatusNotFound, Code: registry.CodeNameUnknown,
			Message: fmt.Sprintf("repository %s not found: namespace %s does not exist", repo, ns)}
	}
	msg := (&meta.NamespaceMissingError{Namespace: ns}).Error()
	if createOnPush {
		// The setting is on, but this identity cannot own an organization.
		msg = fmt.Sprintf("namespace %s does not exist, and a %s cannot create one by pushing: create the organization first", ns, id.Kind)
	}
	return &registry.Error{Status: http.StatusForbidden, Code: registry.CodeDenied, Message: msg}
}

// StateRefusal says why a repository's state refuses a write: a mirror
// takes writes from its mirror robot only, a read-only repository from
// nobody.
func StateRefusal(repo, state, action string) string {
	what := map[string]string{auth.ActionPush: "pushes", auth.ActionDelete: "deletes"}[action]
	if what == "" {
		what = "changes"
	}
	switch state {
	case auth.StateMirror:
		return fmt.Sprintf("%s is a mirror (repository state %s): it takes no %s; only its mirror robot writes to it", repo, state, what)
	case auth.StateReadOnly:
		return fmt.Sprintf("%s is read-only (repository state %s): it takes no %s", repo, state, what)
	}
	return fmt.Sprintf("%s is in state %s: it takes no %s", repo, state, what)
}

func isWrite(action string) bool {
	return action == auth.ActionPush || action == auth.ActionDelete || action == auth.ActionWrite
}

// current is the identity behind a registry token as the store knows it
// now (superuser flag, access-token scopes), and false if it no longer
// exists or is disabled.
func (a *Authorizer) current(ctx context.Context, id auth.Identity) (auth.Identity, bool, error) {
	switch id.Kind {
	case auth.KindUser, auth.KindRobot:
		u, err := a.store.Users.UserByName(ctx, id.Name)
		if errors.Is(err, meta.ErrUserNotFound) {
			return id, false, nil
		}
		if err != nil {
			return id, false, err
		}
		return auth.Identity{Kind: id.Kind, ID: u.ID, Name: u.Username, Superuser: u.Superuser}, u.Enabled, nil
	case auth.KindToken:
		t, err := a.store.Access.AccessTokenByName(ctx, id.Name)
		if errors.Is(err, meta.ErrTokenNotFound) {
			return id, false, nil
		}
		if err != nil {
			return id, false, err
		}
		cur, err := a.tokenIdentity(ctx, t)
		if errors.Is(err, ErrDisabled) {
			return id, false, nil
		}
		return cur, err == nil, err
	}
	return id, false, nil
}
