package meta

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"
)

// CreateUser creates a user and its namespace. A name an unrevoked access
// token has is refused (ErrExists): clients log in with a token's name as
// the username, and sign-in looks up users first, so the token would stop
// working (CreateAccessToken refuses a user's name the same way).
func (db Users) CreateUser(ctx context.Context, u User) (User, error) {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		if err := db.tokenNameFree(ctx, tx, u.Username); err != nil {
			return err
		}
		nsID, err := db.createNamespace(ctx, tx, u.Username, NamespaceUser)
		if err != nil {
			return err
		}
		u.Kind, u.NamespaceID, u.Enabled = UserKindUser, nsID, true
		return db.insertUser(ctx, tx, &u)
	})
	return u, err
}

// UserByName returns a user or robot by its username.
func (db Users) UserByName(ctx context.Context, username string) (User, error) {
	u, err := scanOwnedUser(db.read.QueryRowContext(ctx, db.q(ownedUserSelect+"WHERE u.username = ?"), username))
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, ErrUserNotFound
	}
	if err != nil {
		return User{}, fmt.Errorf("look up user: %w", err)
	}
	return u, nil
}

// CountUsers counts human users (not robots).
func (db Users) CountUsers(ctx context.Context) (int, error) {
	var n int
	if err := db.read.QueryRowContext(ctx, db.q("SELECT COUNT(*) FROM users WHERE kind = ?"), UserKindUser).Scan(&n); err != nil {
		return 0, fmt.Errorf("count users: %w", err)
	}
	return n, nil
}

// SecretFingerprint is a short fingerprint of an account's secret hash
// (the base64url of the first 8 bytes of its SHA-256): what a sign-in
// checked is carried with what it grants (a registry token's claim, a web
// session's creation), which stop when the account's secret changes. It
// tells nothing of the secret that a stored hash does not.
func SecretFingerprint(secretHash string) string {
	sum := sha256.Sum256([]byte(secretHash))
	return base64.RawURLEncoding.EncodeToString(sum[:8])
}

