package authz

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/registry"
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

// challenge answers 401 with a Bearer challenge for the resource.
func (a *Authorizer) challenge(w http.ResponseWriter, r *http.Request, res registry.Resource, errCode, message string) *registry.Error {
	v := fmt.Sprintf(`Bearer realm=%q,service=%q`, a.realm(r), a.tokens.Service())
	if res.Type != "" {
		v += fmt.Sprintf(`,scope=%q`, res.Type+":"+res.Name+":"+strings.Join(res.Actions, ","))
	}
	if errCode != "" {
		v += fmt.Sprintf(`,error=%q`, errCode)
	}
	w.Header().Set("WWW-Authenticate", v)
	return &registry.Error{Status: http.StatusUnauthorized, Code: registry.CodeUnauthorized, Message: message,
		Detail: detail(res)}
}

func detail(res registry.Resource) any {
	if res.Type == "" {
		return nil
	}
	return []map[string]string{{"Type": res.Type, "Name": res.Name, "Action": strings.Join(res.Actions, ",")}}
}

// Authorize implements registry.Authorizer for auth mode "token".
func (a *Authorizer) Authorize(w http.ResponseWriter, r *http.Request, res registry.Resource) (meta.Writer, error) {
	ctx := r.Context()
	id, claims, err := a.Identify(ctx, r)
	switch {
	case setRetryAfter(w, err): // throttled or busy
		return meta.Writer{}, &registry.Error{Status: http.StatusTooManyRequests, Code: registry.CodeTooManyRequests, Message: err.Error()}
	case errors.Is(err, ErrBadCredentials), errors.Is(err, ErrDisabled), errors.Is(err, auth.ErrInvalidToken):
		return meta.Writer{}, a.challenge(w, r, res, "invalid_token", "authentication required: "+publicReason(err))
	case err != nil:
		return meta.Writer{}, err
	}
	if res.Type == "" { // GET /v2/: any valid identity, or a challenge
		if id.Kind == auth.KindAnonymous {
			return meta.Writer{}, a.challenge(w, r, res, "", "authentication required")
		}
		return meta.Writer{Actor: id.Actor()}, nil
	}
	if res.Type == "registry" {
		if claims != nil && claims.Allows("registry", res.Name, "*") || claims == nil && id.Superuser {
			return meta.Writer{Actor: id.Actor()}, nil
		}
		if id.Kind == auth.KindAnonymous || claims != nil {
			return meta.Writer{}, a.challenge(w, r, res, "insufficient_scope", "the catalog needs a superuser")
		}
		return meta.Writer{}, &registry.Error{Status: http.StatusForbidden, Code: registry.CodeDenied, Message: "the catalog needs a superuser"}
	}
	refused := ""
	for _, action := range res.Actions {
		allowed, err := a.allowed(r, id, claims, res.Name, action)
		if err != nil {
			return meta.Writer{}, err
		}
		// A write's refusal explains the write (a push also asks for pull).
		if !allowed && (refused == "" || isWrite(action)) {
			refused = action
		}
	}
	if refused != "" {
		return meta.Writer{}, a.refusal(w, r, id, claims, res, refused)
	}
	who := meta.Writer{Actor: id.Actor()}
	if contains(res.Actions, registry.ActionPush) && (r.Method == http.MethodPost || r.Method == http.MethodPut) {
		if who.Create, err = a.planCreate(ctx, id, res.Name); err != nil {
			return meta.Writer{}, err
		}
	}
	return who, nil
}

// refusal answers a refused action. Anonymous callers are challenged (they
// must log in). A known identity is told why, in a body that clients
// print: 403 DENIED with the reason, or 404 for a read in a namespace that
// does not exist. A registry token that merely lacks the scope, where its
// identity may act now, is challenged so that the client asks the token
// endpoint again; one whose identity may not gets the same answer as
// Basic credentials, not a challenge the token endpoint cannot satisfy.
// A HEAD has no body to carry a reason: a refused one keeps the challenge
// (token clients) or the bare 403 (Basic).
func (a *Authorizer) refusal(w http.ResponseWriter, r *http.Request, id auth.Identity, claims *auth.Claims, res registry.Resource, action string) error {
	ctx := r.Context()
	scopeChallenge := func() error {
		return a.challenge(w, r, res, "insufficient_scope", fmt.Sprintf("%s on %s is not allowed", action, res.Name))
	}
	if id.Kind == auth.KindAnonymous {
		return scopeChallenge()
	}
	if claims != nil {
		cur, ok, err := a.current(ctx, id)
		if err != nil {
			return err
		}
		if !ok {
			return scopeChallenge()
		}
		if now, err := a.Decide(ctx, cur, res.Name, action); err != nil {
			return err
		} else if now {
			return scopeChallenge()
		}
		id = cur
	}
	e, err := a.refuse(ctx, id, res, action)
	if err != nil {
		return err
	}
	if claims != nil && r.Method == http.MethodHead && e.Status == http.StatusForbidden {
		return scopeChallenge()
	}
	return e
}

// allowed decides one action. A registry token carries the decision made
// when it was issued; writes are checked again against the repository's
// state, which may have changed since (a mirror or read-only repository).
func (a *Authorizer) allowed(r *http.Request, id auth.Identity, claims *auth.Claims, repo, action string) (bool, error) {
	if claims == nil {
		return a.Decide(r.Context(), id, repo, action)
	}
	if !claims.Allows("repository", repo, action) {
		return false, nil
	}
	if action == auth.ActionPull {
		return true, nil
	}
	ri, err := a.store.Repositories.Repository(r.Context(), repo)
	if err != nil {
		return false, err
	}
	return auth.StateAllows(id, repoOf(ri), action), nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// publicReason is what a client may be told about a failed authentication.
func publicReason(err error) string {
	switch {
	case errors.Is(err, ErrDisabled):
		return "the account or token is disabled, revoked or expired"
	case errors.Is(err, auth.ErrInvalidToken):
		return "the bearer token is invalid or expired"
	}
	return "invalid username or password"
}
