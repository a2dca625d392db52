package meta

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// Team is a team of an organization.
type Team struct {
	ID          int64
	Name        string
	Role        string // member, creator, admin
	Description string
}

// ErrTeamNotFound is returned for an unknown team.
var ErrTeamNotFound = fmt.Errorf("team %w", ErrNotFound)

// PutTeam creates a team or updates its role and description.
func (db *DB) PutTeam(ctx context.Context, org string, t Team) (Team, error) {
	ns, err := db.NamespaceByName(ctx, org)
	if err != nil {
		return Team{}, err
	}
	err = db.write.QueryRowContext(ctx, db.q(`INSERT INTO teams (namespace_id, name, role, description) VALUES (?, ?, ?, ?)
		ON CONFLICT (namespace_id, name) DO UPDATE SET role = excluded.role, description = excluded.description RETURNING id`),
		ns.ID, t.Name, t.Role, t.Description).Scan(&t.ID)
	if err != nil {
		return Team{}, fmt.Errorf("put team: %w", err)
	}
	return t, nil
}

// Teams lists an organization's teams.
func (db *DB) Teams(ctx context.Context, org string) ([]Team, error) {
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
func (db *DB) TeamByName(ctx context.Context, org, name string) (Team, error) {
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
func (db *DB) DeleteTeam(ctx context.Context, org, name string) error {
	if name == OwnersTeam {
		return fmt.Errorf("the %s team cannot be deleted", OwnersTeam)
	}
	t, err := db.TeamByName(ctx, org, name)
	if err != nil {
		return err
	}
	if _, err := db.write.ExecContext(ctx, db.q("DELETE FROM teams WHERE id = ?"), t.ID); err != nil {
		return fmt.Errorf("delete team: %w", err)
	}
	return nil
}

// AddTeamMember adds a user or robot to a team.
func (db *DB) AddTeamMember(ctx context.Context, teamID, userID int64) error {
	if _, err := db.write.ExecContext(ctx, db.q("INSERT INTO team_members (team_id, user_id) VALUES (?, ?) ON CONFLICT DO NOTHING"), teamID, userID); err != nil {
		return fmt.Errorf("add team member: %w", err)
	}
	return nil
}

// RemoveTeamMember removes a member. The last member of the owners team
// cannot be removed.
func (db *DB) RemoveTeamMember(ctx context.Context, org string, team Team, userID int64) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		if team.Name == OwnersTeam {
			if db.dialect == postgres { // two concurrent removals must not empty the team
				if _, err := tx.ExecContext(ctx, "SELECT id FROM teams WHERE id = $1 FOR UPDATE", team.ID); err != nil {
					return fmt.Errorf("lock team: %w", err)
				}
			}
			var n int
			if err := tx.QueryRowContext(ctx, db.q("SELECT COUNT(*) FROM team_members WHERE team_id = ?"), team.ID).Scan(&n); err != nil {
				return err
			}
			if n <= 1 {
				return fmt.Errorf("the last owner of %s cannot be removed", org)
			}
		}
		res, err := tx.ExecContext(ctx, db.q("DELETE FROM team_members WHERE team_id = ? AND user_id = ?"), team.ID, userID)
		if err != nil {
			return fmt.Errorf("remove team member: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrUserNotFound
		}
		return nil
	})
}

// TeamMembers lists the members of a team.
func (db *DB) TeamMembers(ctx context.Context, teamID int64) ([]User, error) {
	rows, err := db.read.QueryContext(ctx, db.q(`SELECT `+prefixedUserColumns+`
		FROM users u JOIN team_members m ON m.user_id = u.id WHERE m.team_id = ? ORDER BY u.username`), teamID)
	if err != nil {
		return nil, fmt.Errorf("list team members: %w", err)
	}
	return scanUsers(rows)
}

