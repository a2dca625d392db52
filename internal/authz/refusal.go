package authz

import (
	"context"
	"fmt"
	"strings"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
)

// Every refusal of a known identity says why, in the spec's error body
// (clients print its message): a namespace that does not exist, a mirror,
// a read-only repository, or a missing permission. Anonymous callers are
// challenged instead: they must log in first.

// refuse is the decision for a known identity that may not perform action
// on the resource's repository.
func (s *subject) refuse(ctx context.Context, res auth.Scope, action string) (Decision, error) {
	ri, err := s.repository(ctx)
	if err != nil {
		return Decision{}, err
	}
	if !ri.Exists && action == auth.ActionPush && !strings.Contains(s.name, "/") {
		return deny(fmt.Sprintf("a repository name needs a namespace: push %s/%s (your user's namespace, or an organization's)", nsHint(s.id), s.name), res), nil
	}
	if !ri.Exists {
		missing, err := s.namespaceMissing(ctx)
		if err != nil {
			return Decision{}, err
		}
		if missing {
			return namespaceRefusal(s.id, s.name, action, s.a.opts.CreateNamespaceOnPush), nil
		}
	}
	if ri.Exists && isWrite(action) && !auth.StateAllows(s.id, repoOf(ri), action) {
		// Only someone who may read the repository learns its state.
		if canRead, err := s.decide(ctx, auth.ActionPull); err != nil {
			return Decision{}, err
		} else if canRead {
			return deny(StateRefusal(s.name, ri.State, action), res), nil
		}
	}
	return deny(fmt.Sprintf("%s may not %s %s", s.id.Actor(), action, s.name), res), nil
}

// namespaceRefusal answers an action on a repository whose namespace does
// not exist: a read finds nothing (NameUnknown: nothing is there to hide),
// a push is Denied with how to make it work.
func namespaceRefusal(id auth.Identity, repo, action string, createOnPush bool) Decision {
	ns, _, _ := strings.Cut(repo, "/")
	if !isWrite(action) {
		return Decision{Verdict: NameUnknown, Reason: fmt.Sprintf("repository %s not found: namespace %s does not exist", repo, ns)}
	}
	msg := (&meta.NamespaceMissingError{Namespace: ns}).Error()
	if createOnPush {
		// The setting is on, but this identity cannot own an organization.
		msg = fmt.Sprintf("namespace %s does not exist, and a %s cannot create one by pushing: create the organization first", ns, id.Kind)
	}
	return deny(msg, auth.Scope{})
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

// nsHint is the namespace a refusal suggests: the caller's own, if it has
// one.
func nsHint(id auth.Identity) string {
	if id.Kind == auth.KindUser && id.Name != "" {
		return id.Name
	}
	return "<namespace>"
}
