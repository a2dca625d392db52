package auth

import (
	"fmt"
	"slices"
)

// Kind is the kind of an identity.
type Kind string

// Identity kinds.
const (
	KindAnonymous Kind = "anonymous"
	KindUser      Kind = "user"
	KindRobot     Kind = "robot"
	KindToken     Kind = "token"
)

// Identity is who is asking.
type Identity struct {
	Kind      Kind
	ID        int64
	Name      string // username, "namespace+robot", or the token's name
	Superuser bool
	// Scopes of an access token; empty for other kinds.
	Scopes []TokenScope
	// SecretFingerprint, for a user or robot authenticated in this
	// request, is the fingerprint of the secret hash its account had
	// then (meta.SecretFingerprint): a registry token issued to it
	// carries it, and stops when the account's secret changes.
	SecretFingerprint string
	// ViaToken says the identity is a user's, authenticated with an API
	// token that acts as its user (the first user's +initialize token),
	// not with the user's password.
	ViaToken bool
}

// Anonymous is the identity of a request without credentials.
var Anonymous = Identity{Kind: KindAnonymous}

// Actor names the identity for events and the audit log.
func (id Identity) Actor() string {
	switch id.Kind {
	case KindAnonymous:
		return ""
	case KindToken:
		return "token:" + id.Name
	default:
		return id.Name
	}
}

// Role is a repository role; roles are ordered.
type Role int

// Repository roles.
const (
	RoleNone Role = iota
	RoleRead
	RoleWrite
	RoleAdmin
)

func (r Role) String() string {
	switch r {
	case RoleRead:
		return "read"
	case RoleWrite:
		return "write"
	case RoleAdmin:
		return "admin"
	}
	return "none"
}

// ParseRole parses "read", "write" or "admin".
func ParseRole(s string) (Role, error) {
	switch s {
	case "read":
		return RoleRead, nil
	case "write":
		return RoleWrite, nil
	case "admin":
		return RoleAdmin, nil
	}
	return RoleNone, fmt.Errorf("unknown role %q (read, write, admin)", s)
}

// Repository states.
const (
	StateNormal   = "NORMAL"
	StateReadOnly = "READ_ONLY"
	StateMirror   = "MIRROR"
)

// Repo is what the decision needs to know about a repository.
type Repo struct {
	Name        string
	Exists      bool
	Public      bool
	State       string
	MirrorRobot string // the robot a mirror writes as
	// CheckerIDs are the users and robots the repository's gate lets
	// check its candidates (ActionChecks), by account id: an account
	// created later under a checker's name is not one.
	CheckerIDs []int64
}

// Standing is the identity's relation to the repository, as the metadata
// store computes it: the best role from a direct permission, a team's
// permission, owning the namespace or administering the organization, and
// whether it may create repositories in the namespace.
type Standing struct {
	Role      Role
	CanCreate bool
}

// API actions on a repository (the registry's are ActionPull, ActionPush
// and ActionDelete).
const (
	ActionRead  = "read"  // repository metadata through the API
	ActionWrite = "write" // tag changes through the API
	ActionAdmin = "admin" // permissions, visibility, state, notifications, deletion
	// ActionChecks sees a gate's candidates (held content) and posts
	// check results: the gate's checkers, repository admins, and access
	// tokens with the "checks" action.
	ActionChecks = "checks"
)

// Allowed decides whether the identity may perform the action on the
// repository. It is the one place this question is answered, for the /v2
// API, the token endpoint and the /api/v1 API alike.
func Allowed(id Identity, repo Repo, st Standing, action string) bool {
	if !StateAllows(id, repo, action) {
		return false
	}
	readOnly := action == ActionPull || action == ActionRead
	if readOnly && repo.Exists && repo.Public {
		return true
	}
	if id.Kind == KindAnonymous {
		return false
	}
	if id.Superuser {
		return true
	}
	if id.Kind == KindToken {
		return tokenAllows(id.Scopes, repo.Name, action)
	}
	switch action {
	case ActionPull, ActionRead:
		// A creator may look into a repository it is about to create:
		// clients check for existing content before they push.
		return st.Role >= RoleRead || (!repo.Exists && st.CanCreate)
	case ActionPush:
		return st.Role >= RoleWrite || (!repo.Exists && st.CanCreate)
	case ActionDelete, ActionWrite:
		return st.Role >= RoleWrite
	case ActionAdmin:
		return st.Role >= RoleAdmin
	case ActionChecks:
		return st.Role >= RoleAdmin || (st.Role >= RoleRead || repo.Public) && (id.Kind == KindUser || id.Kind == KindRobot) && slices.Contains(repo.CheckerIDs, id.ID)
	}
	return false
}

// StateAllows applies the repository-state rules alone: a read-only
// repository takes no writes from anyone, a mirror only from its robot.
func StateAllows(id Identity, repo Repo, action string) bool {
	writes := action == ActionPush || action == ActionDelete || action == ActionWrite
	if !writes || !repo.Exists {
		return true
	}
	switch repo.State {
	case StateReadOnly:
		return false
	case StateMirror:
		return id.Kind == KindRobot && id.Name == repo.MirrorRobot
	}
	return true
}

func tokenAllows(scopes []TokenScope, repo, action string) bool {
	var need []string
	switch action {
	case ActionPull:
		need = []string{TokenContentRead}
	case ActionPush:
		need = []string{TokenContentWrite}
	case ActionDelete:
		need = []string{TokenContentDelete}
	case ActionRead:
		need = []string{TokenMetadataRead, TokenContentRead}
	case ActionWrite:
		need = []string{TokenMetadataWrite}
	case ActionChecks:
		need = []string{TokenChecks}
	default:
		return false // tokens never administer
	}
	for _, s := range scopes {
		if !s.Matches(repo) {
			continue
		}
		for _, a := range s.Actions {
			for _, n := range need {
				if a == n {
					return true
				}
			}
		}
	}
	return false
}
