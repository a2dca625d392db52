package web

import (
	"encoding/json"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/gate"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/notify"
)

// The settings page (/repository/{repo}/settings) is a repository's
// configuration for its admins: visibility, notifications, mirror, gate,
// tag policies and permissions. Each section reads the API's endpoint and
// each form is one API request as the visitor (apicall.go), so the API's
// permission decision (admin), validation and audit entries apply
// unchanged; a refusal is shown on the page with the API's message.

type notificationView struct {
	UUID             string         `json:"uuid"`
	Title            string         `json:"title"`
	Event            string         `json:"event"`
	Method           string         `json:"method"`
	Config           map[string]any `json:"config"`
	NumberOfFailures int            `json:"number_of_failures"`
	Disabled         bool           `json:"disabled"`
	DisabledReason   string         `json:"disabled_reason"`
}

// Target is where the notification goes (its URL or address).
func (n notificationView) Target() string {
	for _, k := range []string{"url", "email"} {
		if s, ok := n.Config[k].(string); ok {
			return s
		}
	}
	return ""
}

type policyView struct {
	UUID              string `json:"uuid"`
	Method            string `json:"method"`
	Value             any    `json:"value"`
	TagPattern        string `json:"tagPattern"`
	TagPatternMatches bool   `json:"tagPatternMatches"`
}

type permView struct {
	Name    string `json:"name"`
	Role    string `json:"role"`
	IsRobot *bool  `json:"is_robot"`
}

type mirrorView struct {
	Enabled           bool   `json:"is_enabled"`
	ExternalReference string `json:"external_reference"`
	SyncInterval      int64  `json:"sync_interval"`
	SyncStatus        string `json:"sync_status"`
	NextSync          string `json:"next_sync_date"`
	LastError         string `json:"last_error"`
	RootRule          struct {
		Kind  string   `json:"rule_kind"`
		Value []string `json:"rule_value"`
	} `json:"root_rule"`
	Robot string `json:"robot_username"`
}

type gateView struct {
	gate.Config
	KeyIDs []string `json:"key_ids"`
}

// optional runs a GET whose 404 (nothing configured) or 501 (feature
// off) is an absent section, reported as (false, nil).
func (u *UI) optional(r *http.Request, v *visitor, path string, out any) (bool, error) {
	err := u.call(r, v, http.MethodGet, path, nil, out)
	if e, ok := err.(*apiError); ok && (e.Status == http.StatusNotFound || e.Status == http.StatusNotImplemented) {
		return false, nil
	}
	return err == nil, err
}

func (u *UI) settings(w http.ResponseWriter, r *http.Request, v *visitor, repo string, status int, flash formFlash) error {
	// Decide before reading the description, whose quota_report adds up
	// the repository's usage: a refusal costs no such sum. Who may not
	// read the repository learns nothing of it (not found).
	if ok, err := u.allowed(r.Context(), v, repo, auth.ActionAdmin); err != nil {
		return err
	} else if !ok {
		if _, err := u.readable(r.Context(), v, repo); err != nil {
			return err
		}
		return fail(http.StatusForbidden, "Only the admins of %s see its settings.", repo)
	}
	var info struct {
		IsPublic    bool   `json:"is_public"`
		CanAdmin    bool   `json:"can_admin"`
		Description string `json:"description"`
	}
	if err := u.call(r, v, http.MethodGet, repoAPI(repo), nil, &info); err != nil {
		return pageError(err)
	}
	if !info.CanAdmin {
		return fail(http.StatusForbidden, "Only the admins of %s see its settings.", repo)
	}
	if kept := flash.Kept("description"); kept != nil {
		info.Description = kept.Get("description") // the text refused, not the stored one
	}
	data := map[string]any{"Repo": repo, "Path": repoPath(repo), "Action": actionPath(repo), "Public": info.IsPublic, "Description": info.Description, "Flash": flash,
		"Events": notificationEvents(), "Roles": []string{"read", "write", "admin"}}
	var ns struct {
		Notifications []notificationView `json:"notifications"`
	}
	if _, err := u.optional(r, v, repoAPI(repo, "notification/"), &ns); err != nil {
		return pageError(err)
	}
	data["Notifications"] = ns.Notifications
	var m mirrorView
	if ok, err := u.optional(r, v, repoAPI(repo, "mirror"), &m); err != nil {
		return pageError(err)
	} else if ok {
		data["Mirror"] = m
	}
	var g gateView
	if ok, err := u.optional(r, v, repoAPI(repo, "gate"), &g); err != nil {
		return pageError(err)
	} else if ok {
		data["Gate"] = g
	}
	gateForm := g.Config
	if flash.Gate != nil {
		gateForm = *flash.Gate
	}
	data["GateForm"] = map[string]string{"Tags": strings.Join(gateForm.Tags, ", "), "Policy": gateForm.Policy,
		"Checks": strings.Join(gateForm.RequiredChecks, ", ")}
	for key, seg := range map[string]string{"Prune": "autoprunepolicy/", "Immutable": "immutabilitypolicy/"} {
		var ps struct {
			Policies []policyView `json:"policies"`
		}
		if _, err := u.optional(r, v, repoAPI(repo, seg), &ps); err != nil {
			return pageError(err)
		}
		data[key] = ps.Policies
	}
	var perms []struct {
		Kind string
		permView
	}
	for _, kind := range []string{"user", "team"} {
		var ps struct {
			Permissions map[string]permView `json:"permissions"`
		}
		if err := u.call(r, v, http.MethodGet, repoAPI(repo, "permissions", kind, ""), nil, &ps); err != nil {
			return pageError(err)
		}
		for _, p := range ps.Permissions {
			k := kind
			if p.IsRobot != nil && *p.IsRobot {
				k = "robot"
			}
			perms = append(perms, struct {
				Kind string
				permView
			}{k, p})
		}
	}
	sort.Slice(perms, func(i, j int) bool { return perms[i].Kind+perms[i].Name < perms[j].Kind+perms[j].Name })
	data["Permissions"] = perms
	u.render(w, r, v, status, "settings", "Settings of "+repo, data)
	return nil
}