// SetUserSecret replaces a user's password hash or a robot's token hash.
func (db Users) SetUserSecret(ctx context.Context, username, secretHash string) error {
	res, err := db.write.ExecContext(ctx, db.q("UPDATE users SET secret_hash = ? WHERE username = ?"), secretHash, username)
	if err != nil {
		return fmt.Errorf("set secret: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrUserNotFound
	}
	return nil
}

// NamespaceByName returns a namespace.
func (db Users) NamespaceByName(ctx context.Context, name string) (Namespace, error) {
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
func (db Users) SetNamespaceEmail(ctx context.Context, name, email string) error {
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
func (db Users) SetUserDescription(ctx context.Context, username, description string) error {
	res, err := db.write.ExecContext(ctx, db.q("UPDATE users SET description = ? WHERE username = ?"), description, username)
	if err != nil {
		return fmt.Errorf("set description: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrUserNotFound
	}
	return nil
}

// DeleteRobot deletes a robot account, refusing (ErrRobotInUse) while a
// repository mirror writes as it. ErrUserNotFound if no such robot.
func (db Users) DeleteRobot(ctx context.Context, username string) error {
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

// CreateFirstUser creates the first user, and optionally an API token it
// owns (tok.OwnerID is set to the new user), in one transaction that fails
// with ErrUsersExist if any user exists. Concurrent calls are serialized
// (SQLite: one writer; PostgreSQL: an advisory lock), so at most one
// succeeds.
func (db Users) CreateFirstUser(ctx context.Context, u User, tok *AccessToken) (User, error) {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		if db.dialect == postgres {
			if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", migrationLockID+2); err != nil {
				return fmt.Errorf("lock: %w", err)
			}
		}
		var n int
		if err := tx.QueryRowContext(ctx, db.q("SELECT COUNT(*) FROM users WHERE kind = ?"), UserKindUser).Scan(&n); err != nil {
			return fmt.Errorf("count users: %w", err)
		}
		if n > 0 {
			return ErrUsersExist
		}
		if err := db.tokenNameFree(ctx, tx, u.Username); err != nil {
			return err
		}
		nsID, err := db.createNamespace(ctx, tx, u.Username, NamespaceUser)
		if err != nil {
			return err
		}
		u.Kind, u.NamespaceID, u.Enabled = UserKindUser, nsID, true
		if err := db.insertUser(ctx, tx, &u); err != nil {
			return err
		}
		if tok == nil {
			return nil
		}
		tok.OwnerID, tok.CreatedAt = u.ID, fromMicros(db.now())
		if tok.Scopes == nil {
			tok.Scopes = []byte("[]")
		}
		err = tx.QueryRowContext(ctx, db.q(`INSERT INTO access_tokens (name, secret_hash, scopes, owner_id, created_by, expires_at, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id`), tok.Name, tok.SecretHash, string(tok.Scopes), tok.OwnerID, tok.CreatedBy,
			micros(tok.ExpiresAt), micros(tok.CreatedAt)).Scan(&tok.ID)
		if err != nil {
			return fmt.Errorf("create access token: %w", err)
		}
		return nil
	})
	if err != nil {
		return User{}, err
	}
	return u, nil
}

// CreateRobot creates robot "namespace+short" with a token hash.
// ErrNamespaceNotFound: no such namespace, or it was deleted since it was
// looked up (the foreign key refused the robot); ErrExists: the name is
// taken.
func (db Users) CreateRobot(ctx context.Context, namespace, short, secretHash string) (User, error) {
	ns, err := Users(db).NamespaceByName(ctx, namespace)
	if err != nil {
		return User{}, err
	}
	u := User{Username: namespace + "+" + short, SecretHash: secretHash, Kind: UserKindRobot, NamespaceID: ns.ID, Enabled: true}
	err = db.tx(ctx, func(tx *sql.Tx) error { return db.insertUser(ctx, tx, &u) })
	return u, err
}

// Robots lists a namespace's robots.
func (db Users) Robots(ctx context.Context, namespace string) ([]User, error) {
	rows, err := db.read.QueryContext(ctx, db.q("SELECT "+userColumns+" FROM users WHERE kind = ? AND username LIKE CAST(? AS TEXT) ESCAPE '\\' ORDER BY username"),
		UserKindRobot, likePrefix(namespace+"+"))
	if err != nil {
		return nil, fmt.Errorf("list robots: %w", err)
	}
	return scanUsers(rows)
}

// DeleteUser deletes a user or robot (a user's namespace goes with it).
// It refuses (ErrLastOwner) to delete the only enabled owner of an
// organization: SoleOwnerOf names them.
func (db Users) DeleteUser(ctx context.Context, username string) error {
	u, err := Users(db).UserByName(ctx, username)
	if err != nil {
		return err
	}
	return db.tx(ctx, func(tx *sql.Tx) error {
		if u.Kind == UserKindUser {
			// The organizations the user owns, locked (in id order) as a
			// member's removal locks its organization: two owners deleted
			// at once, or a deletion and a removal, cannot both find the
			// other still there.
			rows, err := tx.QueryContext(ctx, db.q(`SELECT id FROM namespaces WHERE kind = ? AND id IN (SELECT t.namespace_id FROM teams t
				JOIN team_members m ON m.team_id = t.id WHERE t.name = ? AND m.user_id = ?) ORDER BY id`+db.lockSuffix()), NamespaceOrg, OwnersTeam, u.ID)
			if err != nil {
				return fmt.Errorf("lock the user's organizations: %w", err)
			}
			for rows.Next() {
			}
			if err := errors.Join(rows.Err(), rows.Close()); err != nil {
				return fmt.Errorf("lock the user's organizations: %w", err)
			}
			sole, err := db.soleOwnerOf(ctx, tx, u.ID)
			if err != nil {
				return err
			}
			if len(sole) > 0 {
				return fmt.Errorf("%w: %s alone owns %s", ErrLastOwner, u.Username, strings.Join(sole, ", "))
			}
			if _, err := tx.ExecContext(ctx, db.q("DELETE FROM namespaces WHERE id = ?"), u.NamespaceID); err != nil {
				return fmt.Errorf("delete user namespace: %w", err)
			}
			if err := db.forgetNamespace(ctx, tx, u.Username); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, db.q("DELETE FROM users WHERE id = ?"), u.ID); err != nil {
			return fmt.Errorf("delete user: %w", err)
		}
		// Tokens the user created are revoked and no longer theirs: a
		// later user of the same name must not inherit them.
		if _, err := tx.ExecContext(ctx, db.q(`UPDATE access_tokens SET revoked_at = CASE WHEN revoked_at = 0 THEN ? ELSE revoked_at END,
			created_by = ? WHERE created_by = ?`), db.now(), "deleted user "+u.Username, u.Username); err != nil {
			return fmt.Errorf("revoke the user's tokens: %w", err)
		}
		return nil
	})
}

// UserByID returns a user or robot by id.
func (db Users) UserByID(ctx context.Context, id int64) (User, error) {
	u, err := scanOwnedUser(db.read.QueryRowContext(ctx, db.q(ownedUserSelect+"WHERE u.id = ?"), id))
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, ErrUserNotFound
	}
	if err != nil {
		return User{}, fmt.Errorf("look up user: %w", err)
	}
	return u, nil
}

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
	// OwnerDisabled is set for a robot of a user's namespace while that
	// user is disabled (by UserByName and UserByID only).
	OwnerDisabled bool
}

