package meta

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// CreateOrganization creates an organization whose owners team holds the
// creator. ErrExists: the name is taken; ErrUserNotFound: the creator was
// deleted meanwhile.
func (db Organizations) CreateOrganization(ctx context.Context, name string, ownerID int64) (Namespace, error) {
	ns := Namespace{Name: name, Kind: NamespaceOrg}
	err := db.tx(ctx, func(tx *sql.Tx) error {
		id, err := db.createOrganization(ctx, tx, name, ownerID)
		ns.ID = id
		return err
	})
	return ns, err
}

// OrgMembers lists an organization's team members (users and robots) with
// their teams and their direct permissions on the organization's
// repositories, ordered by username.
func (db Organizations) OrgMembers(ctx context.Context, org string) ([]OrgMember, error) {
	rows, err := db.read.QueryContext(ctx, db.q(`SELECT `+prefixedUserColumns+`, t.name FROM team_members m
		JOIN teams t ON t.id = m.team_id JOIN namespaces n ON n.id = t.namespace_id JOIN users u ON u.id = m.user_id
		WHERE n.name = ? ORDER BY u.username, t.name`), org)
	if err != nil {
		return nil, fmt.Errorf("list organization members: %w", err)
	}
	defer rows.Close()
	out := []OrgMember{}
	index := map[string]int{}
	member := func(u User) *OrgMember { // the member's entry, made on first sight
		i, ok := index[u.Username]
		if !ok {
			i = len(out)
			index[u.Username] = i
			out = append(out, OrgMember{User: u, Teams: []string{}, Repositories: []string{}})
		}
		return &out[i]
	}
	for rows.Next() {
		var team string
		u, err := scanUser(scanWith{rows, []any{&team}})
		if err != nil {
			return nil, err
		}
		m := member(u)
		m.Teams = append(m.Teams, team)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows.Close()
	// Users granted repositories of the organization directly are members
	// too, as in Quay, if in no team (so that an admin sees, and can
	// remove, a former team member who kept the repository it pushed).
	perms, err := db.read.QueryContext(ctx, db.q(`SELECT `+prefixedUserColumns+`, r.name FROM repository_permissions p
		JOIN users u ON u.id = p.user_id JOIN repositories r ON r.id = p.repository_id
		WHERE r.name LIKE CAST(? AS TEXT) ESCAPE '\' ORDER BY u.username, r.name`), likePrefix(org+"/"))
	if err != nil {
		return nil, fmt.Errorf("list organization member permissions: %w", err)
	}
	defer perms.Close()
	for perms.Next() {
		var repo string
		u, err := scanUser(scanWith{perms, []any{&repo}})
		if err != nil {
			return nil, err
		}
		m := member(u)
		m.Repositories = append(m.Repositories, repo)
	}
	if err := perms.Err(); err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b OrgMember) int { return strings.Compare(a.User.Username, b.User.Username) })
	return out, nil
}

