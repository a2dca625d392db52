package meta

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrExists is returned when a name is already taken.
var ErrExists = errors.New("already exists")

// Namespace kinds.
const (
	NamespaceUser = "user"
	NamespaceOrg  = "org"
)

// User kinds.
const (
	UserKindUser  = "user"
	UserKindRobot = "robot"
)

// Namespace is a user's or an organization's namespace.
type Namespace struct {
	ID    int64
	Name  string
	Kind  string
	Email string
}

// User is a user or a robot account. For a robot, Username is
// "namespace+shortname" and NamespaceID is its owner's namespace.
type User struct {
	ID          int64
	Username    string
	Email       string
	SecretHash  string
	Kind        string
	NamespaceID int64
	Superuser   bool
	Enabled     bool
	Description string
	CreatedAt   time.Time
}

func isUnique(err error) bool {
	s := err.Error()
	return strings.Contains(s, "UNIQUE constraint") || strings.Contains(s, "SQLSTATE 23505") || strings.Contains(s, "duplicate key")
}

// CreateUser creates a user and its namespace.
func (db *DB) CreateUser(ctx context.Context, u User) (User, error) {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		nsID, err := db.createNamespace(ctx, tx, u.Username, NamespaceUser)
		if err != nil {
			return err
		}
		u.Kind, u.NamespaceID, u.Enabled = UserKindUser, nsID, true
		return db.insertUser(ctx, tx, &u)
	})
	return u, err
}

func (db *DB) createNamespace(ctx context.Context, tx *sql.Tx, name, kind string) (int64, error) {
	var id int64
	err := tx.QueryRowContext(ctx, db.q("INSERT INTO namespaces (name, kind, created_at) VALUES (?, ?, ?) RETURNING id"), name, kind, now()).Scan(&id)
	if err != nil {
		if isUnique(err) {
			return 0, fmt.Errorf("namespace %q %w", name, ErrExists)
		}
		return 0, fmt.Errorf("create namespace: %w", err)
	}
	return id, nil
}

func (db *DB) insertUser(ctx context.Context, tx *sql.Tx, u *User) error {
	ts := now()
	err := tx.QueryRowContext(ctx, db.q(`INSERT INTO users (username, email, secret_hash, kind, namespace_id, superuser, enabled, created_at)
		VALUES (?, ?, ?, ?, ?, ?, 1, ?) RETURNING id`), u.Username, u.Email, u.SecretHash, u.Kind, u.NamespaceID, boolInt(u.Superuser), ts).Scan(&u.ID)
	if err != nil {
		if isUnique(err) {
			return fmt.Errorf("user %q %w", u.Username, ErrExists)
		}
		return fmt.Errorf("create user: %w", err)
	}
	u.CreatedAt = fromMicros(ts)
	return nil
}

const userColumns = "id, username, email, secret_hash, kind, namespace_id, superuser, enabled, description, created_at"

func scanUser(row interface{ Scan(...any) error }) (User, error) {
	var u User
	var su, en int
	var created int64
	if err := row.Scan(&u.ID, &u.Username, &u.Email, &u.SecretHash, &u.Kind, &u.NamespaceID, &su, &en, &u.Description, &created); err != nil {
		return User{}, err
	}
	u.Superuser, u.Enabled, u.CreatedAt = su == 1, en == 1, fromMicros(created)
	return u, nil
}

// ErrUserNotFound is returned for an unknown user or robot.
var ErrUserNotFound = fmt.Errorf("user %w", ErrNotFound)

// UserByName returns a user or robot by its username.
func (db *DB) UserByName(ctx context.Context, username string) (User, error) {
	u, err := scanUser(db.read.QueryRowContext(ctx, db.q("SELECT "+userColumns+" FROM users WHERE username = ?"), username))
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, ErrUserNotFound
	}
	if err != nil {
		return User{}, fmt.Errorf("look up user: %w", err)
	}
	return u, nil
}

// CountUsers counts human users (not robots).
func (db *DB) CountUsers(ctx context.Context) (int, error) {
	var n int
	if err := db.read.QueryRowContext(ctx, db.q("SELECT COUNT(*) FROM users WHERE kind = ?"), UserKindUser).Scan(&n); err != nil {
		return 0, fmt.Errorf("count users: %w", err)
	}
	return n, nil
}

