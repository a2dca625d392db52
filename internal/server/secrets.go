package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/meta"
)

// keyFingerprintSetting names the settings row holding the fingerprint of
// the secret key every replica must share (auth.KeyFingerprint).
const keyFingerprintSetting = "secret_key_fingerprint"

// secretKey is this server's secret key and where it came from.
type secretKey struct {
	key    []byte
	source string // "secretKey" or the key file's path
}

// loadSecretKey reads this server's secret key, before the database is
// opened (which migrates it): the key from secretKey, or else the data
// directory's key file, generated on the first start. On PostgreSQL, where
// servers sharing the database are replicas, a server without secretKey
// and without a key file is refused here: a replica that generated a key
// of its own could not read what the others sealed, and it must not move
// the schema past the running replicas' before it stops.
func loadSecretKey(cfg config.Config) (secretKey, error) {
	path := filepath.Join(cfg.DataDir, "secret.key")
	if cfg.SecretKey != "" {
		key, err := auth.LoadOrCreateKey(cfg.SecretKey, path)
		return secretKey{key: key, source: "secretKey"}, err
	}
	if isPostgres(cfg.DatabaseURL()) {
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			return secretKey{}, fmt.Errorf("secretKey is not set: servers sharing a PostgreSQL database are replicas and must all be given"+
				" the same secretKey (BERTH_SECRET_KEY): the one the other replicas use, or for the first server a new one"+
				" (make one with `openssl rand -base64 32`; if this server ran before, use the key in %s)", path)
		}
	}
	key, err := auth.LoadOrCreateKey("", path)
	return secretKey{key: key, source: path}, err
}

// isPostgres reports whether a database URL names a PostgreSQL database.
func isPostgres(dbURL string) bool {
	return strings.HasPrefix(dbURL, "postgres://") || strings.HasPrefix(dbURL, "postgresql://")
}

// openSealer returns the sealer of stored secrets (webhook secrets,
// upstream passwords, token-signing keys) after checking that this
// server's key is the one the database's secrets are sealed with: the
// first server to start records its key's fingerprint, and every later
// one, on any replica, must match it or refuse to start (keyRefusal). On
// PostgreSQL checkRecordedKey made the same check before meta.Open
// migrated the schema; this one also covers the first start after an
// upgrade from a version that recorded no fingerprint, where the key must
// open the secrets already sealed.
func openSealer(ctx context.Context, db *meta.DB, k secretKey) (*auth.Sealer, error) {
	settings := db.Settings()
	recorded, have, err := settings.Setting(ctx, keyFingerprintSetting)
	if err != nil {
		return nil, fmt.Errorf("secret key: %w", err)
	}
	if err := keyRefusal(k, recorded, have, db.Dialect() == "postgres"); err != nil {
		return nil, err
	}
	sealer, err := auth.NewSealer(k.key)
	if err != nil {
		return nil, err
	}
	if !have {
		// The first start, or the first after an upgrade to a version
		// that records the fingerprint: check that the key opens what
		// earlier versions sealed before recording it.
		sample, ok, err := settings.SealedSample(ctx)
		if err != nil {
			return nil, fmt.Errorf("secret key: %w", err)
		}
		if ok {
			if _, err := sealer.Open(sample); err != nil {
				return nil, keyMismatch(k, "does not open the secrets already sealed in the database")
			}
		}
		if recorded, err = settings.SetSettingIfNone(ctx, keyFingerprintSetting, auth.KeyFingerprint(k.key)); err != nil {
			return nil, fmt.Errorf("secret key: %w", err)
		}
		// Another replica may have recorded its fingerprint first.
		if err := keyRefusal(k, recorded, true, false); err != nil {
			return nil, err
		}
	}
	return sealer, nil
}

// checkRecordedKey refuses, before meta.Open migrates a PostgreSQL
// database, a key that is not the one its fingerprint records, or a key
// file where none is recorded: a replica of a new version given the wrong
// key must stop without moving the schema past the running replicas'.
func checkRecordedKey(ctx context.Context, dbURL string, k secretKey) error {
	if !isPostgres(dbURL) {
		return nil
	}
	recorded, have, err := meta.RecordedSetting(ctx, dbURL, keyFingerprintSetting)
	if err != nil {
		return fmt.Errorf("metadata store: %w", err)
	}
	return keyRefusal(k, recorded, have, true)
}

