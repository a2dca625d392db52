package authz

import (
	"errors"
	"time"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
)

// Verdict is what an authorization decided.
type Verdict int

// Verdicts. The zero Verdict is none: a Decision without one refuses
// (the registry and the API answer it as an internal error).
const (
	// Allow: the request may proceed.
	Allow Verdict = iota + 1
	// Unauthenticated: the caller must authenticate (again): it sent no
	// credentials, bad ones, or a registry token without the scope. The
	// registry challenges it (Decision.Challenge), the API asks for Basic
	// credentials.
	Unauthenticated
	// Denied: a known caller may not act, and Reason says why.
	Denied
	// NameUnknown: a read in a namespace that does not exist; nothing is
	// there to hide.
	NameUnknown
	// TooManyRequests: a login refused for now, not for its credentials;
	// RetryAfter says when to try again.
	TooManyRequests
)

func (v Verdict) String() string {
	switch v {
	case Allow:
		return "allow"
	case Unauthenticated:
		return "unauthenticated"
	case Denied:
		return "denied"
	case NameUnknown:
		return "name unknown"
	case TooManyRequests:
		return "too many requests"
	}
	return "none"
}

// Decision is the answer to a request for access. It holds no HTTP: the
// registry (/v2) and the API (/api/v1) turn it into their answers.
type Decision struct {
	Verdict Verdict
	// Identity is who asks (Allow).
	Identity auth.Identity
	// Writer is who writes, for the audit trail and events, and, for a
	// push to a repository that does not exist yet, how the push creates
	// it in its own transaction (Allow).
	Writer meta.Writer
	// Reason says why a request is refused, in words a client may show.
	Reason string
	// Challenge says how to authenticate with a registry token
	// (Unauthenticated, on /v2).
	Challenge Challenge
	// RetryAfter is how long to wait before trying again
	// (TooManyRequests): at least a second.
	RetryAfter time.Duration
	// Refused is the resource a refusal concerns, with the actions
	// requested; its Type is empty when the refusal concerns something
	// else (a namespace that does not exist, the catalog's superuser
	// rule).
	Refused auth.Scope
}

// Allowed reports whether the request may proceed.
func (d Decision) Allowed() bool { return d.Verdict == Allow }

// Challenge is a Bearer challenge of Docker's token authentication: where
// to get a token (Realm, Service), for what (Scope, empty for the base
// check), and why the last one did not do (Error: "invalid_token",
// "insufficient_scope", or empty).
type Challenge struct {
	Realm, Service, Scope, Error string
}

// allow is the decision that lets id proceed, writing as w.
func allow(id auth.Identity, w meta.Writer) Decision {
	return Decision{Verdict: Allow, Identity: id, Writer: w}
}

// deny refuses a known caller, saying why.
func deny(reason string, refused auth.Scope) Decision {
	return Decision{Verdict: Denied, Reason: reason, Refused: refused}
}

// loginRefusal is the decision for a failed authentication, and false
// when err is not one (nil, or an internal error): a login refused for
// now is TooManyRequests, bad or disabled credentials and invalid tokens
// are Unauthenticated with the reason a client may be told.
func loginRefusal(err error) (Decision, bool) {
	var re *RetryError
	switch {
	case errors.As(err, &re): // throttled or busy
		return Decision{Verdict: TooManyRequests, Reason: re.Error(), RetryAfter: re.RetryAfter()}, true
	case errors.Is(err, ErrBadCredentials), errors.Is(err, ErrDisabled), errors.Is(err, auth.ErrInvalidToken):
		return Decision{Verdict: Unauthenticated, Reason: publicReason(err)}, true
	}
	return Decision{}, false
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