// SetUserSecret replaces a user's password hash or a robot's token hash.
func (db *DB) SetUserSecret(ctx context.Context, username, secretHash string) error {
	res, err := db.write.ExecContext(ctx, db.q("UPDATE users SET secret_hash = ? WHERE username = ?"), secretHash, username)
	if err != nil {
		return fmt.Errorf("set secret: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrUserNotFound
	}
	return nil
}

// SetSuperuser grants or removes superuser rights.
func (db *DB) SetSuperuser(ctx context.Context, username string, superuser bool) error {
	res, err := db.write.ExecContext(ctx, db.q("UPDATE users SET superuser = ? WHERE username = ? AND kind = ?"), boolInt(superuser), username, UserKindUser)
	if err != nil {
		return fmt.Errorf("set superuser: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrUserNotFound
	}
	return nil
}

// ErrNamespaceNotFound is returned for an unknown namespace.
var ErrNamespaceNotFound = fmt.Errorf("namespace %w", ErrNotFound)

// NamespaceByName returns a namespace.
func (db *DB) NamespaceByName(ctx context.Context, name string) (Namespace, error) {
	var ns Namespace
	err := db.read.QueryRowContext(ctx, db.q("SELECT id, name, kind, email FROM namespaces WHERE name = ?"), name).Scan(&ns.ID, &ns.Name, &ns.Kind, &ns.Email)
	if errors.Is(err, sql.ErrNoRows) {
		return Namespace{}, ErrNamespaceNotFound
	}
	if err != nil {
		return Namespace{}, fmt.Errorf("look up namespace: %w", err)
	}
	return ns, nil
}

// SetNamespaceEmail sets an organization's (or user namespace's) e-mail.
func (db *DB) SetNamespaceEmail(ctx context.Context, name, email string) error {
	res, err := db.write.ExecContext(ctx, db.q("UPDATE namespaces SET email = ? WHERE name = ?"), email, name)
	if err != nil {
		return fmt.Errorf("set namespace e-mail: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNamespaceNotFound
	}
	return nil
}

// SetUserDescription sets a robot's (or user's) description.
func (db *DB) SetUserDescription(ctx context.Context, username, description string) error {
	res, err := db.write.ExecContext(ctx, db.q("UPDATE users SET description = ? WHERE username = ?"), description, username)
	if err != nil {
		return fmt.Errorf("set description: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrUserNotFound
	}
	return nil
}

// OwnersTeam is the team every organization starts with; its members
// administer the organization.
const OwnersTeam = "owners"

// CreateOrganization creates an organization whose owners team holds the
// creator.
func (db *DB) CreateOrganization(ctx context.Context, name string, ownerID int64) (Namespace, error) {
	ns := Namespace{Name: name, Kind: NamespaceOrg}
	err := db.tx(ctx, func(tx *sql.Tx) error {
		id, err := db.createOrganization(ctx, tx, name, ownerID)
		ns.ID = id
		return err
	})
	return ns, err
}

// createOrganization creates an organization namespace with its owners
// team holding ownerID (none if 0: an organization created by a push in
// auth mode "none"), in tx.
func (db *DB) createOrganization(ctx context.Context, tx *sql.Tx, name string, ownerID int64) (int64, error) {
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
	if _, err := tx.ExecContext(ctx, db.q("INSERT INTO team_members (team_id, user_id) VALUES (?, ?)"), teamID, ownerID); err != nil {
		return 0, fmt.Errorf("add owner: %w", err)
	}
	return id, nil
}

// DeleteNamespace deletes an organization or user namespace with its
// teams, robots and repositories' permissions. Repositories under it must
// have been deleted first.
func (db *DB) DeleteNamespace(ctx context.Context, name string) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, db.q("SELECT COUNT(*) FROM repositories WHERE name LIKE ? ESCAPE '\\'"), likePrefix(name+"/")).Scan(&n); err != nil {
			return fmt.Errorf("count repositories: %w", err)
		}
		if n > 0 {
			return fmt.Errorf("namespace %q still has %d repositories", name, n)
		}
		res, err := tx.ExecContext(ctx, db.q("DELETE FROM namespaces WHERE name = ?"), name)
		if err != nil {
			return fmt.Errorf("delete namespace: %w", err)
		}
		if k, _ := res.RowsAffected(); k == 0 {
			return ErrNamespaceNotFound
		}
		return nil
	})
}

func likePrefix(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return r.Replace(s) + "%"
}