// Active reports whether the account may act: it is enabled and, for a
// robot of a user's namespace, so is that user (a disabled user's robots
// act as nothing until the user is enabled again, as in Quay).
func (u User) Active() bool { return u.Enabled && !u.OwnerDisabled }

// ownedUserSelect selects a user's columns (prefixed u.) and, last,
// whether the user owning a robot's namespace is enabled (1 for users, for
// robots of organizations): one query for what authentication needs.
const ownedUserSelect = "SELECT " + prefixedUserColumns + ", COALESCE(o.enabled, 1) FROM users u LEFT JOIN users o ON u.kind = '" + UserKindRobot +
	"' AND o.namespace_id = u.namespace_id AND o.kind = '" + UserKindUser + "' "

// scanOwnedUser scans a row of ownedUserSelect.
func scanOwnedUser(row interface{ Scan(...any) error }) (User, error) {
	var ownerEnabled int
	u, err := scanUser(scanWith{row, []any{&ownerEnabled}})
	u.OwnerDisabled = err == nil && ownerEnabled != 1
	return u, err
}

func (db *core) createNamespace(ctx context.Context, tx *sql.Tx, name, kind string) (int64, error) {
	var id int64
	err := tx.QueryRowContext(ctx, db.q("INSERT INTO namespaces (name, kind, created_at) VALUES (?, ?, ?) RETURNING id"), name, kind, db.now()).Scan(&id)
	if err != nil {
		if isUnique(err) {
			return 0, fmt.Errorf("namespace %q %w", name, ErrExists)
		}
		return 0, fmt.Errorf("create namespace: %w", err)
	}
	return id, nil
}

