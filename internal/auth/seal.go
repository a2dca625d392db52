package auth

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Sealer encrypts secrets that Berth must use again later (webhook signing
// secrets, upstream registry passwords) with AES-256-GCM, so the database
// never holds them in clear.
type Sealer struct {
	aead cipher.AEAD
}

// NewSealer returns a sealer for a 32-byte key.
func NewSealer(key []byte) (*Sealer, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("secret key: %d bytes, want 32", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Sealer{aead: aead}, nil
}

// LoadOrCreateKey returns the key given base64-encoded in encoded, or else
// the one in path, generating it (mode 0600, written durably:
// writeKeyFile) on first use. Replicas that
// share a database must share the key: give it to all of them in the
// configuration.
func LoadOrCreateKey(encoded, path string) ([]byte, error) {
	if encoded != "" {
		k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(encoded))
		if err != nil || len(k) != 32 {
			return nil, errors.New("secret key: want 32 bytes, base64-encoded (openssl rand -base64 32)")
		}
		return k, nil
	}
	if b, err := os.ReadFile(path); err == nil {
		k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
		if err != nil || len(k) != 32 {
			return nil, fmt.Errorf("secret key file %s is damaged", path)
		}
		return k, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("secret key: %w", err)
	}
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("secret key: %w", err)
	}
	switch err := writeKeyFile(path, []byte(base64.StdEncoding.EncodeToString(k)+"\n")); {
	case errors.Is(err, os.ErrExist): // another process made it first
		return LoadOrCreateKey("", path)
	case err != nil:
		return nil, fmt.Errorf("secret key: %w", err)
	}
	return k, nil
}

// writeKeyFile writes a new key file that appears whole or not at all and
// survives a power cut once written: the key goes to a temporary file in
// the same directory, which is flushed and closed, then linked under its
// name (never over a file that exists: os.ErrExist then, and the other
// key stands), and the directory is flushed. A key file that vanished or
// came back empty after a crash would give the next start a new key,
// which opens none of the secrets sealed with the old one.
func writeKeyFile(path string, content []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".secret.key-*") // mode 0600
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // the key stays under path once linked
	if _, err := f.Write(content); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Link(tmp, path); errors.Is(err, os.ErrExist) {
		return err
	} else if err != nil {
		// A file system without hard links (vfat, some FUSE and SMB
		// mounts): create the file exclusively and write it in place. A
		// process starting at the same moment may then read it half
		// written (and refuse it as damaged) until it is whole.
		return writeInPlace(path, content)
	}
	return syncDir(dir)
}

// writeInPlace creates path exclusively (os.ErrExist if it exists) and
// writes, flushes and closes it, then flushes its directory.
func writeInPlace(path string, content []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(content)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return err
	}
	return syncDir(filepath.Dir(path))
}

// syncDir flushes a directory's entries to disk.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// KeyFingerprint identifies a secret key without revealing it: the
// HMAC-SHA256 of a fixed label under the key. Replicas compare it (the
// database keeps it) to find out that they were given different keys;
// nothing about the key can be recovered from it.
func KeyFingerprint(key []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("berth secret key fingerprint v1"))
	return "hmac-sha256:" + base64.RawStdEncoding.EncodeToString(m.Sum(nil))
}

// Seal encrypts plaintext; the result is printable.
func (s *Sealer) Seal(plaintext []byte) string {
	nonce := make([]byte, s.aead.NonceSize())
	rand.Read(nonce)
	return "v1:" + base64.StdEncoding.EncodeToString(s.aead.Seal(nonce, nonce, plaintext, nil))
}

// Open decrypts what Seal returned.
func (s *Sealer) Open(sealed string) ([]byte, error) {
	b64, ok := strings.CutPrefix(sealed, "v1:")
	if !ok {
		return nil, errors.New("sealed secret: unknown format")
	}
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(b) < s.aead.NonceSize() {
		return nil, errors.New("sealed secret: damaged")
	}
	out, err := s.aead.Open(nil, b[:s.aead.NonceSize()], b[s.aead.NonceSize():], nil)
	if err != nil {
		return nil, errors.New("sealed secret: wrong key or damaged")
	}
	return out, nil
}
