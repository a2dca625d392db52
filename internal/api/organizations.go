package api

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
)

// Organizations, their teams and members, as Quay's
// /api/v1/organization endpoints. Repository access is decided by
// auth.Allowed; what is decided here is who administers an organization.
func (a *API) organizationRoutes() {
	a.handle("POST /api/v1/organization/{$}", a.createOrganization)
	a.handle("POST /api/v1/organization", a.createOrganization)
	a.handle("GET /api/v1/organization/{org}", a.getOrganization)
	a.handle("PUT /api/v1/organization/{org}", a.updateOrganization)
	a.handle("DELETE /api/v1/organization/{org}", a.deleteOrganization)
	a.handle("GET /api/v1/organization/{org}/members", a.listOrgMembers)
	a.handle("GET /api/v1/organization/{org}/members/{member}", a.getOrgMember)
	a.handle("DELETE /api/v1/organization/{org}/members/{member}", a.removeOrgMember)
	a.handle("PUT /api/v1/organization/{org}/team/{team}", a.putTeam)
	a.handle("DELETE /api/v1/organization/{org}/team/{team}", a.deleteTeam)
	a.handle("GET /api/v1/organization/{org}/team/{team}/members", a.listTeamMembers)
	a.handle("PUT /api/v1/organization/{org}/team/{team}/members/{member}", a.addTeamMember)
	a.handle("DELETE /api/v1/organization/{org}/team/{team}/members/{member}", a.removeTeamMember)
	a.handle("GET /api/v1/superuser/organizations/{$}", a.superuserOrganizations)
	a.authorizedEmailRoutes()
}

// superuserOrganizations lists every organization with its owners, for
// superusers (Quay's superuser organization list).
func (a *API) superuserOrganizations(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	if err := needSuperuser(id); err != nil {
		return err
	}
	orgs, err := a.db.Orgs.Organizations(r.Context())
	if err != nil {
		return err
	}
	out := make([]map[string]any, 0, len(orgs))
	for _, o := range orgs {
		out = append(out, map[string]any{"name": o.Name, "email": o.Email, "owners": o.Owners})
	}
	writeJSON(w, http.StatusOK, map[string]any{"organizations": out})
	return nil
}

// orgCaller is a caller's standing in an organization.
type orgCaller struct {
	org    meta.Namespace
	member bool // in a team of the organization, or a superuser
	admin  bool // an enabled user in an admin team, or a superuser
}

// orgStanding looks up the organization (404 if there is none by that
// name) and the caller's standing in it. Users and robots are looked up
// by name (an identity from a registry token carries no id); access
// tokens stand nowhere. Only users administer: a robot in an admin team
// acts on repositories, not on the organization.
func (a *API) orgStanding(ctx context.Context, id auth.Identity, org string) (orgCaller, error) {
	ns, err := a.db.Users.NamespaceByName(ctx, org)
	if errors.Is(err, meta.ErrNamespaceNotFound) || (err == nil && ns.Kind != meta.NamespaceOrg) {
		return orgCaller{}, notFound("organization %q not found", org)
	}
	if err != nil {
		return orgCaller{}, err
	}
	c := orgCaller{org: ns}
	if id.Kind == auth.KindUser && id.Superuser {
		c.member, c.admin = true, true
		return c, nil
	}
	if id.Kind != auth.KindUser && id.Kind != auth.KindRobot {
		return c, nil
	}
	u, err := a.db.Users.UserByName(ctx, id.Name)
	if errors.Is(err, meta.ErrUserNotFound) {
		return c, nil
	}
	if err != nil {
		return orgCaller{}, err
	}
	if !u.Enabled || (u.Kind == meta.UserKindRobot) != (id.Kind == auth.KindRobot) {
		return c, nil
	}
	role, err := a.db.Orgs.OrgRole(ctx, org, u.ID)
	if err != nil {
		return orgCaller{}, err
	}
	c.member = role != ""
	c.admin = role == "admin" && u.Kind == meta.UserKindUser
	return c, nil
}