func scanUsers(rows *sql.Rows) ([]User, error) {
	defer rows.Close()
	out := []User{}
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// OrgRole returns the best team role a user holds in an organization
// ("" if none).
func (db *DB) OrgRole(ctx context.Context, org string, userID int64) (string, error) {
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

// CreateRobot creates robot "namespace+short" with a token hash.
func (db *DB) CreateRobot(ctx context.Context, namespace, short, secretHash string) (User, error) {
	ns, err := db.NamespaceByName(ctx, namespace)
	if err != nil {
		return User{}, err
	}
	u := User{Username: namespace + "+" + short, SecretHash: secretHash, Kind: UserKindRobot, NamespaceID: ns.ID, Enabled: true}
	err = db.tx(ctx, func(tx *sql.Tx) error { return db.insertUser(ctx, tx, &u) })
	return u, err
}

// Robots lists a namespace's robots.
func (db *DB) Robots(ctx context.Context, namespace string) ([]User, error) {
	rows, err := db.read.QueryContext(ctx, db.q("SELECT "+userColumns+" FROM users WHERE kind = ? AND username LIKE ? ESCAPE '\\' ORDER BY username"),
		UserKindRobot, likePrefix(namespace+"+"))
	if err != nil {
		return nil, fmt.Errorf("list robots: %w", err)
	}
	return scanUsers(rows)
}

// DeleteUser deletes a user or robot (a user's namespace goes with it).
func (db *DB) DeleteUser(ctx context.Context, username string) error {
	u, err := db.UserByName(ctx, username)
	if err != nil {
		return err
	}
	return db.tx(ctx, func(tx *sql.Tx) error {
		if u.Kind == UserKindUser {
			if _, err := tx.ExecContext(ctx, db.q("DELETE FROM namespaces WHERE id = ?"), u.NamespaceID); err != nil {
				return fmt.Errorf("delete user namespace: %w", err)
			}
		}
		if _, err := tx.ExecContext(ctx, db.q("DELETE FROM users WHERE id = ?"), u.ID); err != nil {
			return fmt.Errorf("delete user: %w", err)
		}
		// Tokens the user created are revoked and no longer theirs: a
		// later user of the same name must not inherit them.
		if _, err := tx.ExecContext(ctx, db.q(`UPDATE access_tokens SET revoked_at = CASE WHEN revoked_at = 0 THEN ? ELSE revoked_at END,
			created_by = ? WHERE created_by = ?`), now(), "deleted user "+u.Username, u.Username); err != nil {
			return fmt.Errorf("revoke the user's tokens: %w", err)
		}
		return nil
	})
}

// RepoInfo is a repository's access settings.
type RepoInfo struct {
	ID          int64
	Name        string
	Exists      bool
	Visibility  string // public or private
	State       string
	MirrorRobot string
	Description string
}

// Repository returns a repository's settings; Exists is false (and no
// error) for a repository that does not exist.
func (db *DB) Repository(ctx context.Context, name string) (RepoInfo, error) {
	ri := RepoInfo{Name: name}
	err := db.read.QueryRowContext(ctx, db.q("SELECT id, visibility, state, mirror_robot, description FROM repositories WHERE name = ?"), name).
		Scan(&ri.ID, &ri.Visibility, &ri.State, &ri.MirrorRobot, &ri.Description)
	if errors.Is(err, sql.ErrNoRows) {
		return ri, nil
	}
	if err != nil {
		return RepoInfo{}, fmt.Errorf("look up repository: %w", err)
	}
	ri.Exists = true
	return ri, nil
}

// CreateRepository creates an empty repository with settings (the API's
// create; a push creates repositories implicitly).
func (db *DB) CreateRepository(ctx context.Context, name, visibility, description, actor string) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, db.q("INSERT INTO repositories (name, created_at, visibility, description) VALUES (?, ?, ?, ?) ON CONFLICT (name) DO NOTHING"),
			name, now(), visibility, description)
		if err != nil {
			return fmt.Errorf("create repository: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("repository %q %w", name, ErrExists)
		}
		return db.appendEvent(ctx, tx, Event{Kind: EventRepoCreated, Repository: name, Actor: actor})
	})
}

// UpdateRepository changes a repository's settings; empty arguments keep
// the current value.
func (db *DB) UpdateRepository(ctx context.Context, name string, visibility, state, mirrorRobot, description *string) error {
	var sets []string
	var args []any
	for col, v := range map[string]*string{"visibility": visibility, "state": state, "mirror_robot": mirrorRobot, "description": description} {
		if v != nil {
			sets = append(sets, col+" = ?")
			args = append(args, *v)
		}
	}
	if len(sets) == 0 {
		return nil
	}
	args = append(args, name)
	res, err := db.write.ExecContext(ctx, db.q("UPDATE repositories SET "+strings.Join(sets, ", ")+" WHERE name = ?"), args...)
	if err != nil {
		return fmt.Errorf("update repository: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrRepositoryNotFound
	}
	return nil
}

// DeleteRepository deletes a repository with its manifests, tags, links and
// permissions, and appends a repo_deleted event. Bytes are reclaimed by GC.
func (db *DB) DeleteRepository(ctx context.Context, name, actor string) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		var id int64
		if err := tx.QueryRowContext(ctx, db.q("SELECT id FROM repositories WHERE name = ?"), name).Scan(&id); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return ErrRepositoryNotFound
			}
			return err
		}
		for _, stmt := range []string{
			"DELETE FROM tags WHERE repository_id = ?",
			"DELETE FROM manifest_references WHERE repository_id = ?",
			"DELETE FROM manifests WHERE repository_id = ?",
			"DELETE FROM repository_blobs WHERE repository_id = ?",
			"DELETE FROM repository_permissions WHERE repository_id = ?",
			"DELETE FROM repositories WHERE id = ?",
		} {
			if _, err := tx.ExecContext(ctx, db.q(stmt), id); err != nil {
				return fmt.Errorf("delete repository: %w", err)
			}
		}
		return db.appendEvent(ctx, tx, Event{Kind: EventRepoDeleted, Repository: name, Actor: actor})
	})
}

