package authz

import (
	"context"
	"fmt"
	"net/http"
	"slices"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
)

// TokenPath is where the token endpoint is served.
const TokenPath = "/v2/auth"

func (a *Authorizer) realm(r *http.Request) string {
	if a.opts.Realm != "" {
		return a.opts.Realm
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + TokenPath
}

// challenge is the decision that asks for a registry token for the
// resource, with the reason of the last refusal (errCode) if any.
func (a *Authorizer) challenge(r *http.Request, res auth.Scope, errCode, reason string) Decision {
	c := Challenge{Realm: a.realm(r), Service: a.tokens.Service(), Error: errCode}
	if res.Type != "" {
		c.Scope = res.String()
	}
	return Decision{Verdict: Unauthenticated, Reason: reason, Challenge: c, Refused: res}
}

// Authorize decides a /v2 request for auth mode "token": whether it may
// act on the resource (a repository with actions, the catalog, or the base
// check when res.Type is empty). The caller and its standing on the
// repository are looked up once, however many actions the resource names.
// A push (POST or PUT) to a repository that does not exist yet is allowed
// with the plan that creates it (Decision.Writer.Create).
func (a *Authorizer) Authorize(r *http.Request, res auth.Scope) (Decision, error) {
	ctx := r.Context()
	c, err := a.identify(ctx, r)
	if d, ok := loginRefusal(err); ok {
		if d.Verdict == Unauthenticated {
			return a.challenge(r, res, "invalid_token", "authentication required: "+d.Reason), nil
		}
		return d, nil
	}
	if err != nil {
		return Decision{}, err
	}
	id, claims := c.id, c.claims
	who := meta.Writer{Actor: id.Actor()}
	if res.Type == "" { // GET /v2/: any valid identity, or a challenge
		if id.Kind == auth.KindAnonymous {
			return a.challenge(r, res, "", "authentication required"), nil
		}
		return allow(id, who), nil
	}
	if res.Type == "registry" {
		if claims != nil && claims.Allows("registry", res.Name, "*") || claims == nil && id.Superuser {
			return allow(id, who), nil
		}
		if id.Kind == auth.KindAnonymous || claims != nil {
			return a.challenge(r, res, "insufficient_scope", "the catalog needs a superuser"), nil
		}
		return deny("the catalog needs a superuser", auth.Scope{}), nil
	}
	s := a.subject(id, res.Name)
	s.creator = c.creator
	refused := ""
	for _, action := range res.Actions {
		allowed, err := s.allowed(ctx, claims, action)
		if err != nil {
			return Decision{}, err
		}
		// A write's refusal explains the write (a push also asks for pull).
		if !allowed && (refused == "" || isWrite(action)) {
			refused = action
		}
	}
	if refused != "" {
		return a.refusal(r, s, claims, res, refused)
	}
	if slices.Contains(res.Actions, auth.ActionPush) && (r.Method == http.MethodPost || r.Method == http.MethodPut) {
		if who.Create, err = s.plan(ctx); err != nil {
			return Decision{}, err
		}
	}
	return allow(id, who), nil
}

// refusal decides a refused action. Anonymous callers are challenged (they
// must log in). A known identity is told why: Denied with the reason, or
// NameUnknown for a read in a namespace that does not exist. A registry
// token that merely lacks the scope, where its identity may act now, is
// challenged so that the client asks the token endpoint again; one whose
// identity may not gets the same answer as Basic credentials, not a
// challenge the token endpoint cannot satisfy. A HEAD has no body to carry
// a reason: a refused one keeps the challenge (token clients) or the bare
// denial (Basic).
func (a *Authorizer) refusal(r *http.Request, s *subject, claims *auth.Claims, res auth.Scope, action string) (Decision, error) {
	ctx := r.Context()
	scopeChallenge := a.challenge(r, res, "insufficient_scope", fmt.Sprintf("%s on %s is not allowed", action, res.Name))
	if s.id.Kind == auth.KindAnonymous {
		return scopeChallenge, nil
	}
	if claims != nil {
		// The identity is the store's current one (bearerIdentity).
		if now, err := s.decide(ctx, action); err != nil || now {
			return scopeChallenge, err
		}
	}
	d, err := s.refuse(ctx, res, action)
	if err != nil {
		return Decision{}, err
	}
	if claims != nil && r.Method == http.MethodHead && d.Verdict == Denied {
		return scopeChallenge, nil
	}
	return d, nil
}

// allowed decides one action. A registry token carries the decision made
// when it was issued, about the repository of that name then; writes are
// checked again against the repository's state, which may have changed
// since (a mirror or read-only repository). For a write, a repository
// that does not exist now, or was created since the token was issued, is
// not the one decided about (deleted and pushed again by the holder, it
// would be created with the holder as its admin; made by someone else, it
// would be writable by a token asked for before it existed): the write is
// decided now.
func (s *subject) allowed(ctx context.Context, claims *auth.Claims, action string) (bool, error) {
	if claims == nil {
		return s.decide(ctx, action)
	}
	if action == auth.ActionChecks {
		// Never in a registry token's scope: whether its holder may see
		// a gate's candidates is decided now, on the gate's checkers, as
		// the identity the store knows now (bearerIdentity).
		return s.decide(ctx, action)
	}
	if !claims.Allows("repository", s.name, action) {
		return false, nil
	}
	if action == auth.ActionPull {
		// A pull reads what is there: a deleted repository is unknown.
		// (One made since the token, under the name, by another with the
		// right to create there too, is readable until the token expires.)
		return true, nil
	}
	ri, err := s.repository(ctx)
	if err != nil {
		return false, err
	}
	if !ri.Exists || claims.IssuedBefore(ri.CreatedAt) {
		return s.decide(ctx, action)
	}
	return auth.StateAllows(s.id, repoOf(ri), action), nil
}
