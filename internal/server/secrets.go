package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/meta"
)

// keyFingerprintSetting names the settings row holding the fingerprint of
// the secret key every replica must share (auth.KeyFingerprint).
const keyFingerprintSetting = "secret_key_fingerprint"

// openSealer returns the sealer of stored secrets (webhook secrets,
// upstream passwords, token-signing keys) after checking that this
// server's key is the one the database's secrets are sealed with: the
// first server to start records its key's fingerprint, and every later
// one, on any replica, must match it or refuse to start. On PostgreSQL,
// where replicas share the database, a server without secretKey refuses
// unless its key file is the one recorded: a replica that quietly
// generated a key of its own could not read what the others sealed.
func openSealer(ctx context.Context, db *meta.DB, cfg config.Config) (*auth.Sealer, error) {
	path := filepath.Join(cfg.DataDir, "secret.key")
	settings := db.Settings()
	recorded, have, err := settings.Setting(ctx, keyFingerprintSetting)
	if err != nil {
		return nil, fmt.Errorf("secret key: %w", err)
	}
	source := "secretKey"
	if cfg.SecretKey == "" {
		source = path
		if db.Dialect() == "postgres" {
			if !have {
				return nil, fmt.Errorf("secretKey is not set: servers sharing a PostgreSQL database are replicas and must all be given"+
					" the same secretKey (BERTH_SECRET_KEY; make one with `openssl rand -base64 32`, or, if this server ran before,"+
					" use the key in %s), or they cannot read each other's sealed secrets", path)
			}
			if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
				return nil, errors.New("secretKey is not set: set it (BERTH_SECRET_KEY) to the secret key the other replicas" +
					" sharing this PostgreSQL database use")
			}
		}
	}
	key, err := auth.LoadOrCreateKey(cfg.SecretKey, path)
	if err != nil {
		return nil, err
	}
	sealer, err := auth.NewSealer(key)
	if err != nil {
		return nil, err
	}
	fp := auth.KeyFingerprint(key)
	mismatch := func(what string) error {
		return fmt.Errorf("secret key mismatch: the key from %s %s; give every server sharing this database the same"+
			" secretKey (BERTH_SECRET_KEY): the one the first server used", source, what)
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
				return nil, mismatch("does not open the secrets already sealed in the database")
			}
		}
		if recorded, err = settings.SetSettingIfNone(ctx, keyFingerprintSetting, fp); err != nil {
			return nil, fmt.Errorf("secret key: %w", err)
		}
	}
	if recorded != fp {
		return nil, mismatch("is not the key this database's secrets are sealed with (its fingerprint is recorded in the database)")
	}
	return sealer, nil
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
