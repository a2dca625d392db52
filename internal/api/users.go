package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/mail"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/authz"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
)

func (a *API) userRoutes() {
	a.handle("POST /api/v1/user/initialize", a.initializeUser)
	a.handle("GET /api/v1/user/{$}", a.getUser)
	a.handle("GET /api/v1/user", a.getUser)
	a.handle("GET /api/v1/superuser/users/{$}", a.superuserListUsers)
	a.handle("POST /api/v1/superuser/users/{$}", a.superuserCreateUser)
	a.handle("GET /api/v1/superuser/users/{username}", a.superuserGetUser)
	a.handle("PUT /api/v1/superuser/users/{username}", a.superuserUpdateUser)
	a.handle("DELETE /api/v1/superuser/users/{username}", a.superuserDeleteUser)
	a.handle("GET /api/v1/superuser/logs", a.superuserLogs)
	a.handle("GET /api/v1/organization/{org}/logs", a.organizationLogs)
	a.handle("POST /api/v1/tokens", a.createAccessToken)
	a.handle("GET /api/v1/tokens", a.listAccessTokens)
	a.handle("DELETE /api/v1/tokens/{name}", a.revokeAccessToken)
}

// checkUsername applies the grammar of a user, organization or token name:
// one repository-name component, so no '/' and no '+' (robots' separator).
func checkUsername(name string) error {
	if strings.ContainsAny(name, "/+") {
		return fmt.Errorf("name %q: no '/' or '+' allowed", name)
	}
	if err := oci.ValidateName(name); err != nil {
		return fmt.Errorf("name %q: lowercase letters, digits and single separators ('.', '_', '__', '-') only: %v", name, err)
	}
	return nil
}

func checkEmail(email string) error {
	if email == "" {
		return nil
	}
	if a, err := mail.ParseAddress(email); err != nil || a.Address != email {
		return fmt.Errorf("invalid email address %q", email)
	}
	return nil
}

// needSuperuser refuses anyone but a superuser: 401 anonymous, 403 others.
func needSuperuser(id auth.Identity) error {
	if err := requireUser(id); err != nil {
		return err
	}
	if !id.Superuser {
		return forbidden("%s is not a superuser", id.Actor())
	}
	return nil
}

// allowNamespaceAdmin refuses callers who do not administer the namespace.
// The decision is auth.Allowed's on "ns/", a repository that cannot exist
// (no valid name ends in '/'), so only namespace-wide standing counts:
// owning the namespace, an admin team of the organization, or superuser.
// Robots act on repositories, never on a namespace.
func (a *API) allowNamespaceAdmin(ctx context.Context, id auth.Identity, ns string) error {
	if id.Kind == auth.KindRobot {
		return forbidden("robot %s does not administer namespaces", id.Name)
	}
	ok, err := a.auth.Decide(ctx, id, ns+"/", auth.ActionAdmin)
	if err != nil {
		return err
	}
	if ok {
		return nil
	}
	if id.Kind == auth.KindAnonymous {
		return unauthorized("authentication required")
	}
	return forbidden("%s does not administer %s", id.Actor(), ns)
}

type initializeRequest struct {
	Username    string `json:"username"`
	Password    string `json:"password"`
	Email       string `json:"email"`
	AccessToken bool   `json:"access_token"`
}

type initializeResponse struct {
	Username          string `json:"username"`
	Email             string `json:"email"`
	EncryptedPassword string `json:"encrypted_password"`
	AccessToken       string `json:"access_token,omitempty"`
}