func notificationEvents() []string {
	var out []string
	for e := range notify.Events {
		if notify.CanHear(meta.ScopeRepository, e) { // not repo_created or repo_deleted
			out = append(out, e)
		}
	}
	sort.Strings(out)
	return out
}

// settingsPOST runs one settings form as an API request. A refusal the
// visitor can fix (400, 409, 422) re-renders the page with the API's message in
// the section and the form as it was typed (refused); others are answered
// as errors.
func (u *UI) settingsPOST(w http.ResponseWriter, r *http.Request, v *visitor, repo, action string) error {
	if _, err := u.readable(r.Context(), v, repo); err != nil {
		return err // those who may not read it learn nothing
	}
	f := func(k string) string { return strings.TrimSpace(r.PostFormValue(k)) }
	segs := strings.Split(action, "/")
	section := segs[0]
	var flash formFlash
	var err error
	switch {
	case action == "visibility":
		err = u.call(r, v, http.MethodPost, repoAPI(repo, "changevisibility"), map[string]string{"visibility": f("visibility")}, nil)
	case action == "description":
		err = u.call(r, v, http.MethodPut, repoAPI(repo), map[string]string{"description": r.PostFormValue("description")}, nil)
	case action == "delete":
		// The name typed again, as a person confirms what cannot be undone.
		if f("confirm") != repo {
			err = &apiError{Status: http.StatusBadRequest, Message: "Type the repository's full name, " + repo + ", to delete it."}
			break
		}
		if err = u.call(r, v, http.MethodDelete, repoAPI(repo), nil, nil); err == nil {
			http.Redirect(w, r, "/repository", http.StatusSeeOther)
			return nil
		}
	case action == "notifications/create":
		var in map[string]any
		if in, err = notificationInput(r); err == nil {
			err = u.call(r, v, http.MethodPost, repoAPI(repo, "notification/"), in, nil)
		}
	case len(segs) == 3 && segs[0] == "notifications" && (segs[2] == "reset" || segs[2] == "test" || segs[2] == "delete"):
		method, path := http.MethodPost, repoAPI(repo, "notification", esc(segs[1]))
		switch segs[2] {
		case "test":
			path += "/test"
		case "delete":
			method = http.MethodDelete
		}
		err = u.call(r, v, method, path, nil, nil)
	case action == "mirror":
		err = u.updateMirror(r, v, repo)
	case action == "gate":
		cfg := gateFromForm(r)
		var cur gateView
		if _, err = u.optional(r, v, repoAPI(repo, "gate"), &cur); err == nil {
			cfg.Keys, cfg.Checkers, cfg.RollbackTag, cfg.ScanSeverity = cur.Keys, cur.Checkers, cur.RollbackTag, cur.ScanSeverity
			err = u.call(r, v, http.MethodPut, repoAPI(repo, "gate"), cfg, nil)
		}
		flash.Gate = &cfg
	case action == "gate/delete":
		err = u.call(r, v, http.MethodDelete, repoAPI(repo, "gate"), nil, nil)
	case len(segs) == 3 && segs[0] == "policies" && segs[2] == "create":
		err = u.createPolicy(r, v, repo, segs[1])
	case len(segs) == 4 && segs[0] == "policies" && segs[3] == "delete" && (segs[1] == "autoprunepolicy" || segs[1] == "immutabilitypolicy"):
		err = u.call(r, v, http.MethodDelete, repoAPI(repo, segs[1], esc(segs[2])), nil, nil)
	case len(segs) == 2 && segs[0] == "permissions" && (segs[1] == "user" || segs[1] == "team"):
		if f("name") == "" {
			err = &apiError{Status: http.StatusBadRequest, Message: "Name the " + map[string]string{"user": "user or robot", "team": "team"}[segs[1]] + " to grant the role to."}
			break
		}
		err = u.call(r, v, http.MethodPut, repoAPI(repo, "permissions", segs[1], esc(f("name"))), map[string]string{"role": f("role")}, nil)
	case len(segs) == 4 && segs[0] == "permissions" && segs[3] == "delete" && (segs[1] == "user" || segs[1] == "team"):
		err = u.call(r, v, http.MethodDelete, repoAPI(repo, "permissions", segs[1], esc(segs[2])), nil, nil)
	default:
		return errNotFound
	}
	if err != nil {
		return u.refused(r, err, section, action, func(status int, f formFlash) error {
			f.Gate = flash.Gate
			return u.settings(w, r, v, repo, status, f)
		})
	}
	http.Redirect(w, r, repoPath(repo)+"/settings#"+section, http.StatusSeeOther)
	return nil
}

