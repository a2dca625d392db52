package web

import (
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// The organization page (/organization/{org}, Quay's path) shows an
// organization to its members: its teams with their members and roles,
// its members and its robots to its admins, who create, regenerate and
// delete robots and manage teams there. Every read and action is an API
// request as the visitor (apicall.go): the API decides, validates and
// audits.

type orgTeam struct {
	Name        string `json:"name"`
	Role        string `json:"role"`
	Description string `json:"description"`
	MemberCount int    `json:"member_count"`
	Members     []teamMember
}

type teamMember struct {
	Name    string `json:"name"`
	IsRobot bool   `json:"is_robot"`
}

type orgMember struct {
	Name  string `json:"name"`
	Kind  string `json:"kind"`
	Teams []struct {
		Name string `json:"name"`
	} `json:"teams"`
	Repositories []string `json:"repositories"`
}

// orgQuota is the API's view of an organization's quota.
type orgQuota struct {
	ID         int64  `json:"id"`
	LimitBytes int64  `json:"limit_bytes"`
	Limit      string `json:"limit"`
	Limits     []struct {
		ID      int64  `json:"id"`
		Type    string `json:"type"`
		Percent int    `json:"limit_percent"`
	} `json:"limits"`
}

type robot struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Created     string `json:"created"`
	Token       string `json:"token"`
}

// orgTeamRoles are the roles a team may hold (the API checks them).
var orgTeamRoles = []string{"member", "creator", "admin"}

func (u *UI) organization(w http.ResponseWriter, r *http.Request, v *visitor) error {
	return u.organizationPage(w, r, v, http.StatusOK, formFlash{})
}

// organizationPage renders the organization page, with a refused form's
// flash.
func (u *UI) organizationPage(w http.ResponseWriter, r *http.Request, v *visitor, status int, flash formFlash) error {
	org := r.PathValue("org")
	var ov struct {
		Name     string             `json:"name"`
		Email    string             `json:"email"`
		IsAdmin  bool               `json:"is_admin"`
		IsMember bool               `json:"is_member"`
		Teams    map[string]orgTeam `json:"teams"`
		Quotas   []orgQuota         `json:"quotas"`
		Report   *struct {
			Used int64 `json:"quota_bytes"`
		} `json:"quota_report"`
	}
	if err := u.call(r, v, http.MethodGet, "/api/v1/organization/"+esc(org), nil, &ov); err != nil {
		return pageError(err)
	}
	if !ov.IsMember {
		return errNotFound // its name is all a non-member could see
	}
	base := "/api/v1/organization/" + esc(org)
	data := map[string]any{"Org": ov.Name, "Email": ov.Email, "IsAdmin": ov.IsAdmin, "Roles": orgTeamRoles, "Path": "/organization/" + esc(org),
		"CSRF": v.csrf, "Super": v.id.Superuser, "Flash": flash}
	if ov.Report != nil {
		data["Used"] = ov.Report.Used
	}
	if len(ov.Quotas) > 0 {
		q := ov.Quotas[0]
		sort.Slice(q.Limits, func(i, j int) bool { return q.Limits[i].Percent < q.Limits[j].Percent })
		data["Quota"] = q
		if ov.Report != nil && q.LimitBytes > 0 {
			data["Percent"] = float64(ov.Report.Used) * 100 / float64(q.LimitBytes)
		}
	}
	if err := u.namespaceRepos(r, v, org, data); err != nil {
		return pageError(err)
	}
	if ov.IsAdmin {
		var teams []orgTeam
		for _, t := range ov.Teams {
			var tm struct {
				Members []teamMember `json:"members"`
			}
			if err := u.call(r, v, http.MethodGet, base+"/team/"+esc(t.Name)+"/members", nil, &tm); err != nil {
				return pageError(err)
			}
			t.Members = tm.Members
			teams = append(teams, t)
		}
		sort.Slice(teams, func(i, j int) bool { return teams[i].Name < teams[j].Name })
		var members struct {
			Members []orgMember `json:"members"`
		}
		if err := u.call(r, v, http.MethodGet, base+"/members", nil, &members); err != nil {
			return pageError(err)
		}
		var robots struct {
			Robots []robot `json:"robots"`
		}
		if err := u.call(r, v, http.MethodGet, base+"/robots", nil, &robots); err != nil {
			return pageError(err)
		}
		data["Teams"], data["Members"], data["Robots"] = teams, members.Members, robots.Robots
	}
	u.render(w, r, v, status, "organization", "Organization "+org, data)
	return nil
}

// namespaceRepos puts a page of a namespace's repositories that the
// visitor may read in data (Repositories), as the API lists them (one
// request: 100 at most, and at most 1,000 rows read), with the API's
// next_page as ReposNext and the page's own (?repos_after=) as
// ReposAfter.
func (u *UI) namespaceRepos(r *http.Request, v *visitor, ns string, data map[string]any) error {
	var repos struct {
		Repositories []struct {
			Name     string `json:"name"`
			IsPublic bool   `json:"is_public"`
		} `json:"repositories"`
		NextPage string `json:"next_page"`
	}
	path := "/api/v1/repository?namespace=" + url.QueryEscape(ns)
	after := r.URL.Query().Get("repos_after")
	if after != "" {
		path += "&next_page=" + url.QueryEscape(after)
	}
	if err := u.call(r, v, http.MethodGet, path, nil, &repos); err != nil {
		return err
	}
	data["Repositories"], data["ReposNext"], data["ReposAfter"] = repos.Repositories, repos.NextPage, after
	return nil
}