// initializeUser creates the first user, a superuser, while no user exists
// (Quay's FEATURE_USER_INITIALIZE). Its failures are Quay's 400
// {"message": ...}.
func (a *API) initializeUser(w http.ResponseWriter, r *http.Request, _ auth.Identity) error {
	if !a.opts.FeatureUserInitialize {
		return notFound("user initialization is disabled (FEATURE_USER_INITIALIZE)")
	}
	fail := func(status int, format string, args ...any) error {
		writeJSON(w, status, map[string]string{"message": fmt.Sprintf(format, args...)})
		return nil
	}
	var req initializeRequest
	if err := decode(w, r, &req); err != nil {
		var e *Error
		if errors.As(err, &e) {
			return fail(e.Status, "%s", e.Message)
		}
		return err
	}
	ctx := r.Context()
	if n, err := a.db.Accounts.CountUsers(ctx); err != nil {
		return err
	} else if n > 0 {
		return fail(http.StatusBadRequest, "Cannot initialize user in a non-empty database")
	}
	if err := checkUsername(req.Username); err != nil {
		return fail(http.StatusBadRequest, "Invalid username: %v", err)
	}
	if !auth.PasswordLengthOK(req.Password) {
		return fail(http.StatusBadRequest, "Invalid password: it must be %d to %d characters long", auth.MinPasswordLength, auth.MaxPasswordLength)
	}
	if err := checkEmail(req.Email); err != nil {
		return fail(http.StatusBadRequest, "%v", err)
	}
	hash, err := auth.HashPassword(req.Password)
	if err != nil {
		return err
	}
	var tok *meta.AccessToken
	var secret string
	if req.AccessToken {
		if secret, err = auth.NewSecret(authz.SecretPrefix); err != nil {
			return err
		}
		// '+' keeps the name out of the users' namespace.
		tok = &meta.AccessToken{Name: req.Username + "+initialize", SecretHash: auth.HashSecret(secret), CreatedBy: req.Username}
	}
	u, err := a.db.Accounts.CreateFirstUser(ctx, meta.User{Username: req.Username, Email: req.Email, SecretHash: hash, Superuser: true}, tok)
	switch {
	case errors.Is(err, meta.ErrUsersExist):
		return fail(http.StatusBadRequest, "Cannot initialize user in a non-empty database")
	case errors.Is(err, meta.ErrExists):
		return fail(http.StatusBadRequest, "Invalid username: %q is taken", req.Username)
	case err != nil:
		return err
	}
	a.audit(r, auth.Identity{Kind: auth.KindUser, Name: u.Username}, "user_initialize", "", u.Username,
		map[string]any{"username": u.Username, "access_token": req.AccessToken})
	writeJSON(w, http.StatusOK, initializeResponse{Username: u.Username, Email: u.Email, EncryptedPassword: hash, AccessToken: secret})
	return nil
}

type orgRef struct {
	Name string `json:"name"`
}

type userView struct {
	Username      string   `json:"username"`
	Email         string   `json:"email"`
	SuperUser     bool     `json:"super_user"`
	Organizations []orgRef `json:"organizations"`
	Anonymous     bool     `json:"anonymous"`
	IsRobot       bool     `json:"is_robot"`
}

