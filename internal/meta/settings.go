package meta

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// settingsSchema holds facts about the installation that every replica
// must agree on, one row per name (today: the fingerprint of the secret
// key that seals stored secrets). A value is written once, by the first
// replica to start, and compared by every later one.
const settingsSchema = `
CREATE TABLE settings (
	name TEXT PRIMARY KEY,
	value TEXT NOT NULL,
	created_at BIGINT NOT NULL
)`

// Settings are installation-wide facts shared by every replica.
type Settings struct{ *core }

// Settings returns the store of installation-wide settings.
func (db *DB) Settings() Settings { return Settings{db.core} }

// Setting returns the value of name and whether it is set.
func (db Settings) Setting(ctx context.Context, name string) (string, bool, error) {
	var v string
	err := db.write.ReadRowContext(ctx, db.q("SELECT value FROM settings WHERE name = ?"), name).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("read setting %s: %w", name, err)
	}
	return v, true, nil
}

// RecordedSetting reads the value of name from the PostgreSQL database dsn
// names without migrating it, for what a server must agree with (its
// secret key's fingerprint) before Open moves the schema: a replica that
// would refuse to start must not upgrade the schema under the running
// ones first. A database without the settings table (a new one) has
// nothing recorded. For an SQLite dsn it reads nothing (an SQLite store
// has one server) and reports nothing recorded.
func RecordedSetting(ctx context.Context, dsn, name string) (string, bool, error) {
	if !strings.HasPrefix(dsn, "postgres://") && !strings.HasPrefix(dsn, "postgresql://") {
		return "", false, nil
	}
	db, err := open(dsn, false)
	if err != nil {
		return "", false, err
	}
	defer db.Close()
	var exists bool
	if err := db.read.QueryRowContext(ctx, "SELECT to_regclass('settings') IS NOT NULL").Scan(&exists); err != nil {
		return "", false, fmt.Errorf("read setting %s: %w", name, err)
	}
	if !exists {
		return "", false, nil
	}
	return db.Settings().Setting(ctx, name)
}

// SetSettingIfNone records value for name unless a value is recorded
// already, and returns the value that holds: the caller's, or the one of
// whoever recorded first (replicas starting together agree on one).
func (db Settings) SetSettingIfNone(ctx context.Context, name, value string) (string, error) {
	if _, err := db.write.ExecContext(ctx, db.q("INSERT INTO settings (name, value, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING"),
		name, value, db.now()); err != nil {
		return "", fmt.Errorf("record setting %s: %w", name, err)
	}
	v, ok, err := db.Setting(ctx, name)
	if err == nil && !ok {
		err = fmt.Errorf("setting %s vanished after it was recorded", name)
	}
	return v, err
}

// SealedSample returns one stored secret sealed with the secret key
// (an upstream password of a mirror or a pull-through cache, or a sealed
// token-signing key), so that a starting replica can check that its key
// opens what is stored; ok is false when nothing sealed is stored.
func (db Settings) SealedSample(ctx context.Context) (sealed string, ok bool, err error) {
	for _, query := range []string{
		"SELECT password_sealed FROM repository_mirrors WHERE password_sealed LIKE 'v1:%' LIMIT 1",
		"SELECT password_sealed FROM proxy_caches WHERE password_sealed LIKE 'v1:%' LIMIT 1",
		"SELECT private_pem FROM signing_keys WHERE private_pem LIKE 'v1:%' ORDER BY id LIMIT 1",
	} {
		err := db.read.QueryRowContext(ctx, query).Scan(&sealed)
		if err == nil {
			return sealed, true, nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return "", false, fmt.Errorf("read a sealed secret: %w", err)
		}
	}
	return "", false, nil
}