// organizationPOST routes the organization page's actions. A refusal
// the visitor can fix renders the page again with the message and the
// form as typed.
func (u *UI) organizationPOST(w http.ResponseWriter, r *http.Request, v *visitor) error {
	org := r.PathValue("org")
	base := "/api/v1/organization/" + esc(org)
	back := "/organization/" + esc(org)
	action := r.PathValue("action")
	segs := strings.Split(action, "/")
	form := r.PostFormValue
	var err error
	shown := false // the action answered (a secret's page)
	switch {
	case len(segs) == 2 && segs[0] == "robots" && segs[1] == "create":
		err, shown = u.robotCreate(w, r, v, base+"/robots/", back, "Organization "+org), true
	case len(segs) == 3 && segs[0] == "robots" && segs[2] == "regenerate":
		err, shown = u.robotRegenerate(w, r, v, base+"/robots/", segs[1], back, "Organization "+org), true
	case len(segs) == 3 && segs[0] == "robots" && segs[2] == "delete":
		err = u.call(r, v, http.MethodDelete, base+"/robots/"+esc(segs[1]), nil, nil)
	case len(segs) == 2 && segs[0] == "teams" && segs[1] == "save":
		role, desc := form("role"), form("description")
		err = u.call(r, v, http.MethodPut, base+"/team/"+esc(strings.TrimSpace(form("team"))), map[string]*string{"role": &role, "description": &desc}, nil)
	case len(segs) == 3 && segs[0] == "teams" && segs[2] == "delete":
		err = u.call(r, v, http.MethodDelete, base+"/team/"+esc(segs[1]), nil, nil)
	case len(segs) == 3 && segs[0] == "teams" && segs[2] == "add-member":
		err = u.call(r, v, http.MethodPut, base+"/team/"+esc(segs[1])+"/members/"+esc(strings.TrimSpace(form("member"))), nil, nil)
	case len(segs) == 5 && segs[0] == "teams" && segs[2] == "members" && segs[4] == "remove":
		err = u.call(r, v, http.MethodDelete, base+"/team/"+esc(segs[1])+"/members/"+esc(segs[3]), nil, nil)
	case len(segs) == 1 && segs[0] == "quota":
		// Create the quota or change its size (superusers; the API says so
		// to anyone else).
		limit := strings.TrimSpace(form("limit"))
		if limit == "" {
			err = fail(http.StatusBadRequest, "Give the quota's size, such as 10 GiB.")
			break
		}
		body := map[string]string{"limit": limit}
		if id := form("quota"); id != "" {
			err = u.call(r, v, http.MethodPut, base+"/quota/"+esc(id), body, nil)
		} else {
			err = u.call(r, v, http.MethodPost, base+"/quota", body, nil)
		}
	case len(segs) == 3 && segs[0] == "quota" && segs[2] == "delete":
		err = u.call(r, v, http.MethodDelete, base+"/quota/"+esc(segs[1]), nil, nil)
	case len(segs) == 3 && segs[0] == "quota" && segs[2] == "limits":
		pct, perr := strconv.Atoi(strings.TrimSpace(form("percent")))
		if perr != nil {
			err = fail(http.StatusBadRequest, "A limit's threshold is a whole percentage, 1 to 100.")
			break
		}
		err = u.call(r, v, http.MethodPost, base+"/quota/"+esc(segs[1])+"/limit", map[string]any{"type": form("type"), "threshold_percent": pct}, nil)
	case len(segs) == 5 && segs[0] == "quota" && segs[2] == "limits" && segs[4] == "delete":
		err = u.call(r, v, http.MethodDelete, base+"/quota/"+esc(segs[1])+"/limit/"+esc(segs[3]), nil, nil)
	case len(segs) == 3 && segs[0] == "members" && segs[2] == "remove":
		err = u.call(r, v, http.MethodDelete, base+"/members/"+esc(segs[1]), nil, nil)
	default:
		return errNotFound
	}
	if err != nil {
		return u.refused(r, err, segs[0], action, func(status int, flash formFlash) error {
			return u.organizationPage(w, r, v, status, flash)
		})
	}
	if !shown {
		http.Redirect(w, r, back, http.StatusSeeOther)
	}
	return nil
}

// robotCreate creates a robot and shows its token, this once: the answer
// is not cached (Cache-Control: no-store), and no later page shows it. A
// refusal is returned as it is, for the caller to answer (refused).
func (u *UI) robotCreate(w http.ResponseWriter, r *http.Request, v *visitor, base, back, title string) error {
	short := strings.TrimSpace(r.PostFormValue("name"))
	if short == "" {
		return fail(http.StatusBadRequest, "A robot needs a name.")
	}
	var rb robot
	if err := u.call(r, v, http.MethodPut, base+esc(short), map[string]string{"description": r.PostFormValue("description")}, &rb); err != nil {
		return err
	}
	u.showSecret(w, r, v, title, "Robot "+rb.Name+" created", rb.Name, rb.Token, back)
	return nil
}

func (u *UI) robotRegenerate(w http.ResponseWriter, r *http.Request, v *visitor, base, short, back, title string) error {
	var rb robot
	if err := u.call(r, v, http.MethodPost, base+esc(short)+"/regenerate", nil, &rb); err != nil {
		return err
	}
	u.showSecret(w, r, v, title, "New token of robot "+rb.Name+" (the old one no longer works)", rb.Name, rb.Token, back)
	return nil
}

// showSecret renders a secret once.
func (u *UI) showSecret(w http.ResponseWriter, r *http.Request, v *visitor, title, heading, name, secret, back string) {
	u.render(w, r, v, http.StatusOK, "secret", title, map[string]any{"Heading": heading, "Name": name, "Secret": secret,
		"Back": back, "Registry": u.opts.Registry})
}