// getUser describes the caller.
func (a *API) getUser(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	if err := requireUser(id); err != nil {
		return err
	}
	out := userView{Username: id.Name, SuperUser: id.Superuser, Organizations: []orgRef{}, IsRobot: id.Kind == auth.KindRobot}
	if id.Kind == auth.KindUser || id.Kind == auth.KindRobot {
		u, err := a.db.Users.UserByName(r.Context(), id.Name)
		switch {
		case errors.Is(err, meta.ErrUserNotFound):
			// auth mode "none", or deleted since its token was issued
		case err != nil:
			return err
		default:
			out.Email = u.Email
			orgs, err := a.db.Orgs.UserOrganizations(r.Context(), u.ID)
			if err != nil {
				return err
			}
			for _, o := range orgs {
				out.Organizations = append(out.Organizations, orgRef{Name: o})
			}
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// logsPerPage is the page size of the audit log endpoints.
const logsPerPage = 50

type logPerformer struct {
	Kind    string `json:"kind"`
	Name    string `json:"name"`
	IsRobot bool   `json:"is_robot"`
}

type logEntry struct {
	Kind       string          `json:"kind"`
	Metadata   json.RawMessage `json:"metadata"`
	IP         string          `json:"ip"`
	Datetime   string          `json:"datetime"`
	Performer  *logPerformer   `json:"performer,omitempty"`
	Repository string          `json:"repository,omitempty"`
}

type logsPage struct {
	Logs     []logEntry `json:"logs"`
	NextPage string     `json:"next_page,omitempty"`
}

// quayTime formats a time as Quay's API does ("Tue, 09 Jan 2024 12:00:00 -0000").
func quayTime(t time.Time) string {
	return t.UTC().Format("Mon, 02 Jan 2006 15:04:05 -0000")
}

// writeLogs answers a page of the audit log read by fetch, following
// ?next_page= (the id the previous page stopped before).
func writeLogs(w http.ResponseWriter, r *http.Request, fetch func(before int64, n int) ([]meta.AuditEntry, error)) error {
	var before int64
	if s := r.URL.Query().Get("next_page"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 {
			return badRequest("invalid next_page %q", s)
		}
		before = n
	}
	entries, err := fetch(before, logsPerPage+1)
	if err != nil {
		return err
	}
	out := logsPage{Logs: []logEntry{}}
	if len(entries) > logsPerPage {
		entries = entries[:logsPerPage]
		out.NextPage = strconv.FormatInt(entries[len(entries)-1].ID, 10)
	}
	for _, e := range entries {
		le := logEntry{Kind: e.Kind, Metadata: e.Metadata, IP: e.IP, Datetime: quayTime(e.CreatedAt), Repository: e.Repository}
		if e.Actor != "" {
			p := &logPerformer{Kind: "user", Name: e.Actor}
			switch {
			case strings.HasPrefix(e.Actor, "token:"):
				p.Kind = "token"
			case strings.Contains(e.Actor, "+"):
				p.Kind, p.IsRobot = "robot", true
			}
			le.Performer = p
		}
		out.Logs = append(out.Logs, le)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// superuserLogs is the whole audit log.
func (a *API) superuserLogs(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	if err := needSuperuser(id); err != nil {
		return err
	}
	return writeLogs(w, r, func(before int64, n int) ([]meta.AuditEntry, error) {
		return a.db.Audit.AuditLog(r.Context(), "", before, n)
	})
}

// organizationLogs is an organization's audit log, for its admins: since
// it was created, not of an organization or user deleted under its name.
func (a *API) organizationLogs(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	if err := requireUser(id); err != nil {
		return err
	}
	org := r.PathValue("org")
	if err := checkUsername(org); err != nil {
		return badRequest("invalid organization name: %v", err)
	}
	ns, err := a.db.Users.NamespaceByName(r.Context(), org)
	if errors.Is(err, meta.ErrNamespaceNotFound) || (err == nil && ns.Kind != meta.NamespaceOrg) {
		return notFound("no organization %q", org)
	}
	if err != nil {
		return err
	}
	if err := a.allowNamespaceAdmin(r.Context(), id, org); err != nil {
		return err
	}
	return writeLogs(w, r, func(before int64, n int) ([]meta.AuditEntry, error) {
		return a.db.Audit.NamespaceAuditLog(r.Context(), org, before, n)
	})
}

// Scoped access tokens (Azure Container Registry's scope maps).

// maxTokenLifetime bounds expires_in.
const maxTokenLifetime = 10 * 365 * 24 * time.Hour

type tokenRequest struct {
	Name      string            `json:"name"`
	Scopes    []auth.TokenScope `json:"scopes"`
	ExpiresIn int64             `json:"expires_in"`
}

type tokenCreated struct {
	Name      string            `json:"name"`
	Secret    string            `json:"secret"`
	Scopes    []auth.TokenScope `json:"scopes"`
	CreatedBy string            `json:"created_by"`
	ExpiresAt *time.Time        `json:"expires_at"`
}

type tokenView struct {
	Name       string          `json:"name"`
	Scopes     json.RawMessage `json:"scopes"`
	Owner      string          `json:"owner,omitempty"` // a user's API token acts as this user
	CreatedBy  string          `json:"created_by"`
	CreatedAt  time.Time       `json:"created_at"`
	ExpiresAt  *time.Time      `json:"expires_at"`
	Revoked    bool            `json:"revoked"`
	LastUsedAt *time.Time      `json:"last_used_at"`
}

func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// createAccessToken issues a scoped token. Superusers may issue any; other
// callers only tokens whose every scope lies in namespaces they administer.
func (a *API) createAccessToken(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	if err := requireUser(id); err != nil {
		return err
	}
	var req tokenRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if err := checkUsername(req.Name); err != nil {
		return badRequest("invalid token name: %v", err)
	}
	if len(req.Scopes) == 0 || len(req.Scopes) > 100 {
		return badRequest("a token needs 1 to 100 scopes")
	}
	if req.ExpiresIn < 0 || req.ExpiresIn > int64(maxTokenLifetime/time.Second) {
		return badRequest("expires_in must be 0 (never) to %d seconds", int64(maxTokenLifetime/time.Second))
	}
	ctx := r.Context()
	checked := map[string]bool{}
	for _, s := range req.Scopes {
		if err := auth.ValidateTokenScope(s); err != nil {
			return badRequest("invalid scope: %v", err)
		}
		if s.Repository == "*" {
			if !id.Superuser {
				return forbidden("only a superuser may issue a token for every repository (\"*\")")
			}
			continue
		}
		ns, _, _ := strings.Cut(strings.TrimSuffix(s.Repository, "/*"), "/")
		if checked[ns] {
			continue
		}
		if err := a.allowNamespaceAdmin(ctx, id, ns); err != nil {
			return err
		}
		checked[ns] = true
	}
	secret, err := auth.NewSecret(authz.SecretPrefix)
	if err != nil {
		return err
	}
	scopes, _ := json.Marshal(req.Scopes)
	t := meta.AccessToken{Name: req.Name, SecretHash: auth.HashSecret(secret), Scopes: scopes, CreatedBy: id.Actor()}
	if req.ExpiresIn > 0 {
		t.ExpiresAt = time.Now().Add(time.Duration(req.ExpiresIn) * time.Second).UTC().Truncate(time.Microsecond)
	}
	if _, err := a.db.Tokens.CreateAccessTokenCapped(ctx, t); errors.Is(err, meta.ErrExists) {
		return badRequest("the name %q is taken", req.Name)
	} else if errors.Is(err, meta.ErrTooManyTokens) {
		return badRequest("at most %d unrevoked access tokens per creator: revoke one first (%v)", meta.MaxAccessTokensPerCreator, err)
	} else if err != nil {
		return err
	}
	a.audit(r, id, "token_create", "", "", map[string]any{"token": t.Name, "scopes": req.Scopes, "expires_at": timeOrNil(t.ExpiresAt)})
	writeJSON(w, http.StatusCreated, tokenCreated{Name: t.Name, Secret: secret, Scopes: req.Scopes, CreatedBy: t.CreatedBy, ExpiresAt: timeOrNil(t.ExpiresAt)})
	return nil
}

// listAccessTokens lists tokens without their secrets: every token for a
// superuser, the ones they issued for others (read as such, not filtered
// from everyone's).
func (a *API) listAccessTokens(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	if err := requireUser(id); err != nil {
		return err
	}
	var tokens []meta.AccessToken
	var err error
	if id.Superuser {
		tokens, err = a.db.Tokens.AccessTokens(r.Context())
	} else {
		tokens, err = a.db.Tokens.AccessTokensCreatedBy(r.Context(), id.Actor())
	}
	if err != nil {
		return err
	}
	owners := map[int64]string{}
	out := []tokenView{}
	for _, t := range tokens {
		v := tokenView{Name: t.Name, Scopes: t.Scopes, CreatedBy: t.CreatedBy, CreatedAt: t.CreatedAt.UTC(),
			ExpiresAt: timeOrNil(t.ExpiresAt), Revoked: !t.RevokedAt.IsZero(), LastUsedAt: timeOrNil(t.LastUsedAt)}
		if t.OwnerID != 0 {
			name, ok := owners[t.OwnerID]
			if !ok {
				u, err := a.db.Users.UserByID(r.Context(), t.OwnerID)
				if err != nil && !errors.Is(err, meta.ErrUserNotFound) {
					return err
				}
				name = u.Username
				owners[t.OwnerID] = name
			}
			v.Owner = name
		}
		out = append(out, v)
	}
	writeJSON(w, http.StatusOK, map[string][]tokenView{"tokens": out})
	return nil
}

// revokeAccessToken revokes a token: a superuser any, others the ones they
// issued (others' tokens are not found, so names do not leak).
func (a *API) revokeAccessToken(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	if err := requireUser(id); err != nil {
		return err
	}
	name := r.PathValue("name")
	t, err := a.db.Tokens.AccessTokenByName(r.Context(), name)
	if errors.Is(err, meta.ErrTokenNotFound) || (err == nil && !id.Superuser && t.CreatedBy != id.Actor()) {
		return notFound("no access token %q", name)
	}
	if err != nil {
		return err
	}
	if t.RevokedAt.IsZero() {
		if err := a.db.Tokens.RevokeAccessToken(r.Context(), name); err != nil && !errors.Is(err, meta.ErrTokenNotFound) {
			return err
		}
		a.audit(r, id, "token_revoke", "", "", map[string]string{"token": name})
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
