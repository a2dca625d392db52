package authz

import (
	"context"
	"errors"
	"strings"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
)

// subject is what one request learns of its caller and of the repository
// it acts on, each looked up at most once however many actions, refusal
// reasons and creation plans the request needs: the repository, its
// namespace, the caller's account and the caller's standing on the
// repository. It lives for one request, in one goroutine.
type subject struct {
	a    *Authorizer
	id   auth.Identity
	name string // the repository

	repo      *meta.RepoInfo
	nsMissing *bool
	// account is the caller's user or robot; looked tells whether it was
	// asked for, found whether it exists.
	account       meta.User
	looked, found bool
	standing      *auth.Standing
	// creator, for a scoped access token's registry token, is the user
	// whose rights bound the token's scopes in a decision made now: id's
	// scopes are bounded so at the first (and nil then).
	creator *meta.User
}

func (a *Authorizer) subject(id auth.Identity, repo string) *subject {
	s := &subject{a: a, id: id, name: repo}
	if id.ID != 0 && (id.Kind == auth.KindUser || id.Kind == auth.KindRobot) {
		// Authenticated in this request against its account (a password,
		// a robot's token, a user's API token): the account is known,
		// enabled, and needs no second look.
		kind := meta.UserKindUser
		if id.Kind == auth.KindRobot {
			kind = meta.UserKindRobot
		}
		s.account = meta.User{ID: id.ID, Username: id.Name, Kind: kind, Superuser: id.Superuser, Enabled: true}
		s.looked, s.found = true, true
	}
	return s
}

// repository is the repository's row (Exists false if there is none).
func (s *subject) repository(ctx context.Context) (meta.RepoInfo, error) {
	if s.repo == nil {
		ri, err := s.a.store.Repositories.Repository(ctx, s.name)
		if err != nil {
			return meta.RepoInfo{}, err
		}
		s.repo = &ri
	}
	return *s.repo, nil
}

// namespaceMissing reports whether the repository's namespace (its first
// path component) is neither a user nor an organization.
func (s *subject) namespaceMissing(ctx context.Context) (bool, error) {
	if s.nsMissing == nil {
		ns, _, _ := strings.Cut(s.name, "/")
		_, err := s.a.store.Users.NamespaceByName(ctx, ns)
		missing := errors.Is(err, meta.ErrNamespaceNotFound)
		if err != nil && !missing {
			return false, err
		}
		s.nsMissing = &missing
	}
	return *s.nsMissing, nil
}

// user is the caller's account by name (a registry token carries only the
// name), and false if it no longer exists.
func (s *subject) user(ctx context.Context) (meta.User, bool, error) {
	if !s.looked {
		u, err := s.a.store.Users.UserByName(ctx, s.id.Name)
		if err != nil && !errors.Is(err, meta.ErrUserNotFound) {
			return meta.User{}, false, err
		}
		s.account, s.looked, s.found = u, true, err == nil
	}
	return s.account, s.found, nil
}

// decide answers whether the caller may perform action on the repository
// (auth.Allowed with what the store knows). A push that would create a
// repository also needs its namespace: one that exists, or one the push
// may create (see createsNamespace); superusers included, as in Quay.
func (s *subject) decide(ctx context.Context, action string) (bool, error) {
	if s.creator != nil {
		// Decided on the scopes as they are now, as for the token's
		// secret: what its creator may no longer grant, it grants not.
		scopes, err := s.a.creatorScopes(ctx, *s.creator, s.id.Scopes)
		if err != nil {
			return false, err
		}
		s.id.Scopes, s.creator = scopes, nil
	}
	ri, err := s.repository(ctx)
	if err != nil {
		return false, err
	}
	st, err := s.standingOn(ctx)
	if err != nil {
		return false, err
	}
	if !auth.Allowed(s.id, repoOf(ri), st, action) {
		return false, nil
	}
	if action != auth.ActionPush || ri.Exists {
		return true, nil
	}
	if !strings.Contains(s.name, "/") {
		// A name of one component would be a repository named like its
		// namespace, which every namespace query (a user's or an
		// organization's deletion, its members' permissions) leaves out:
		// it would outlive its namespace, and whoever made an
		// organization of that name later would own it. The API refuses
		// such names too.
		return false, nil
	}
	missing, err := s.namespaceMissing(ctx)
	if err != nil || !missing {
		return err == nil, err
	}
	return s.a.createsNamespace(s.id), nil
}