// TeamMemberCounts returns the number of members of each team of an
// organization, by team name.
func (db Organizations) TeamMemberCounts(ctx context.Context, org string) (map[string]int, error) {
	rows, err := db.read.QueryContext(ctx, db.q(`SELECT t.name, COUNT(m.user_id) FROM teams t JOIN namespaces n ON n.id = t.namespace_id
		LEFT JOIN team_members m ON m.team_id = t.id WHERE n.name = ? GROUP BY t.name`), org)
	if err != nil {
		return nil, fmt.Errorf("count team members: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var name string
		var n int
		if err := rows.Scan(&name, &n); err != nil {
			return nil, err
		}
		out[name] = n
	}
	return out, rows.Err()
}

// RemoveOrgMember removes a user or robot from one team of an organization
// (team), or from all of them and from its direct permissions on the
// organization's repositories (team ""). It returns the teams it was
// removed from. It refuses (ErrLastOwner) to leave the owners team without
// an enabled user; concurrent removals are serialized on the
// organization's row so that two cannot each remove "the other" owner.
// ErrTeamNotFound: no such team; ErrUserNotFound: not a member.
func (db Organizations) RemoveOrgMember(ctx context.Context, org, team string, userID int64) ([]string, error) {
	var removed []string
	err := db.tx(ctx, func(tx *sql.Tx) error {
		nsID, err := db.orgIDTx(ctx, tx, org)
		if err != nil {
			return err
		}
		if team != "" {
			var id int64
			err := tx.QueryRowContext(ctx, db.q("SELECT id FROM teams WHERE namespace_id = ? AND name = ?"), nsID, team).Scan(&id)
			if errors.Is(err, sql.ErrNoRows) {
				return ErrTeamNotFound
			}
			if err != nil {
				return fmt.Errorf("look up team: %w", err)
			}
		}
		query := "SELECT t.name FROM teams t JOIN team_members m ON m.team_id = t.id WHERE t.namespace_id = ? AND m.user_id = ?"
		args := []any{nsID, userID}
		if team != "" {
			query += " AND t.name = ?"
			args = append(args, team)
		}
		rows, err := tx.QueryContext(ctx, db.q(query+" ORDER BY t.name"), args...)
		if err != nil {
			return fmt.Errorf("member teams: %w", err)
		}
		removed, err = scanStrings(rows)
		if err != nil {
			return err
		}
		if len(removed) == 0 && team == "" {
			// In no team, but perhaps still granted repositories of the
			// organization directly (a creator team's member who pushed
			// one, removed from the team since): those go.
			var direct int
			if err := tx.QueryRowContext(ctx, db.q(`SELECT COUNT(*) FROM repository_permissions WHERE user_id = ? AND repository_id IN
				(SELECT id FROM repositories WHERE name LIKE CAST(? AS TEXT) ESCAPE '\')`), userID, likePrefix(org+"/")).Scan(&direct); err != nil {
				return fmt.Errorf("member permissions: %w", err)
			}
			if direct == 0 {
				return fmt.Errorf("%w: not a member", ErrUserNotFound)
			}
		} else if len(removed) == 0 {
			return fmt.Errorf("%w: not a member", ErrUserNotFound)
		}
		for _, t := range removed {
			if t != OwnersTeam {
				continue
			}
			var others int
			if err := tx.QueryRowContext(ctx, db.q(`SELECT COUNT(*) FROM team_members m JOIN teams t ON t.id = m.team_id JOIN users u ON u.id = m.user_id
				WHERE t.namespace_id = ? AND t.name = ? AND m.user_id <> ? AND u.kind = ? AND u.enabled = 1`),
				nsID, OwnersTeam, userID, UserKindUser).Scan(&others); err != nil {
				return fmt.Errorf("count owners: %w", err)
			}
			if others == 0 {
				return ErrLastOwner
			}
		}
		del := "DELETE FROM team_members WHERE user_id = ? AND team_id IN (SELECT id FROM teams WHERE namespace_id = ?"
		args = []any{userID, nsID}
		if team != "" {
			del += " AND name = ?"
			args = append(args, team)
		}
		if _, err := tx.ExecContext(ctx, db.q(del+")"), args...); err != nil {
			return fmt.Errorf("remove team member: %w", err)
		}
		if team == "" {
			if _, err := tx.ExecContext(ctx, db.q(`DELETE FROM repository_permissions WHERE user_id = ? AND repository_id IN
				(SELECT id FROM repositories WHERE name LIKE CAST(? AS TEXT) ESCAPE '\')`), userID, likePrefix(org+"/")); err != nil {
				return fmt.Errorf("remove member permissions: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return removed, nil
}

// DeleteOrganization deletes an organization with its teams and robots
// (and, through them, their memberships, permissions and access tokens),
// its notifications, and the scopes of access tokens within it.
// It refuses with ErrNamespaceNotEmpty while repositories remain, and
// answers ErrNamespaceNotFound for a name that is not an organization.
// The repositories are counted once the organization's row is locked: a
// create or push making one holds the row (holdNamespace) until it
// commits, so the count sees it.
func (db Organizations) DeleteOrganization(ctx context.Context, name string) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		id, err := db.orgIDTx(ctx, tx, name)
		if err != nil {
			return err
		}
		var n int
		if err := tx.QueryRowContext(ctx, db.q("SELECT COUNT(*) FROM repositories WHERE name LIKE CAST(? AS TEXT) ESCAPE '\\'"), likePrefix(name+"/")).Scan(&n); err != nil {
			return fmt.Errorf("count repositories: %w", err)
		}
		if n > 0 {
			return fmt.Errorf("%w: %s has %d", ErrNamespaceNotEmpty, name, n)
		}
		if _, err := tx.ExecContext(ctx, db.q("DELETE FROM namespaces WHERE id = ?"), id); err != nil {
			return fmt.Errorf("delete organization: %w", err)
		}
		if _, err := tx.ExecContext(ctx, db.q(`DELETE FROM authorized_emails WHERE scope = ? AND target = ?
			OR scope = ? AND target LIKE CAST(? AS TEXT) ESCAPE '\'`), ScopeOrganization, name, ScopeRepository, likePrefix(name+"/")); err != nil {
			return fmt.Errorf("delete the organization's authorized e-mails: %w", err)
		}
		return db.forgetNamespace(ctx, tx, name)
	})
}

// forgetNamespace deletes what names a namespace rather than referring to
// its row, which would otherwise pass to whoever creates the name next:
// its notifications (and any left of its repositories), and the access
// tokens' scopes within it.
func (db *core) forgetNamespace(ctx context.Context, tx *sql.Tx, name string) error {
	if _, err := tx.ExecContext(ctx, db.q(`DELETE FROM notifications WHERE scope = ? AND target = ?
		OR scope = ? AND target LIKE CAST(? AS TEXT) ESCAPE '\'`), ScopeOrganization, name, ScopeRepository, likePrefix(name+"/")); err != nil {
		return fmt.Errorf("delete the namespace's notifications: %w", err)
	}
	return db.dropTokenScopes(ctx, tx, name)
}

// dropTokenScopes removes from every access token the scopes within a
// namespace ("ns/*", "ns/app", "ns/team/*"), and revokes a token left
// with none.
func (db *core) dropTokenScopes(ctx context.Context, tx *sql.Tx, namespace string) error {
	rows, err := tx.QueryContext(ctx, db.q("SELECT id, scopes FROM access_tokens WHERE revoked_at = 0 AND scopes LIKE CAST(? AS TEXT) ESCAPE '\\'"),
		"%"+likePrefix(`"`+namespace+"/"))
	if err != nil {
		return fmt.Errorf("read access tokens: %w", err)
	}
	type token struct {
		id     int64
		scopes string
	}
	var toks []token
	for rows.Next() {
		var t token
		if err := rows.Scan(&t.id, &t.scopes); err != nil {
			rows.Close()
			return fmt.Errorf("read access tokens: %w", err)
		}
		toks = append(toks, t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read access tokens: %w", err)
	}
	for _, t := range toks {
		var scopes []json.RawMessage
		if err := json.Unmarshal([]byte(t.scopes), &scopes); err != nil {
			return fmt.Errorf("access token %d: scopes: %w", t.id, err)
		}
		kept := scopes[:0]
		for _, raw := range scopes {
			var sc struct {
				Repository string `json:"repository"`
			}
			if json.Unmarshal(raw, &sc) == nil && strings.HasPrefix(sc.Repository, namespace+"/") {
				continue
			}
			kept = append(kept, raw)
		}
		if len(kept) == len(scopes) {
			continue
		}
		if len(kept) == 0 {
			if _, err := tx.ExecContext(ctx, db.q("UPDATE access_tokens SET revoked_at = ? WHERE id = ?"), db.now(), t.id); err != nil {
				return fmt.Errorf("revoke access token: %w", err)
			}
			continue
		}
		b, _ := json.Marshal(kept)
		if _, err := tx.ExecContext(ctx, db.q("UPDATE access_tokens SET scopes = ? WHERE id = ?"), string(b), t.id); err != nil {
			return fmt.Errorf("narrow access token: %w", err)
		}
	}
	return nil
}

// UserOrganizations lists the organizations in which the user is a member
// of some team.
func (db Organizations) UserOrganizations(ctx context.Context, userID int64) ([]string, error) {
	rows, err := db.read.QueryContext(ctx, db.q(`SELECT DISTINCT n.name FROM namespaces n
		JOIN teams t ON t.namespace_id = n.id JOIN team_members m ON m.team_id = t.id
		WHERE m.user_id = ? AND n.kind = ? ORDER BY n.name`), userID, NamespaceOrg)
	if err != nil {
		return nil, fmt.Errorf("list user organizations: %w", err)
	}
	return scanStrings(rows)
}

// SoleOwnerOf lists, by name, the organizations whose owners team has the
// user and no other enabled user: deleting the user would leave them
// with no one to administer them (DeleteUser refuses, ErrLastOwner).
func (db Organizations) SoleOwnerOf(ctx context.Context, userID int64) ([]string, error) {
	return db.soleOwnerOf(ctx, db.read, userID)
}

func (db *core) soleOwnerOf(ctx context.Context, q interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}, userID int64) ([]string, error) {
	rows, err := q.QueryContext(ctx, db.q(`SELECT n.name FROM namespaces n
		JOIN teams t ON t.namespace_id = n.id AND t.name = ?
		JOIN team_members m ON m.team_id = t.id AND m.user_id = ?
		WHERE n.kind = ? AND NOT EXISTS (SELECT 1 FROM team_members o JOIN users u ON u.id = o.user_id
			WHERE o.team_id = t.id AND o.user_id <> ? AND u.kind = ? AND u.enabled = 1)
		ORDER BY n.name`), OwnersTeam, userID, NamespaceOrg, userID, UserKindUser)
	if err != nil {
		return nil, fmt.Errorf("organizations the user alone owns: %w", err)
	}
	return scanStrings(rows)
}

// Organizations lists every organization in name order, with its owners
// (for `berth admin org list`).
func (db Organizations) Organizations(ctx context.Context) ([]OrgSummary, error) {
	rows, err := db.read.QueryContext(ctx, db.q(`SELECT n.name, n.email, COALESCE(u.username, '') FROM namespaces n
		LEFT JOIN teams t ON t.namespace_id = n.id AND t.name = ?
		LEFT JOIN team_members m ON m.team_id = t.id
		LEFT JOIN users u ON u.id = m.user_id
		WHERE n.kind = ? ORDER BY n.name, u.username`), OwnersTeam, NamespaceOrg)
	if err != nil {
		return nil, fmt.Errorf("list organizations: %w", err)
	}
	defer rows.Close()
	out := []OrgSummary{}
	for rows.Next() {
		var name, email, owner string
		if err := rows.Scan(&name, &email, &owner); err != nil {
			return nil, fmt.Errorf("list organizations: %w", err)
		}
		if len(out) == 0 || out[len(out)-1].Name != name {
			out = append(out, OrgSummary{Name: name, Email: email, Owners: []string{}})
		}
		if owner != "" {
			last := &out[len(out)-1]
			last.Owners = append(last.Owners, owner)
		}
	}
	return out, rows.Err()
}

// PutTeam creates a team or updates its role and description.
// ErrNamespaceNotFound: no such organization, or it was deleted since it
// was looked up (the foreign key refused the team).
func (db Organizations) PutTeam(ctx context.Context, org string, t Team) (Team, error) {
	ns, err := Users(db).NamespaceByName(ctx, org)
	if err != nil {
		return Team{}, err
	}
	err = db.write.QueryRowContext(ctx, db.q(`INSERT INTO teams (namespace_id, name, role, description) VALUES (?, ?, ?, ?)
		ON CONFLICT (namespace_id, name) DO UPDATE SET role = excluded.role, description = excluded.description RETURNING id`),
		ns.ID, t.Name, t.Role, t.Description).Scan(&t.ID)
	if foreignKeyViolation(err) {
		return Team{}, fmt.Errorf("%s: %w", org, ErrNamespaceNotFound)
	}
	if err != nil {
		return Team{}, fmt.Errorf("put team: %w", err)
	}
	return t, nil
}

// Teams lists an organization's teams.
func (db Organizations) Teams(ctx context.Context, org string) ([]Team, error) {
	rows, err := db.read.QueryContext(ctx, db.q(`SELECT t.id, t.name, t.role, t.description FROM teams t JOIN namespaces n ON n.id = t.namespace_id
		WHERE n.name = ? ORDER BY t.name`), org)
	if err != nil {
		return nil, fmt.Errorf("list teams: %w", err)
	}
	defer rows.Close()
	out := []Team{}
	for rows.Next() {
		var t Team
		if err := rows.Scan(&t.ID, &t.Name, &t.Role, &t.Description); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// TeamByName returns a team of an organization.
func (db Organizations) TeamByName(ctx context.Context, org, name string) (Team, error) {
	var t Team
	err := db.read.QueryRowContext(ctx, db.q(`SELECT t.id, t.name, t.role, t.description FROM teams t JOIN namespaces n ON n.id = t.namespace_id
		WHERE n.name = ? AND t.name = ?`), org, name).Scan(&t.ID, &t.Name, &t.Role, &t.Description)
	if errors.Is(err, sql.ErrNoRows) {
		return Team{}, ErrTeamNotFound
	}
	if err != nil {
		return Team{}, fmt.Errorf("look up team: %w", err)
	}
	return t, nil
}

// DeleteTeam deletes a team. The owners team cannot be deleted.
func (db Organizations) DeleteTeam(ctx context.Context, org, name string) error {
	if name == OwnersTeam {
		return fmt.Errorf("the %s team cannot be deleted", OwnersTeam)
	}
	t, err := Organizations(db).TeamByName(ctx, org, name)
	if err != nil {
		return err
	}
	if _, err := db.write.ExecContext(ctx, db.q("DELETE FROM teams WHERE id = ?"), t.ID); err != nil {
		return fmt.Errorf("delete team: %w", err)
	}
	return nil
}

// AddTeamMember adds a user or robot to a team. A team or member deleted
// since the caller looked it up is not found: ErrTeamNotFound (checked
// first) or ErrUserNotFound.
func (db Organizations) AddTeamMember(ctx context.Context, teamID, userID int64) error {
	_, err := db.write.ExecContext(ctx, db.q("INSERT INTO team_members (team_id, user_id) VALUES (?, ?) ON CONFLICT DO NOTHING"), teamID, userID)
	if foreignKeyViolation(err) {
		err = db.missingParent(ctx, err, fkParent{"teams", teamID, ErrTeamNotFound}, fkParent{"users", userID, ErrUserNotFound})
	}
	if err != nil {
		return fmt.Errorf("add team member: %w", err)
	}
	return nil
}

// fkParent is a row that an insert references: its table, its id, and the
// error that says it is gone.
type fkParent struct {
	table string
	id    int64
	gone  error
}

// missingParent says which parent of an insert that a foreign key refused
// (refusal) is gone: the first of parents, in the order given, that a
// re-read after the refusal no longer finds (it was deleted since the
// caller looked it up). The re-read is on the writer pool, which sees the
// latest commit; a foreign key fails only once the parent's deletion has
// committed, and ids are never reused. If every parent is there still,
// the refusal is returned as it is.
func (db *core) missingParent(ctx context.Context, refusal error, parents ...fkParent) error {
	for _, p := range parents {
		var one int
		err := db.write.ReadRowContext(ctx, db.q("SELECT 1 FROM "+p.table+" WHERE id = ?"), p.id).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w (%s %d was deleted meanwhile)", p.gone, p.table, p.id)
		}
		if err != nil {
			return fmt.Errorf("%w; and looking up which parent is gone: %w", refusal, err)
		}
	}
	return refusal
}

// TeamMembers lists the members of a team.
func (db Organizations) TeamMembers(ctx context.Context, teamID int64) ([]User, error) {
	rows, err := db.read.QueryContext(ctx, db.q(`SELECT `+prefixedUserColumns+`
		FROM users u JOIN team_members m ON m.user_id = u.id WHERE m.team_id = CAST(? AS BIGINT) ORDER BY u.username`), teamID)
	if err != nil {
		return nil, fmt.Errorf("list team members: %w", err)
	}
	return scanUsers(rows)
}

// OrgRole returns the best team role a user holds in an organization
// ("" if none).
func (db Organizations) OrgRole(ctx context.Context, org string, userID int64) (string, error) {
	rows, err := db.read.QueryContext(ctx, db.q(`SELECT t.role FROM teams t JOIN namespaces n ON n.id = t.namespace_id
		JOIN team_members m ON m.team_id = t.id WHERE n.name = ? AND m.user_id = ?`), org, userID)
	if err != nil {
		return "", fmt.Errorf("org role: %w", err)
	}
	roles, err := scanStrings(rows)
	if err != nil {
		return "", err
	}
	best := ""
	rank := map[string]int{"": 0, "member": 1, "creator": 2, "admin": 3}
	for _, r := range roles {
		if rank[r] > rank[best] {
			best = r
		}
	}
	return best, nil
}

// OwnersTeam is the team every organization starts with; its members
// administer the organization.
const OwnersTeam = "owners"

// createOrganization creates an organization namespace with its owners
// team holding ownerID (none if 0: an organization created by a push in
// auth mode "none"), in tx. ErrUserNotFound: the owner was deleted.
func (db *core) createOrganization(ctx context.Context, tx *sql.Tx, name string, ownerID int64) (int64, error) {
	id, err := db.createNamespace(ctx, tx, name, NamespaceOrg)
	if err != nil {
		return 0, err
	}
	var teamID int64
	if err := tx.QueryRowContext(ctx, db.q("INSERT INTO teams (namespace_id, name, role) VALUES (?, ?, 'admin') RETURNING id"), id, OwnersTeam).Scan(&teamID); err != nil {
		return 0, fmt.Errorf("create owners team: %w", err)
	}
	if ownerID == 0 {
		return id, nil
	}
	_, err = tx.ExecContext(ctx, db.q("INSERT INTO team_members (team_id, user_id) VALUES (?, ?)"), teamID, ownerID)
	if foreignKeyViolation(err) {
		// The team is this transaction's own: the owner was deleted.
		return 0, fmt.Errorf("owner %d: %w", ownerID, ErrCreatorGone)
	}
	if err != nil {
		return 0, fmt.Errorf("add owner: %w", err)
	}
	return id, nil
}

// OrgMember is a user or robot in at least one team of an organization.
type OrgMember struct {
	User User
	// Teams of the organization the member is in, by name.
	Teams []string
	// Repositories of the organization on which the member holds a direct
	// permission, by name.
	Repositories []string
}

// scanWith scans a row's leading user columns into a User through
// scanUser and the rest into extra.
type scanWith struct {
	row   interface{ Scan(...any) error }
	extra []any
}

// orgIDTx returns an organization's namespace id, locking its row.
func (db *core) orgIDTx(ctx context.Context, tx *sql.Tx, org string) (int64, error) {
	var id int64
	var kind string
	err := tx.QueryRowContext(ctx, db.q("SELECT id, kind FROM namespaces WHERE name = ?"+db.lockSuffix()), org).Scan(&id, &kind)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && kind != NamespaceOrg) {
		return 0, ErrNamespaceNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("look up organization: %w", err)
	}
	return id, nil
}

// OrgSummary is an organization with the users of its owners team.
type OrgSummary struct {
	Name   string
	Email  string
	Owners []string
}

// Team is a team of an organization.
type Team struct {
	ID          int64
	Name        string
	Role        string // member, creator, admin
	Description string
}

// ErrTeamNotFound is returned for an unknown team.
var ErrTeamNotFound = fmt.Errorf("team %w", ErrNotFound)

func (s scanWith) Scan(dest ...any) error { return s.row.Scan(append(dest, s.extra...)...) }