// CheckRecordedKey refuses, as New does before it migrates, a secret key
// that is not the one a PostgreSQL database's fingerprint records: the
// migrate step of a rolling upgrade (berth admin migrate) given the wrong
// key must stop without moving the schema under the running replicas.
// The key is secretKey, or else the data directory's key file; with
// neither there is no key to check and none is generated (the command
// seals nothing). An SQLite database has one server, which checks its
// key itself after migrating.
func CheckRecordedKey(ctx context.Context, cfg config.Config) error {
	if !isPostgres(cfg.DatabaseURL()) {
		return nil
	}
	if cfg.SecretKey == "" {
		if _, err := os.Stat(filepath.Join(cfg.DataDir, "secret.key")); errors.Is(err, os.ErrNotExist) {
			return nil
		}
	}
	k, err := loadSecretKey(cfg)
	if err != nil {
		return err
	}
	recorded, have, err := meta.RecordedSetting(ctx, cfg.DatabaseURL(), keyFingerprintSetting)
	if err != nil {
		return fmt.Errorf("metadata store: %w", err)
	}
	// Not refused where none is recorded: the command seals nothing.
	return keyRefusal(k, recorded, have, false)
}

// keyRefusal is why a server with key k may not use a database whose
// recorded fingerprint is recorded (have: one is): on PostgreSQL a key
// file where none is recorded (replicas must share secretKey), or a key
// of another fingerprint.
func keyRefusal(k secretKey, recorded string, have, postgres bool) error {
	if k.source != "secretKey" && postgres && !have {
		return fmt.Errorf("secretKey is not set: servers sharing a PostgreSQL database are replicas and must all be given"+
			" the same secretKey (BERTH_SECRET_KEY; make one with `openssl rand -base64 32`, or, if this server ran before,"+
			" use the key in %s), or they cannot read each other's sealed secrets", k.source)
	}
	if have && recorded != auth.KeyFingerprint(k.key) {
		return keyMismatch(k, "is not the key this database's secrets are sealed with (its fingerprint is recorded in the database)")
	}
	return nil
}

func keyMismatch(k secretKey, what string) error {
	return fmt.Errorf("secret key mismatch: the key from %s %s; give every server sharing this database the same"+
		" secretKey (BERTH_SECRET_KEY): the one the first server used", k.source, what)
}

// loadTokens builds the token issuer from the signing keys in the
// database, generating the first key on the first start. Every replica
// sharing the database signs and verifies with the same keys. The private
// keys are stored sealed; keys an earlier version stored in clear are
// sealed in place (replicas doing it at once agree: the first wins).
func loadTokens(ctx context.Context, db *meta.DB, cfg config.Auth, sealer *auth.Sealer) (*auth.Tokens, error) {
	rows, err := db.Access().SigningKeys(ctx)
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		k, err := auth.NewSigningKey()
		if err != nil {
			return nil, err
		}
		row := meta.SigningKeyRow{KID: k.ID, PrivatePEM: []byte(sealer.Seal(k.PrivatePEM))}
		if rows, err = db.Access().AddSigningKeyIfNone(ctx, row); err != nil {
			return nil, err
		}
	}
	keys := make([]auth.SigningKey, len(rows))
	for i, r := range rows {
		pem := r.PrivatePEM
		if isClearPEM(pem) {
			if err := db.Access().ReplaceSigningKeyPEM(ctx, r.KID, pem, []byte(sealer.Seal(pem))); err != nil {
				return nil, err
			}
		} else if pem, err = sealer.Open(string(pem)); err != nil {
			return nil, fmt.Errorf("token signing key %s: %w", r.KID, err)
		}
		keys[i] = auth.SigningKey{ID: r.KID, PrivatePEM: pem}
	}
	return auth.NewTokens("berth", cfg.Service, cfg.TokenTTL, keys)
}

// isClearPEM reports whether a stored signing key is a PEM block in clear
// (as versions before sealing stored it) rather than sealed.
func isClearPEM(b []byte) bool { return bytes.HasPrefix(bytes.TrimSpace(b), []byte("-----BEGIN")) }
