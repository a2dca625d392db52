package meta

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Errors of organization and robot management.
var (
	// ErrNamespaceNotEmpty is returned when deleting a namespace that still
	// has repositories.
	ErrNamespaceNotEmpty = errors.New("namespace still has repositories")
	// ErrLastOwner is returned when a removal would leave an organization's
	// owners team without an enabled user to administer it.
	ErrLastOwner = errors.New("the last owner of an organization cannot be removed")
	// ErrRobotInUse is returned when deleting a robot that a repository
	// mirror writes as.
	ErrRobotInUse = errors.New("robot is used by a repository mirror")
)

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

func (s scanWith) Scan(dest ...any) error { return s.row.Scan(append(dest, s.extra...)...) }

const prefixedUserColumns = "u.id, u.username, u.email, u.secret_hash, u.kind, u.namespace_id, u.superuser, u.enabled, u.description, u.created_at"

// OrgMembers lists an organization's team members (users and robots) with
// their teams and their direct permissions on the organization's
// repositories, ordered by username.
func (db *DB) OrgMembers(ctx context.Context, org string) ([]OrgMember, error) {
	rows, err := db.read.QueryContext(ctx, db.q(`SELECT `+prefixedUserColumns+`, t.name FROM team_members m
		JOIN teams t ON t.id = m.team_id JOIN namespaces n ON n.id = t.namespace_id JOIN users u ON u.id = m.user_id
		WHERE n.name = ? ORDER BY u.username, t.name`), org)
	if err != nil {
		return nil, fmt.Errorf("list organization members: %w", err)
	}
	defer rows.Close()
	out := []OrgMember{}
	index := map[string]int{}
	for rows.Next() {
		var team string
		u, err := scanUser(scanWith{rows, []any{&team}})
		if err != nil {
			return nil, err
		}
		i, ok := index[u.Username]
		if !ok {
			i = len(out)
			index[u.Username] = i
			out = append(out, OrgMember{User: u, Teams: []string{}, Repositories: []string{}})
		}
		out[i].Teams = append(out[i].Teams, team)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows.Close()
	perms, err := db.read.QueryContext(ctx, db.q(`SELECT u.username, r.name FROM repository_permissions p
		JOIN users u ON u.id = p.user_id JOIN repositories r ON r.id = p.repository_id
		WHERE r.name LIKE ? ESCAPE '\' ORDER BY u.username, r.name`), likePrefix(org+"/"))
	if err != nil {
		return nil, fmt.Errorf("list organization member permissions: %w", err)
	}
	defer perms.Close()
	for perms.Next() {
		var user, repo string
		if err := perms.Scan(&user, &repo); err != nil {
			return nil, err
		}
		if i, ok := index[user]; ok {
			out[i].Repositories = append(out[i].Repositories, repo)
		}
	}
	return out, perms.Err()
}

// TeamMemberCounts returns the number of members of each team of an
// organization, by team name.
func (db *DB) TeamMemberCounts(ctx context.Context, org string) (map[string]int, error) {
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

// lockSuffix locks the selected rows until the transaction ends on
// PostgreSQL; SQLite serializes write transactions already.
func (db *DB) lockSuffix() string {
	if db.dialect == postgres {
		return " FOR UPDATE"
	}
	return ""
}

// orgIDTx returns an organization's namespace id, locking its row.
func (db *DB) orgIDTx(ctx context.Context, tx *sql.Tx, org string) (int64, error) {
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

// RemoveOrgMember removes a user or robot from one team of an organization
// (team), or from all of them and from its direct permissions on the
// organization's repositories (team ""). It returns the teams it was
// removed from. It refuses (ErrLastOwner) to leave the owners team without
// an enabled user; concurrent removals are serialized on the
// organization's row so that two cannot each remove "the other" owner.
// ErrTeamNotFound: no such team; ErrUserNotFound: not a member.
func (db *DB) RemoveOrgMember(ctx context.Context, org, team string, userID int64) ([]string, error) {
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
		if len(removed) == 0 {
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
				(SELECT id FROM repositories WHERE name LIKE ? ESCAPE '\')`), userID, likePrefix(org+"/")); err != nil {
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
// (and, through them, their memberships, permissions and access tokens).
// It refuses with ErrNamespaceNotEmpty while repositories remain, and
// answers ErrNamespaceNotFound for a name that is not an organization.
func (db *DB) DeleteOrganization(ctx context.Context, name string) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		id, err := db.orgIDTx(ctx, tx, name)
		if err != nil {
			return err
		}
		var n int
		if err := tx.QueryRowContext(ctx, db.q("SELECT COUNT(*) FROM repositories WHERE name LIKE ? ESCAPE '\\'"), likePrefix(name+"/")).Scan(&n); err != nil {
			return fmt.Errorf("count repositories: %w", err)
		}
		if n > 0 {
			return fmt.Errorf("%w: %s has %d", ErrNamespaceNotEmpty, name, n)
		}
		if _, err := tx.ExecContext(ctx, db.q("DELETE FROM namespaces WHERE id = ?"), id); err != nil {
			return fmt.Errorf("delete organization: %w", err)
		}
		return nil
	})
}

// DeleteRobot deletes a robot account, refusing (ErrRobotInUse) while a
// repository mirror writes as it. ErrUserNotFound if no such robot.
func (db *DB) DeleteRobot(ctx context.Context, username string) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		var id int64
		err := tx.QueryRowContext(ctx, db.q("SELECT id FROM users WHERE username = ? AND kind = ?"+db.lockSuffix()), username, UserKindRobot).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrUserNotFound
		}
		if err != nil {
			return fmt.Errorf("look up robot: %w", err)
		}
		var repo string
		err = tx.QueryRowContext(ctx, db.q("SELECT name FROM repositories WHERE mirror_robot = ? ORDER BY name LIMIT 1"), username).Scan(&repo)
		if err == nil {
			return fmt.Errorf("%w: %s mirrors as %s", ErrRobotInUse, repo, username)
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("robot mirrors: %w", err)
		}
		if _, err := tx.ExecContext(ctx, db.q("DELETE FROM users WHERE id = ?"), id); err != nil {
			return fmt.Errorf("delete robot: %w", err)
		}
		return nil
	})
}