// standingOn is the caller's standing on the repository: none for
// anonymous callers and access tokens, or a user or robot deleted since
// its registry token was issued.
func (s *subject) standingOn(ctx context.Context) (auth.Standing, error) {
	if s.standing != nil {
		return *s.standing, nil
	}
	if s.id.Kind != auth.KindUser && s.id.Kind != auth.KindRobot {
		return auth.Standing{}, nil
	}
	u, found, err := s.user(ctx)
	if err != nil || !found {
		return auth.Standing{}, err
	}
	ri, err := s.repository(ctx)
	if err != nil {
		return auth.Standing{}, err
	}
	st, err := s.a.store.Access.StandingOf(ctx, u, s.name)
	if err != nil {
		return auth.Standing{}, err
	}
	role, _ := auth.ParseRole(st.Role)
	out := auth.Standing{Role: role, CanCreate: st.CanCreate}
	if !ri.Exists && !out.CanCreate && s.a.createsNamespace(s.id) {
		missing, err := s.namespaceMissing(ctx)
		if err != nil {
			return auth.Standing{}, err
		}
		out.CanCreate = missing // the push will create the organization
		if !missing {
			// The namespace exists, though the standing read above found
			// none in it: a concurrent push (a client uploads a new
			// image's blobs at once) created it in between. Read the
			// standing again, which now sees what that push made.
			if st, err = s.a.store.Access.StandingOf(ctx, u, s.name); err != nil {
				return auth.Standing{}, err
			}
			role, _ = auth.ParseRole(st.Role)
			out = auth.Standing{Role: role, CanCreate: st.CanCreate}
		}
	}
	s.standing = &out
	return out, nil
}

// plan decides, on a push to a repository that does not exist yet, how
// the push creates it: the configured visibility, the organization
// (CREATE_NAMESPACE_ON_PUSH) and the creator's admin permission. Nothing
// is created here: the push applies the plan in its own transaction, so a
// refused or aborted push leaves nothing behind. A repository that exists
// needs no plan (nil).
func (s *subject) plan(ctx context.Context) (*meta.RepoCreate, error) {
	ri, err := s.repository(ctx)
	if err != nil || ri.Exists {
		return nil, err
	}
	plan := &meta.RepoCreate{Visibility: "public"}
	// An access token never administers what it creates, so it never
	// chooses a public repository either (as POST /api/v1/repository).
	if s.a.opts.CreatePrivateRepoOnPush || s.id.Kind == auth.KindToken {
		plan.Visibility = "private"
	}
	if s.id.Kind != auth.KindUser && s.id.Kind != auth.KindRobot {
		return plan, nil
	}
	u, found, err := s.user(ctx)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, meta.ErrUserNotFound
	}
	// Whoever creates a repository administers it (a creator team member
	// has no role on the organization's other repositories).
	plan.AdminUserID = u.ID
	if s.a.createsNamespace(s.id) {
		// Applied only if the namespace is still missing when the push
		// commits; otherwise the store refuses the push.
		plan.OrgOwnerID = u.ID
	}
	return plan, nil
}

// createsNamespace is the rule for a push into a namespace that does not
// exist: with CREATE_NAMESPACE_ON_PUSH, a user (superuser or not) creates
// it as an organization that the user owns; robots and access tokens,
// which cannot own one, never do; without the setting nobody does, and the
// push is refused with a reason (see refuse).
func (a *Authorizer) createsNamespace(id auth.Identity) bool {
	return a.opts.CreateNamespaceOnPush && id.Kind == auth.KindUser && id.Name != ""
}

func repoOf(ri meta.RepoInfo) auth.Repo {
	return auth.Repo{Name: ri.Name, Exists: ri.Exists, Public: ri.Visibility == "public", State: ri.State, MirrorRobot: ri.MirrorRobot,
		CheckerIDs: ri.CheckerIDs}
}
