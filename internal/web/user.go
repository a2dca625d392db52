package web

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/auth"
)

// The user page (/user/{name}, Quay's path) is a signed-in user's own
// account: their repositories, organizations, robots and the access tokens
// they issued, which they create (the secret shown once) and revoke. No
// one else's account has a page: another name is not found.

type accessToken struct {
	Name   string          `json:"name"`
	Scopes json.RawMessage `json:"scopes"`
	Owner  string          `json:"owner"`
	// CreatedBy is who issued it (auth.Identity.Actor).
	CreatedBy string `json:"created_by"`
	// Times as the API gives them.
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  *time.Time `json:"expires_at"`
	Revoked    bool       `json:"revoked"`
	LastUsedAt *time.Time `json:"last_used_at"`
}

// ScopeText is a token's scopes as a line of text.
func (t accessToken) ScopeText() string {
	var ss []auth.TokenScope
	if json.Unmarshal(t.Scopes, &ss) != nil {
		return string(t.Scopes)
	}
	var parts []string
	for _, s := range ss {
		parts = append(parts, s.Repository+" ("+strings.Join(s.Actions, ", ")+")")
	}
	return strings.Join(parts, "; ")
}

// tokensShown bounds the access tokens the account page lists.
const tokensShown = 100

// ownTokens are the tokens actor issued (the API lists a superuser
// everyone's), those not revoked first, at most tokensShown of them, and
// how many more actor issued.
func ownTokens(all []accessToken, actor string) ([]accessToken, int) {
	var own []accessToken
	for _, t := range all {
		if t.CreatedBy == actor {
			own = append(own, t)
		}
	}
	slices.SortStableFunc(own, func(a, b accessToken) int {
		switch {
		case a.Revoked == b.Revoked:
			return 0
		case b.Revoked:
			return -1
		}
		return 1
	})
	if len(own) > tokensShown {
		return own[:tokensShown], len(own) - tokensShown
	}
	return own, 0
}

// ownAccount refuses every page but the visitor's own account.
func (u *UI) ownAccount(r *http.Request, v *visitor) (string, error) {
	name := r.PathValue("name")
	if !v.signedIn || v.id.Kind != auth.KindUser || name != v.id.Name {
		return "", errNotFound
	}
	return name, nil
}

func (u *UI) user(w http.ResponseWriter, r *http.Request, v *visitor) error {
	return u.userPage(w, r, v, http.StatusOK, formFlash{})
}

// userPage renders the account page, with a refused form's flash.
func (u *UI) userPage(w http.ResponseWriter, r *http.Request, v *visitor, status int, flash formFlash) error {
	name, err := u.ownAccount(r, v)
	if err != nil {
		return err
	}
	var me struct {
		Username      string `json:"username"`
		Email         string `json:"email"`
		Organizations []struct {
			Name string `json:"name"`
		} `json:"organizations"`
	}
	if err := u.call(r, v, http.MethodGet, "/api/v1/user/", nil, &me); err != nil {
		return pageError(err)
	}
	data := map[string]any{"Name": name, "Email": me.Email, "Organizations": me.Organizations, "Path": "/user/" + esc(name), "CSRF": v.csrf,
		"Flash": flash}
	if err := u.namespaceRepos(r, v, name, data); err != nil {
		return pageError(err)
	}
	var robots struct {
		Robots []robot `json:"robots"`
	}
	if err := u.call(r, v, http.MethodGet, "/api/v1/user/robots", nil, &robots); err != nil {
		return pageError(err)
	}
	var tokens struct {
		Tokens []accessToken `json:"tokens"`
	}
	if err := u.call(r, v, http.MethodGet, "/api/v1/tokens", nil, &tokens); err != nil {
		return pageError(err)
	}
	own, more := ownTokens(tokens.Tokens, v.id.Actor())
	data["Robots"], data["Tokens"], data["MoreTokens"] = robots.Robots, own, more
	u.render(w, r, v, status, "user", "Account "+name, data)
	return nil
}