func (db *core) insertUser(ctx context.Context, tx *sql.Tx, u *User) error {
	ts := db.now()
	err := tx.QueryRowContext(ctx, db.q(`INSERT INTO users (username, email, secret_hash, kind, namespace_id, superuser, enabled, created_at)
		VALUES (?, ?, ?, ?, ?, ?, 1, ?) RETURNING id`), u.Username, u.Email, u.SecretHash, u.Kind, u.NamespaceID, boolInt(u.Superuser), ts).Scan(&u.ID)
	if err != nil {
		if isUnique(err) {
			return fmt.Errorf("user %q %w", u.Username, ErrExists)
		}
		if foreignKeyViolation(err) {
			// A robot's namespace, deleted since it was looked up (a
			// user's is created in the same transaction).
			return fmt.Errorf("namespace of %q: %w", u.Username, ErrNamespaceNotFound)
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

// ErrCreatorGone refuses a write that would make the account making it
// the owner or administrator of what it creates (a push creating its
// repository or organization, the API creating one) when that account was
// deleted since the write was authorized. It is an ErrUserNotFound.
var ErrCreatorGone = fmt.Errorf("%w: the account making this request was deleted", ErrUserNotFound)

// ErrNamespaceNotFound is returned for an unknown namespace.
var ErrNamespaceNotFound = fmt.Errorf("namespace %w", ErrNotFound)

const prefixedUserColumns = "u.id, u.username, u.email, u.secret_hash, u.kind, u.namespace_id, u.superuser, u.enabled, u.description, u.created_at"

// ErrUsersExist is returned by CreateFirstUser once any user exists.
var ErrUsersExist = errors.New("a user exists already")

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

// UserQuery pages through the human users (not robots) for ListUsers.
type UserQuery struct {
	After       string // the usernames after this one
	Limit       int    // at most this many; 0: all
	EnabledOnly bool   // leave disabled users out
}

// ListUsers lists human users by username.
func (db Users) ListUsers(ctx context.Context, q UserQuery) ([]User, error) {
	query, args := "SELECT "+userColumns+" FROM users WHERE kind = ? AND username > ?", []any{UserKindUser, q.After}
	if q.EnabledOnly {
		query += " AND enabled = 1"
	}
	query += " ORDER BY username"
	if q.Limit > 0 {
		query += " LIMIT CAST(? AS BIGINT)"
		args = append(args, q.Limit)
	}
	rows, err := db.read.QueryContext(ctx, db.q(query), args...)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return scanUsers(rows)
}

// UserChange is what UpdateUser changes; nil fields stay as they are.
type UserChange struct {
	Email      *string
	Enabled    *bool
	SecretHash *string // a new password's hash
}

// UpdateUser changes a human user's e-mail address, whether it may sign
// in, or its password, in one transaction, and returns the user as it is
// then (ErrUserNotFound for an unknown name or a robot). Disabling a user
// or setting its password ends its web UI sessions: a browser signed in
// before does not stay signed in, nor resume when the user is enabled
// again.
func (db Users) UpdateUser(ctx context.Context, username string, c UserChange) (User, error) {
	var u User
	err := db.tx(ctx, func(tx *sql.Tx) error {
		var err error
		u, err = scanUser(tx.QueryRowContext(ctx, db.q("SELECT "+userColumns+" FROM users WHERE username = ? AND kind = ?"+db.lockSuffix()), username, UserKindUser))
		if errors.Is(err, sql.ErrNoRows) {
			return ErrUserNotFound
		}
		if err != nil {
			return fmt.Errorf("look up user: %w", err)
		}
		if c.Email != nil {
			u.Email = *c.Email
		}
		if c.SecretHash != nil {
			u.SecretHash = *c.SecretHash
		}
		endSessions := c.SecretHash != nil
		if c.Enabled != nil {
			endSessions = endSessions || !*c.Enabled
			u.Enabled = *c.Enabled
		}
		if _, err := tx.ExecContext(ctx, db.q("UPDATE users SET email = ?, secret_hash = ?, enabled = ? WHERE id = ?"),
			u.Email, u.SecretHash, boolInt(u.Enabled), u.ID); err != nil {
			return fmt.Errorf("update user: %w", err)
		}
		if endSessions {
			if _, err := tx.ExecContext(ctx, db.q("DELETE FROM web_sessions WHERE user_id = ?"), u.ID); err != nil {
				return fmt.Errorf("end the user's sessions: %w", err)
			}
		}
		return nil
	})
	return u, err
}

// tokenNameFree fails with ErrExists when an unrevoked access token has
// the name.
func (db *core) tokenNameFree(ctx context.Context, tx *sql.Tx, name string) error {
	var n int
	if err := tx.QueryRowContext(ctx, db.q("SELECT COUNT(*) FROM access_tokens WHERE name = ? AND revoked_at = 0"), name).Scan(&n); err != nil {
		return fmt.Errorf("look up access tokens named %q: %w", name, err)
	}
	if n > 0 {
		return fmt.Errorf("name %q is an access token's: %w", name, ErrExists)
	}
	return nil
}