// notificationInput is the API's notification body from the form: the
// target goes to the method's field (url, or email for the email
// method); an optional JSON object adds more configuration (headers, a
// signing secret, a format). Extra configuration that is not a JSON
// object is refused here (400; the settings page shows why), as the API
// would take any field it is sent.
func notificationInput(r *http.Request) (map[string]any, error) {
	f := func(k string) string { return strings.TrimSpace(r.PostFormValue(k)) }
	cfg := map[string]any{}
	if extra := f("config"); extra != "" {
		// "null" decodes without an error into a nil map: not an object.
		if err := json.Unmarshal([]byte(extra), &cfg); err != nil || cfg == nil {
			return nil, &apiError{Status: http.StatusBadRequest, Message: "The extra configuration is not a JSON object: write it as {\"name\": value, ...}."}
		}
	}
	key := "url"
	if f("method") == "email" {
		key = "email"
	}
	if t := f("target"); t != "" {
		cfg[key] = t
	}
	return map[string]any{"event": f("event"), "method": f("method"), "title": f("title"), "config": cfg}, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func gateFromForm(r *http.Request) gate.Config {
	return gate.Config{Tags: splitList(r.PostFormValue("tags")), Policy: strings.TrimSpace(r.PostFormValue("policy")),
		RequiredChecks: splitList(r.PostFormValue("checks"))}
}

// updateMirror changes a mirror's schedule and tag filter (PUT keeps the
// fields it is not sent).
func (u *UI) updateMirror(r *http.Request, v *visitor, repo string) error {
	body := map[string]any{}
	if s := strings.TrimSpace(r.PostFormValue("interval")); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return &apiError{http.StatusBadRequest, "The sync interval is a whole number of seconds."}
		}
		body["sync_interval"] = n
	}
	body["root_rule"] = map[string]any{"rule_kind": "tag_glob_csv", "rule_value": splitList(r.PostFormValue("tags"))}
	body["is_enabled"] = r.PostFormValue("enabled") == "on"
	return u.call(r, v, http.MethodPut, repoAPI(repo, "mirror"), body, nil)
}

func (u *UI) createPolicy(r *http.Request, v *visitor, repo, seg string) error {
	f := func(k string) string { return strings.TrimSpace(r.PostFormValue(k)) }
	matches := f("matches") != "no"
	body := map[string]any{"tagPattern": f("pattern"), "tagPatternMatches": matches}
	switch seg {
	case "immutabilitypolicy":
	case "autoprunepolicy":
		body["method"] = f("method")
		if n, err := strconv.Atoi(f("value")); err == nil {
			body["value"] = n
		} else {
			body["value"] = f("value")
		}
	default:
		return &apiError{http.StatusNotFound, "no such policy kind"}
	}
	return u.call(r, v, http.MethodPost, repoAPI(repo, seg+"/"), body, nil)
}