// Permission is a repository permission of a user, robot or team.
type Permission struct {
	Kind string // "user" (users and robots) or "team"
	Name string // username or team name
	Role string
}

// SetPermission grants a role on a repository to a user or robot
// (userID) or a team (teamID).
func (db *DB) SetPermission(ctx context.Context, repoID int64, userID, teamID int64, role string) error {
	col, id := "user_id", userID
	if teamID != 0 {
		col, id = "team_id", teamID
	}
	return db.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, db.q("DELETE FROM repository_permissions WHERE repository_id = ? AND "+col+" = ?"), repoID, id); err != nil {
			return fmt.Errorf("set permission: %w", err)
		}
		if _, err := tx.ExecContext(ctx, db.q("INSERT INTO repository_permissions (repository_id, "+col+", role) VALUES (?, ?, ?)"), repoID, id, role); err != nil {
			return fmt.Errorf("set permission: %w", err)
		}
		return nil
	})
}

// DeletePermission removes a user's, robot's or team's permission.
func (db *DB) DeletePermission(ctx context.Context, repoID int64, userID, teamID int64) error {
	col, id := "user_id", userID
	if teamID != 0 {
		col, id = "team_id", teamID
	}
	res, err := db.write.ExecContext(ctx, db.q("DELETE FROM repository_permissions WHERE repository_id = ? AND "+col+" = ?"), repoID, id)
	if err != nil {
		return fmt.Errorf("delete permission: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("permission %w", ErrNotFound)
	}
	return nil
}

// Permissions lists a repository's explicit permissions.
func (db *DB) Permissions(ctx context.Context, repoID int64) ([]Permission, error) {
	rows, err := db.read.QueryContext(ctx, db.q(`SELECT CASE WHEN p.user_id IS NOT NULL THEN 'user' ELSE 'team' END,
		COALESCE(u.username, t.name), p.role FROM repository_permissions p
		LEFT JOIN users u ON u.id = p.user_id LEFT JOIN teams t ON t.id = p.team_id
		WHERE p.repository_id = ? ORDER BY 1, 2`), repoID)
	if err != nil {
		return nil, fmt.Errorf("list permissions: %w", err)
	}
	defer rows.Close()
	out := []Permission{}
	for rows.Next() {
		var p Permission
		if err := rows.Scan(&p.Kind, &p.Name, &p.Role); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// Standing is what the store knows of a user's or robot's relation to a
// repository: its best role and whether it may create repositories in the
// repository's namespace.
type Standing struct {
	Role      string // "", read, write, admin
	CanCreate bool
}

// StandingOf computes a user's or robot's standing on a repository (which
// need not exist): owning the namespace or an admin team of the
// organization gives admin on every repository in it, a creator team lets
// it create repositories, and direct and team permissions on the
// repository add their roles.
func (db *DB) StandingOf(ctx context.Context, u User, repo string) (Standing, error) {
	namespace, _, _ := strings.Cut(repo, "/")
	var st Standing
	rank := map[string]int{"": 0, "read": 1, "write": 2, "admin": 3}
	raise := func(r string) {
		if rank[r] > rank[st.Role] {
			st.Role = r
		}
	}
	if u.Kind == UserKindUser && u.Username == namespace {
		return Standing{Role: "admin", CanCreate: true}, nil
	}
	orgRole, err := db.OrgRole(ctx, namespace, u.ID)
	if err != nil {
		return Standing{}, err
	}
	switch orgRole {
	case "admin":
		return Standing{Role: "admin", CanCreate: true}, nil
	case "creator":
		st.CanCreate = true
	}
	rows, err := db.read.QueryContext(ctx, db.q(`SELECT p.role FROM repository_permissions p JOIN repositories r ON r.id = p.repository_id
		WHERE r.name = ? AND (p.user_id = ? OR p.team_id IN (SELECT team_id FROM team_members WHERE user_id = ?))`), repo, u.ID, u.ID)
	if err != nil {
		return Standing{}, fmt.Errorf("repository permissions: %w", err)
	}
	roles, err := scanStrings(rows)
	if err != nil {
		return Standing{}, err
	}
	for _, r := range roles {
		raise(r)
	}
	return st, nil
}