// orgAdmin answers 401 to anonymous callers, 404 for an unknown
// organization and 403 to callers who do not administer it.
func (a *API) orgAdmin(ctx context.Context, id auth.Identity, org string) (orgCaller, error) {
	if err := requireUser(id); err != nil {
		return orgCaller{}, err
	}
	c, err := a.orgStanding(ctx, id, org)
	if err != nil {
		return orgCaller{}, err
	}
	if !c.admin {
		return orgCaller{}, forbidden("%s does not administer organization %s", id.Actor(), org)
	}
	return c, nil
}

func (a *API) createOrganization(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	if err := requireUser(id); err != nil {
		return err
	}
	if id.Kind != auth.KindUser {
		return forbidden("only users create organizations; %s is a %s", id.Actor(), id.Kind)
	}
	var body struct {
		Name  string `json:"name"`
		Email string `json:"email"`
	}
	if err := decode(w, r, &body); err != nil {
		return err
	}
	if err := checkUsername(body.Name); err != nil {
		return badRequest("invalid organization name: %v", err)
	}
	if err := checkEmail(body.Email); err != nil {
		return badRequest("%v", err)
	}
	u, err := a.db.Users.UserByName(r.Context(), id.Name)
	if errors.Is(err, meta.ErrUserNotFound) {
		return forbidden("an organization needs a user account to own it")
	}
	if err != nil {
		return err
	}
	if _, err := a.db.Orgs.CreateOrganization(r.Context(), body.Name, u.ID); errors.Is(err, meta.ErrExists) {
		return badRequest("a user or organization named %q already exists", body.Name)
	} else if errors.Is(err, meta.ErrUserNotFound) { // deleted meanwhile
		return forbidden("an organization needs a user account to own it")
	} else if err != nil {
		return err
	}
	if body.Email != "" {
		if err := a.db.Accounts.SetNamespaceEmail(r.Context(), body.Name, body.Email); err != nil {
			return err
		}
	}
	a.audit(r, id, "org_create", "", body.Name, map[string]string{"namespace": body.Name})
	writeJSON(w, http.StatusCreated, "Created")
	return nil
}

type orgTeamView struct {
	Name        string `json:"name"`
	Role        string `json:"role"`
	Description string `json:"description"`
	MemberCount int    `json:"member_count"`
	CanView     bool   `json:"can_view"`
	IsSynced    bool   `json:"is_synced"`
}

type orgView struct {
	Name     string                 `json:"name"`
	Email    string                 `json:"email"`
	IsAdmin  bool                   `json:"is_admin"`
	IsMember bool                   `json:"is_member"`
	Teams    map[string]orgTeamView `json:"teams,omitempty"`
	// Quotas and QuotaReport (quota.go) are shown to members, as Quay.
	Quotas      *[]quotaView `json:"quotas,omitempty"`
	QuotaReport *quotaReport `json:"quota_report,omitempty"`
}

// orgViewOf is the organization as the caller may see it: its name to
// anyone, membership flags to members and its teams to administrators.
func (a *API) orgViewOf(ctx context.Context, c orgCaller) (orgView, error) {
	v := orgView{Name: c.org.Name, IsAdmin: c.admin, IsMember: c.member}
	if c.member {
		var err error
		var qs []quotaView
		if qs, v.QuotaReport, err = a.orgQuotas(ctx, c.org.Name); err != nil {
			return orgView{}, err
		}
		v.Quotas = &qs
	}
	if !c.admin {
		return v, nil
	}
	ns, err := a.db.Users.NamespaceByName(ctx, c.org.Name)
	if err != nil {
		return orgView{}, err
	}
	v.Email = ns.Email
	teams, err := a.db.Teams.Teams(ctx, c.org.Name)
	if err != nil {
		return orgView{}, err
	}
	counts, err := a.db.Teams.TeamMemberCounts(ctx, c.org.Name)
	if err != nil {
		return orgView{}, err
	}
	v.Teams = make(map[string]orgTeamView, len(teams))
	for _, t := range teams {
		v.Teams[t.Name] = orgTeamView{Name: t.Name, Role: t.Role, Description: t.Description, MemberCount: counts[t.Name], CanView: true}
	}
	return v, nil
}

