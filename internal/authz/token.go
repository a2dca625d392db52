package authz

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/internal/auth"
)

// tokenResponse is Docker's token endpoint answer.
type tokenResponse struct {
	Token       string `json:"token"`
	AccessToken string `json:"access_token"`
	ExpiresIn   int    `json:"expires_in"`
	IssuedAt    string `json:"issued_at"`
}

// maxTokenScopes bounds the scopes of one token request. Clients ask for
// one to a few (the repository pushed to, and those mounted from).
const maxTokenScopes = 100

// ServeToken is Docker's token endpoint: GET with Basic credentials (or
// none, for anonymous pulls of public repositories) and scope parameters,
// or POST with an OAuth2 password grant. It grants each requested action
// the identity may perform, never more than asked.
func (a *Authorizer) ServeToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		writeTokenError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "use GET or POST")
		return
	}
	ctx := r.Context()
	var scopes []string
	var id auth.Identity
	var err error
	q := r.URL.Query()
	if r.Method == http.MethodPost {
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if err := r.ParseForm(); err != nil {
			writeTokenError(w, http.StatusBadRequest, "INVALID_REQUEST", "malformed form body")
			return
		}
		q = r.PostForm
		if gt := q.Get("grant_type"); gt != "password" {
			writeTokenError(w, http.StatusBadRequest, "UNSUPPORTED", "grant_type must be password (refresh tokens are not issued)")
			return
		}
		id, err = a.Login(ctx, r, q.Get("username"), q.Get("password"))
	} else {
		var c caller
		c, err = a.identify(ctx, r)
		id = c.id
		if err == nil && CredentialsOf(r).Bearer != "" {
			err = ErrBadCredentials // a registry token does not buy another
		}
	}
	if d, ok := loginRefusal(err); ok {
		if d.Verdict == TooManyRequests { // throttled or busy
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(d.RetryAfter.Seconds()))))
			writeTokenError(w, http.StatusTooManyRequests, "TOOMANYREQUESTS", d.Reason)
			return
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="berth"`)
		writeTokenError(w, http.StatusUnauthorized, "UNAUTHORIZED", d.Reason)
		return
	}
	if err != nil {
		a.log.Error("token endpoint", "err", err)
		writeTokenError(w, http.StatusInternalServerError, "INTERNAL_ERROR", "internal error")
		return
	}
	if svc := q.Get("service"); svc != "" && svc != a.tokens.Service() {
		writeTokenError(w, http.StatusBadRequest, "INVALID_REQUEST", "unknown service")
		return
	}
	for _, s := range q["scope"] {
		scopes = append(scopes, strings.Fields(s)...)
	}
	if len(scopes) > maxTokenScopes {
		// Each scope is a permission decision (lookups in the database),
		// and the endpoint answers anonymous callers: bound the work.
		writeTokenError(w, http.StatusBadRequest, "INVALID_REQUEST", fmt.Sprintf("%d scopes asked for; at most %d per token", len(scopes), maxTokenScopes))
		return
	}
	access := []auth.Access{}
	for _, s := range scopes {
		sc, err := auth.ParseScope(s)
		if err != nil {
			writeTokenError(w, http.StatusBadRequest, "INVALID_REQUEST", err.Error())
			return
		}
		granted, err := a.grant(r, id, sc)
		if err != nil {
			a.log.Error("token endpoint", "err", err)
			writeTokenError(w, http.StatusInternalServerError, "INTERNAL_ERROR", "internal error")
			return
		}
		if len(granted) > 0 {
			// A resource granted nothing has no entry, as in
			// Distribution's token server: clients read no token, and
			// an empty entry would only let anyone have a large one
			// signed (100 names of 255 bytes).
			access = mergeAccess(access, auth.Access{Type: sc.Type, Name: sc.Name, Actions: granted})
		}
	}
	now := a.now()
	tok, exp, err := a.tokens.IssueFor(id, access, now)
	if err != nil {
		a.log.Error("token endpoint", "err", err)
		writeTokenError(w, http.StatusInternalServerError, "INTERNAL_ERROR", "internal error")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(tokenResponse{Token: tok, AccessToken: tok, ExpiresIn: int(exp.Sub(now).Seconds()), IssuedAt: now.UTC().Format("2006-01-02T15:04:05Z")})
}

// grant returns the requested actions the identity may perform.
func (a *Authorizer) grant(r *http.Request, id auth.Identity, sc auth.Scope) ([]string, error) {
	granted := []string{}
	if sc.Type == "registry" {
		if id.Superuser {
			granted = append(granted, "*")
		}
		return granted, nil
	}
	actions := sc.Actions
	if slices.Contains(actions, auth.ActionAll) {
		actions = []string{auth.ActionPull, auth.ActionPush, auth.ActionDelete}
	}
	s := a.subject(id, sc.Name)
	for _, act := range actions {
		ok, err := s.decide(r.Context(), act)
		if err != nil {
			return nil, err
		}
		if ok {
			granted = append(granted, act)
		}
	}
	return granted, nil
}

func mergeAccess(list []auth.Access, add auth.Access) []auth.Access {
	for i := range list {
		if list[i].Type == add.Type && list[i].Name == add.Name {
			for _, act := range add.Actions {
				if !slices.Contains(list[i].Actions, act) {
					list[i].Actions = append(list[i].Actions, act)
				}
			}
			return list
		}
	}
	return append(list, add)
}

func writeTokenError(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": message}}, "details": message})
}
