package auth

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/berth-dev/berth/internal/oci"
)

// Registry actions of Docker's token scopes.
const (
	ActionPull   = "pull"
	ActionPush   = "push"
	ActionDelete = "delete"
	ActionAll    = "*"
)

// Scope is one Docker token scope: "repository:org/app:pull,push" or
// "registry:catalog:*".
type Scope struct {
	Type    string
	Name    string
	Actions []string
}

func (s Scope) String() string {
	return s.Type + ":" + s.Name + ":" + strings.Join(s.Actions, ",")
}

// ErrInvalidScope is wrapped by scope parse errors.
var ErrInvalidScope = errors.New("invalid scope")

// ParseScope parses a Docker token scope. The resource type may carry a
// class ("repository(plugin)"); names are validated by the spec's grammar,
// so a scope can never smuggle a separator or a path.
func ParseScope(s string) (Scope, error) {
	if len(s) > 512 {
		return Scope{}, fmt.Errorf("%w: too long", ErrInvalidScope)
	}
	first := strings.Index(s, ":")
	last := strings.LastIndex(s, ":")
	if first < 0 || first == last {
		return Scope{}, fmt.Errorf("%w: %q: want type:name:actions", ErrInvalidScope, s)
	}
	typ, name, actions := s[:first], s[first+1:last], s[last+1:]
	if i := strings.Index(typ, "("); i >= 0 && strings.HasSuffix(typ, ")") {
		typ = typ[:i]
	}
	sc := Scope{Type: typ, Name: name}
	switch typ {
	case "repository":
		if err := oci.ValidateName(name); err != nil {
			return Scope{}, fmt.Errorf("%w: %v", ErrInvalidScope, err)
		}
	case "registry":
		if name != "catalog" {
			return Scope{}, fmt.Errorf("%w: unknown registry resource %q", ErrInvalidScope, name)
		}
	default:
		return Scope{}, fmt.Errorf("%w: unknown resource type %q", ErrInvalidScope, typ)
	}
	for _, a := range strings.Split(actions, ",") {
		switch a {
		case ActionPull, ActionPush, ActionDelete, ActionAll:
			if !slices.Contains(sc.Actions, a) {
				sc.Actions = append(sc.Actions, a)
			}
		case "":
		default:
			return Scope{}, fmt.Errorf("%w: unknown action %q", ErrInvalidScope, a)
		}
	}
	return sc, nil
}

// Token permissions in the manner of Azure Container Registry scope maps.
const (
	TokenContentRead   = "content/read"
	TokenContentWrite  = "content/write"
	TokenContentDelete = "content/delete"
	TokenMetadataRead  = "metadata/read"
	TokenMetadataWrite = "metadata/write"
	// TokenChecks lets a token see a gate's candidates and post check
	// results (a CI pipeline's token).
	TokenChecks = "checks"
)

// TokenScope grants actions on repositories named exactly, by a prefix
// ending in "/*", or all of them ("*"), including repositories that do not
// exist yet.
type TokenScope struct {
	Repository string   `json:"repository"`
	Actions    []string `json:"actions"`
}

// ValidateTokenScope checks a scope of an access token.
func ValidateTokenScope(s TokenScope) error {
	pattern := s.Repository
	switch {
	case pattern == "*":
	case strings.HasSuffix(pattern, "/*"):
		if err := oci.ValidateName(strings.TrimSuffix(pattern, "/*")); err != nil {
			return fmt.Errorf("repository pattern %q: %w", pattern, err)
		}
	default:
		if err := oci.ValidateName(pattern); err != nil {
			return fmt.Errorf("repository %q: %w", pattern, err)
		}
	}
	if len(s.Actions) == 0 {
		return fmt.Errorf("repository %q: no actions", pattern)
	}
	for _, a := range s.Actions {
		switch a {
		case TokenContentRead, TokenContentWrite, TokenContentDelete, TokenMetadataRead, TokenMetadataWrite, TokenChecks:
		default:
			return fmt.Errorf("repository %q: unknown action %q (content/read, content/write, content/delete, metadata/read, metadata/write, checks)", pattern, a)
		}
	}
	return nil
}

// Matches reports whether the scope's pattern covers a repository.
func (s TokenScope) Matches(repo string) bool {
	switch {
	case s.Repository == "*":
		return true
	case strings.HasSuffix(s.Repository, "/*"):
		return strings.HasPrefix(repo, strings.TrimSuffix(s.Repository, "*"))
	default:
		return s.Repository == repo
	}
}
