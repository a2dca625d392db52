package auth

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSealer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secret.key")
	k, err := LoadOrCreateKey("", path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v", fi.Mode())
	}
	k2, _ := LoadOrCreateKey("", path)
	if string(k) != string(k2) {
		t.Fatal("key not persisted")
	}
	s, _ := NewSealer(k)
	sealed := s.Seal([]byte("webhook secret"))
	if strings.Contains(sealed, "webhook secret") || sealed == s.Seal([]byte("webhook secret")) {
		t.Fatal("sealing is not encryption with a fresh nonce")
	}
	if got, err := s.Open(sealed); err != nil || string(got) != "webhook secret" {
		t.Fatalf("Open = %q, %v", got, err)
	}
	other, _ := LoadOrCreateKey("", filepath.Join(t.TempDir(), "k"))
	o, _ := NewSealer(other)
	if _, err := o.Open(sealed); err == nil {
		t.Fatal("opened with another key")
	}
	if _, err := s.Open(sealed[:len(sealed)-4] + "AAAA"); err == nil {
		t.Fatal("opened a tampered secret")
	}
	if _, err := LoadOrCreateKey("c2hvcnQ=", path); err == nil {
		t.Fatal("a short configured key was accepted")
	}
}
