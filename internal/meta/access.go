package meta

import (
	"context"
	"fmt"
	"strings"
)

// RepoPermissions lists a repository's permissions of one kind ("user",
// which includes robots, or "team"), optionally only the one of name.
// namespace is the repository's.
func (db Access) RepoPermissions(ctx context.Context, repoID int64, namespace, kind, name string) ([]RepoPermission, error) {
	query := `SELECT t.name, p.role, 0, 1 FROM repository_permissions p JOIN teams t ON t.id = p.team_id WHERE p.repository_id = ?`
	args := []any{repoID}
	col := "t.name"
	if kind == "user" {
		query = `SELECT u.username, p.role, CASE WHEN u.kind = 'robot' THEN 1 ELSE 0 END,
			CASE WHEN u.kind = 'robot' THEN CASE WHEN u.namespace_id = (SELECT id FROM namespaces WHERE name = ?) THEN 1 ELSE 0 END
			WHEN EXISTS (SELECT 1 FROM team_members m JOIN teams t ON t.id = m.team_id JOIN namespaces n ON n.id = t.namespace_id
				WHERE m.user_id = u.id AND n.name = ?) THEN 1 ELSE 0 END
			FROM repository_permissions p JOIN users u ON u.id = p.user_id WHERE p.repository_id = ?`
		args, col = []any{namespace, namespace, repoID}, "u.username"
	}
	if name != "" {
		query += " AND " + col + " = ?"
		args = append(args, name)
	}
	rows, err := db.read.QueryContext(ctx, db.q(query+" ORDER BY 1"), args...)
	if err != nil {
		return nil, fmt.Errorf("list permissions: %w", err)
	}
	defer rows.Close()
	out := []RepoPermission{}
	for rows.Next() {
		var p RepoPermission
		var robot, member int
		if err := rows.Scan(&p.Name, &p.Role, &robot, &member); err != nil {
			return nil, err
		}
		p.IsRobot, p.IsOrgMember = robot == 1, member == 1
		out = append(out, p)
	}
	return out, rows.Err()
}

// SetPermission grants a role on a repository to a user or robot
// (userID) or a team (teamID), replacing the one it had. It is one upsert
// against the partial unique index of its kind (repository_permissions_user
// or _team), so concurrent grants of the same subject cannot collide on it
// (a DELETE then INSERT would, under PostgreSQL's READ COMMITTED).
// A repository, user, robot or team deleted since the caller looked it up
// is not found: ErrRepositoryNotFound (checked first), ErrUserNotFound or
// ErrTeamNotFound.
func (db Access) SetPermission(ctx context.Context, repoID int64, userID, teamID int64, role string) error {
	col, id, subject := "user_id", userID, fkParent{"users", userID, ErrUserNotFound}
	if teamID != 0 {
		col, id, subject = "team_id", teamID, fkParent{"teams", teamID, ErrTeamNotFound}
	}
	_, err := db.write.ExecContext(ctx, db.q("INSERT INTO repository_permissions (repository_id, "+col+", role) VALUES (?, ?, ?)"+
		" ON CONFLICT (repository_id, "+col+") WHERE "+col+" IS NOT NULL DO UPDATE SET role = excluded.role"), repoID, id, role)
	if foreignKeyViolation(err) {
		err = db.missingParent(ctx, err, fkParent{"repositories", repoID, ErrRepositoryNotFound}, subject)
	}
	if err != nil {
		return fmt.Errorf("set permission: %w", err)
	}
	return nil
}

// DeletePermission removes a user's, robot's or team's permission.
func (db Access) DeletePermission(ctx context.Context, repoID int64, userID, teamID int64) error {
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

// StandingOf computes a user's or robot's standing on a repository (which
// need not exist): owning the namespace or an admin team of the
// organization gives admin on every repository in it, a creator team lets
// it create repositories, and direct and team permissions on the
// repository add their roles.
func (db Access) StandingOf(ctx context.Context, u User, repo string) (Standing, error) {
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
	orgRole, err := Organizations(db).OrgRole(ctx, namespace, u.ID)
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

// RepoPermission is a permission on a repository as the API shows it.
type RepoPermission struct {
	Name        string
	Role        string
	IsRobot     bool
	IsOrgMember bool // a robot of the namespace, or a user in a team of it
}

// Permission is a repository permission of a user, robot or team.
type Permission struct {
	Kind string // "user" (users and robots) or "team"
	Name string // username or team name
	Role string
}

// Standing is what the store knows of a user's or robot's relation to a
// repository: its best role and whether it may create repositories in the
// repository's namespace.
type Standing struct {
	Role      string // "", read, write, admin
	CanCreate bool
}