// userPOST routes the user page's actions. A refusal the visitor can fix
// renders the page again with the message and the form as typed.
func (u *UI) userPOST(w http.ResponseWriter, r *http.Request, v *visitor) error {
	name, err := u.ownAccount(r, v)
	if err != nil {
		return err
	}
	back := "/user/" + esc(name)
	action := r.PathValue("action")
	segs := strings.Split(action, "/")
	f := func(k string) string { return strings.TrimSpace(r.PostFormValue(k)) }
	switch {
	case len(segs) == 2 && segs[0] == "robots" && segs[1] == "create":
		err = u.robotCreate(w, r, v, "/api/v1/user/robots/", back, "Account "+name)
	case len(segs) == 3 && segs[0] == "robots" && segs[2] == "regenerate":
		err = u.robotRegenerate(w, r, v, "/api/v1/user/robots/", segs[1], back, "Account "+name)
	case len(segs) == 3 && segs[0] == "robots" && segs[2] == "delete":
		if err = u.call(r, v, http.MethodDelete, "/api/v1/user/robots/"+esc(segs[1]), nil, nil); err == nil {
			http.Redirect(w, r, back, http.StatusSeeOther)
		}
	case len(segs) == 2 && segs[0] == "tokens" && segs[1] == "create":
		err = u.tokenCreate(w, r, v, back, name)
	case len(segs) == 2 && segs[0] == "organizations" && segs[1] == "create":
		org := f("name")
		if org == "" {
			err = fail(http.StatusBadRequest, "An organization needs a name.")
			break
		}
		body := map[string]string{"name": org}
		if email := f("email"); email != "" {
			body["email"] = email
		}
		if err = u.call(r, v, http.MethodPost, "/api/v1/organization/", body, nil); err == nil {
			http.Redirect(w, r, "/organization/"+esc(org), http.StatusSeeOther)
		}
	case len(segs) == 2 && segs[0] == "repositories" && segs[1] == "create":
		if f("repository") == "" {
			err = fail(http.StatusBadRequest, "A repository needs a name.")
			break
		}
		body := map[string]string{"namespace": f("namespace"), "repository": f("repository"), "visibility": f("visibility"),
			"description": r.PostFormValue("description")}
		if err = u.call(r, v, http.MethodPost, "/api/v1/repository", body, nil); err == nil {
			http.Redirect(w, r, repoPath(f("namespace")+"/"+f("repository")), http.StatusSeeOther)
		}
	case len(segs) == 3 && segs[0] == "tokens" && segs[2] == "revoke":
		if err = u.call(r, v, http.MethodDelete, "/api/v1/tokens/"+esc(segs[1]), nil, nil); err == nil {
			http.Redirect(w, r, back, http.StatusSeeOther)
		}
	default:
		return errNotFound
	}
	if err != nil {
		return u.refused(r, err, segs[0], action, func(status int, flash formFlash) error {
			return u.userPage(w, r, v, status, flash)
		})
	}
	return nil
}

// tokenCreate issues an access token for one repository pattern and
// shows its secret once; a refusal is returned as it is (userPOST
// answers it).
func (u *UI) tokenCreate(w http.ResponseWriter, r *http.Request, v *visitor, back, name string) error {
	f := r.PostFormValue
	scope := auth.TokenScope{Repository: strings.TrimSpace(f("repository")), Actions: r.PostForm["action"]}
	if scope.Repository == "" {
		scope.Repository = name + "/*"
	}
	days, err := strconv.Atoi(strings.TrimSpace(f("days")))
	if err != nil && strings.TrimSpace(f("days")) != "" {
		return fail(http.StatusBadRequest, "Expiry must be a number of days (0 for never).")
	}
	body := map[string]any{"name": strings.TrimSpace(f("name")), "scopes": []auth.TokenScope{scope}, "expires_in": int64(days) * 86400}
	var out struct {
		Name   string `json:"name"`
		Secret string `json:"secret"`
	}
	if err := u.call(r, v, http.MethodPost, "/api/v1/tokens", body, &out); err != nil {
		return err
	}
	u.showSecret(w, r, v, "Account "+name, "Access token "+out.Name+" created", out.Name, out.Secret, back)
	return nil
}