func (a *API) getOrganization(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	c, err := a.orgStanding(r.Context(), id, r.PathValue("org"))
	if err != nil {
		return err
	}
	v, err := a.orgViewOf(r.Context(), c)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (a *API) updateOrganization(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	c, err := a.orgAdmin(r.Context(), id, r.PathValue("org"))
	if err != nil {
		return err
	}
	var body struct {
		Email *string `json:"email"`
	}
	if err := decode(w, r, &body); err != nil {
		return err
	}
	if body.Email != nil {
		if err := checkEmail(*body.Email); err != nil {
			return badRequest("%v", err)
		}
		if err := a.db.Accounts.SetNamespaceEmail(r.Context(), c.org.Name, *body.Email); err != nil {
			return err
		}
		a.audit(r, id, "org_change_email", "", c.org.Name, map[string]string{"email": *body.Email})
	}
	v, err := a.orgViewOf(r.Context(), c)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (a *API) deleteOrganization(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	org := r.PathValue("org")
	if _, err := a.orgAdmin(r.Context(), id, org); err != nil {
		return err
	}
	err := a.db.Orgs.DeleteOrganization(r.Context(), org)
	switch {
	case errors.Is(err, meta.ErrNamespaceNotEmpty):
		return badRequest("organization %s still has repositories; delete them first", org)
	case errors.Is(err, meta.ErrNamespaceNotFound):
		return notFound("organization %q not found", org)
	case err != nil:
		return err
	}
	a.audit(r, id, "org_delete", "", org, map[string]string{"namespace": org})
	w.WriteHeader(http.StatusNoContent)
	return nil
}

type orgMemberTeam struct {
	Name string `json:"name"`
}

type orgMemberView struct {
	Name         string          `json:"name"`
	Kind         string          `json:"kind"` // user or robot
	Teams        []orgMemberTeam `json:"teams"`
	Repositories []string        `json:"repositories"`
}

func orgMemberViewOf(m meta.OrgMember) orgMemberView {
	v := orgMemberView{Name: m.User.Username, Kind: m.User.Kind, Teams: make([]orgMemberTeam, 0, len(m.Teams)), Repositories: m.Repositories}
	for _, t := range m.Teams {
		v.Teams = append(v.Teams, orgMemberTeam{Name: t})
	}
	return v
}

func (a *API) listOrgMembers(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	c, err := a.orgAdmin(r.Context(), id, r.PathValue("org"))
	if err != nil {
		return err
	}
	members, err := a.db.Orgs.OrgMembers(r.Context(), c.org.Name)
	if err != nil {
		return err
	}
	out := make([]orgMemberView, 0, len(members))
	for _, m := range members {
		out = append(out, orgMemberViewOf(m))
	}
	writeJSON(w, http.StatusOK, map[string]any{"members": out})
	return nil
}

func (a *API) getOrgMember(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	c, err := a.orgAdmin(r.Context(), id, r.PathValue("org"))
	if err != nil {
		return err
	}
	members, err := a.db.Orgs.OrgMembers(r.Context(), c.org.Name)
	if err != nil {
		return err
	}
	name := r.PathValue("member")
	for _, m := range members {
		if m.User.Username == name {
			writeJSON(w, http.StatusOK, orgMemberViewOf(m))
			return nil
		}
	}
	return notFound("%s is not a member of organization %s", name, c.org.Name)
}

// removeMembership removes a member from one team of the organization, or
// from all of them (team ""), and audits it.
func (a *API) removeMembership(r *http.Request, id auth.Identity, org, team, member string) error {
	u, err := a.db.Users.UserByName(r.Context(), member)
	if errors.Is(err, meta.ErrUserNotFound) {
		return notFound("user %q not found", member)
	}
	if err != nil {
		return err
	}
	removed, err := a.db.Orgs.RemoveOrgMember(r.Context(), org, team, u.ID)
	switch {
	case errors.Is(err, meta.ErrLastOwner):
		return badRequest("%s is the last owner of organization %s; add another user to the %s team first", member, org, meta.OwnersTeam)
	case errors.Is(err, meta.ErrTeamNotFound):
		return notFound("team %q not found in organization %s", team, org)
	case errors.Is(err, meta.ErrUserNotFound):
		if team != "" {
			return notFound("%s is not a member of team %s", member, team)
		}
		return notFound("%s is not a member of organization %s", member, org)
	case errors.Is(err, meta.ErrNamespaceNotFound):
		return notFound("organization %q not found", org)
	case err != nil:
		return err
	}
	a.audit(r, id, "team_member_remove", "", org, map[string]any{"member": member, "teams": removed, "from_organization": team == ""})
	return nil
}

func (a *API) removeOrgMember(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	c, err := a.orgAdmin(r.Context(), id, r.PathValue("org"))
	if err != nil {
		return err
	}
	if err := a.removeMembership(r, id, c.org.Name, "", r.PathValue("member")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// Team roles, least to most.
var orgTeamRoles = map[string]bool{"member": true, "creator": true, "admin": true}

// maxTeamDescription caps a team's description.
const maxTeamDescription = 4096

func (a *API) putTeam(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	c, err := a.orgAdmin(r.Context(), id, r.PathValue("org"))
	if err != nil {
		return err
	}
	name := r.PathValue("team")
	if err := checkUsername(name); err != nil {
		return badRequest("invalid team name: %v", err)
	}
	var body struct {
		Name        *string `json:"name"` // Quay's UI sends it; it must match the path
		Role        *string `json:"role"`
		Description *string `json:"description"`
	}
	if err := decode(w, r, &body); err != nil {
		return err
	}
	if body.Name != nil && *body.Name != name {
		return badRequest("team name %q in the body differs from %q in the path", *body.Name, name)
	}
	if body.Role != nil && !orgTeamRoles[*body.Role] {
		return badRequest("unknown team role %q (member, creator, admin)", *body.Role)
	}
	if body.Description != nil && len(*body.Description) > maxTeamDescription {
		return badRequest("team description over %d bytes", maxTeamDescription)
	}
	t, err := a.db.Teams.TeamByName(r.Context(), c.org.Name, name)
	created := errors.Is(err, meta.ErrTeamNotFound)
	if created {
		if err := a.capTeams(r.Context(), c.org.Name); err != nil {
			return err
		}
		t = meta.Team{Name: name, Role: "member"}
	} else if err != nil {
		return err
	}
	if body.Role != nil {
		t.Role = *body.Role
	}
	if body.Description != nil {
		t.Description = *body.Description
	}
	if name == meta.OwnersTeam && t.Role != "admin" {
		return badRequest("the %s team administers the organization; its role stays admin", meta.OwnersTeam)
	}
	t, err = a.db.Teams.PutTeam(r.Context(), c.org.Name, t)
	if errors.Is(err, meta.ErrNamespaceNotFound) { // deleted meanwhile
		return notFound("organization %q not found", c.org.Name)
	}
	if err != nil {
		return err
	}
	a.audit(r, id, "team_change", "", c.org.Name, map[string]any{"team": name, "role": t.Role, "description": t.Description, "created": created})
	writeJSON(w, http.StatusOK, map[string]any{
		"name": t.Name, "role": t.Role, "description": t.Description,
		"can_view": true, "is_synced": false, "new_team": created,
	})
	return nil
}

// maxTeamsPerOrg caps an organization's teams, its owners team included:
// each is listed, and the web UI's organization page asks for each one's
// members.
const maxTeamsPerOrg = 500

// capTeams refuses a new team of an organization that has maxTeamsPerOrg.
// It counts before the insert, not in its transaction: PutTeam is one
// upsert behind the TeamStore interface, which offers no capped insert.
// Concurrent creations may so pass the cap by as many as run at once, a
// bound still (each is an administrator's request).
func (a *API) capTeams(ctx context.Context, org string) error {
	teams, err := a.db.Teams.Teams(ctx, org)
	if err != nil {
		return err
	}
	if len(teams) >= maxTeamsPerOrg {
		return badRequest("organization %s has %d teams, the most it may hold (%d teams): delete one first", org, len(teams), maxTeamsPerOrg)
	}
	return nil
}

func (a *API) deleteTeam(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	c, err := a.orgAdmin(r.Context(), id, r.PathValue("org"))
	if err != nil {
		return err
	}
	name := r.PathValue("team")
	if name == meta.OwnersTeam {
		return badRequest("the %s team cannot be deleted", meta.OwnersTeam)
	}
	if err := a.db.Teams.DeleteTeam(r.Context(), c.org.Name, name); errors.Is(err, meta.ErrTeamNotFound) {
		return notFound("team %q not found in organization %s", name, c.org.Name)
	} else if err != nil {
		return err
	}
	a.audit(r, id, "team_change", "", c.org.Name, map[string]any{"team": name, "deleted": true})
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// teamMemberView is a member of a team as Quay shows it: kind is "user"
// for users and robots alike, is_robot tells them apart.
type teamMemberView struct {
	Name    string `json:"name"`
	Kind    string `json:"kind"`
	IsRobot bool   `json:"is_robot"`
	Invited bool   `json:"invited"`
}

func teamMemberViewOf(u meta.User) teamMemberView {
	return teamMemberView{Name: u.Username, Kind: "user", IsRobot: u.Kind == meta.UserKindRobot}
}

func (a *API) listTeamMembers(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	if err := requireUser(id); err != nil {
		return err
	}
	org, name := r.PathValue("org"), r.PathValue("team")
	c, err := a.orgStanding(r.Context(), id, org)
	if err != nil {
		return err
	}
	if !c.member {
		return forbidden("%s is not a member of organization %s", id.Actor(), org)
	}
	t, err := a.db.Teams.TeamByName(r.Context(), org, name)
	if errors.Is(err, meta.ErrTeamNotFound) {
		return notFound("team %q not found in organization %s", name, org)
	}
	if err != nil {
		return err
	}
	users, err := a.db.Teams.TeamMembers(r.Context(), t.ID)
	if err != nil {
		return err
	}
	// Quay's ViewTeamPermission: the team's own members and the
	// organization's admins (who is in owners is not every member's to
	// know).
	if !c.admin && !slices.ContainsFunc(users, func(u meta.User) bool { return u.Username == id.Name }) {
		return forbidden("%s is not a member of team %s", id.Actor(), name)
	}
	members := make([]teamMemberView, 0, len(users))
	for _, u := range users {
		members = append(members, teamMemberViewOf(u))
	}
	writeJSON(w, http.StatusOK, map[string]any{"name": t.Name, "members": members, "can_edit": c.admin})
	return nil
}

func (a *API) addTeamMember(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	c, err := a.orgAdmin(r.Context(), id, r.PathValue("org"))
	if err != nil {
		return err
	}
	name, member := r.PathValue("team"), r.PathValue("member")
	t, err := a.db.Teams.TeamByName(r.Context(), c.org.Name, name)
	if errors.Is(err, meta.ErrTeamNotFound) {
		return notFound("team %q not found in organization %s", name, c.org.Name)
	}
	if err != nil {
		return err
	}
	u, err := a.db.Users.UserByName(r.Context(), member)
	if errors.Is(err, meta.ErrUserNotFound) {
		return badRequest("unknown user %q", member)
	}
	if err != nil {
		return err
	}
	if u.Kind == meta.UserKindRobot && u.NamespaceID != c.org.ID {
		ns, _, _ := strings.Cut(u.Username, "+")
		return badRequest("robot %s belongs to namespace %s; only robots of %s may join its teams", u.Username, ns, c.org.Name)
	}
	// The team or the member may have been deleted since: answered as if
	// the request came after.
	switch err := a.db.Teams.AddTeamMember(r.Context(), t.ID, u.ID); {
	case errors.Is(err, meta.ErrTeamNotFound):
		return notFound("team %q not found in organization %s", name, c.org.Name)
	case errors.Is(err, meta.ErrUserNotFound):
		return badRequest("unknown user %q", member)
	case err != nil:
		return err
	}
	a.audit(r, id, "team_member_add", "", c.org.Name, map[string]string{"member": u.Username, "team": t.Name})
	writeJSON(w, http.StatusOK, teamMemberViewOf(u))
	return nil
}

func (a *API) removeTeamMember(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	c, err := a.orgAdmin(r.Context(), id, r.PathValue("org"))
	if err != nil {
		return err
	}
	if err := a.removeMembership(r, id, c.org.Name, r.PathValue("team"), r.PathValue("member")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
