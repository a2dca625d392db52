package registry

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/authz"
	"github.com/berth-dev/berth/internal/meta"
)

// Actions on a repository scope, as in Docker's token scopes.
const (
	ActionPull   = auth.ActionPull
	ActionPush   = auth.ActionPush
	ActionDelete = auth.ActionDelete
)

// Resource is what a request acts on: a repository with actions, the
// registry catalog, or nothing (the /v2/ base check) when Type is empty.
type Resource = auth.Scope

// Authorizer decides whether a request may act on a resource. It answers
// with a decision and never with an HTTP error: who writes (the actor for
// the audit trail and events and, for a push to a repository that does not
// exist yet, how the push creates it in its own transaction), or why the
// request is refused. The registry turns a refusal into its answer (see
// refusal). An error is a failure to decide (500).
type Authorizer interface {
	Authorize(r *http.Request, res Resource) (authz.Decision, error)
}

// AllowAll is the authorizer that allows every request, anonymously.
type AllowAll struct{}

// Authorize implements Authorizer.
func (AllowAll) Authorize(*http.Request, Resource) (authz.Decision, error) {
	return authz.Decision{Verdict: authz.Allow, Identity: auth.Anonymous}, nil
}

// authorize asks the authorizer, and answers a refusal: it returns who
// writes, or the *Error to answer (with its headers set on w).
func (reg *Registry) authorize(w http.ResponseWriter, r *http.Request, res Resource) (meta.Writer, error) {
	d, err := reg.decide(w, r, res)
	return d.Writer, err
}

// decide is authorize answering the whole decision (who asks, too).
func (reg *Registry) decide(w http.ResponseWriter, r *http.Request, res Resource) (authz.Decision, error) {
	d, err := reg.authz.Authorize(r, res)
	if err != nil {
		return authz.Decision{}, err
	}
	if d.Allowed() {
		return d, nil
	}
	return authz.Decision{}, refusal(w.Header(), d)
}

// maySeeHeld reports whether the caller may see what a gate holds in a
// repository (its candidates): the gate's checkers, repository admins,
// superusers and tokens with the checks action.
func (reg *Registry) maySeeHeld(r *http.Request, repo string) (bool, error) {
	d, err := reg.authz.Authorize(r, repoScope(repo, auth.ActionChecks))
	if err != nil {
		return false, err
	}
	return d.Allowed(), nil
}

// refusal is the answer to a refused request, in the spec's error body: a
// caller that must authenticate gets 401 with a Bearer challenge, a known
// one 403 DENIED with the reason, a read in a namespace that does not
// exist 404 NAME_UNKNOWN, a login refused for now 429 with a Retry-After.
func refusal(h http.Header, d authz.Decision) error {
	switch d.Verdict {
	case authz.Unauthenticated:
		h.Set("WWW-Authenticate", bearerChallenge(d.Challenge))
		return errorf(http.StatusUnauthorized, CodeUnauthorized, d.Reason, detail(d.Refused))
	case authz.Denied:
		return errorf(http.StatusForbidden, CodeDenied, d.Reason, detail(d.Refused))
	case authz.NameUnknown:
		return errorf(http.StatusNotFound, CodeNameUnknown, d.Reason, detail(d.Refused))
	case authz.TooManyRequests:
		h.Set("Retry-After", strconv.Itoa(int(math.Ceil(max(d.RetryAfter.Seconds(), 1)))))
		return errorf(http.StatusTooManyRequests, CodeTooManyRequests, d.Reason, nil)
	}
	return fmt.Errorf("authorization without a verdict (%s)", d.Verdict)
}

// bearerChallenge is the WWW-Authenticate value of Docker's token
// authentication.
func bearerChallenge(c authz.Challenge) string {
	v := fmt.Sprintf(`Bearer realm=%q,service=%q`, c.Realm, c.Service)
	if c.Scope != "" {
		v += fmt.Sprintf(`,scope=%q`, c.Scope)
	}
	if c.Error != "" {
		v += fmt.Sprintf(`,error=%q`, c.Error)
	}
	return v
}

// detail names the resource a refusal concerns, as CNCF Distribution does.
func detail(res Resource) any {
	if res.Type == "" {
		return nil
	}
	return []map[string]string{{"Type": res.Type, "Name": res.Name, "Action": strings.Join(res.Actions, ",")}}
}
