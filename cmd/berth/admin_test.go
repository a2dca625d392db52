package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/meta"
)

func runIn(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	cmd := rootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func TestAdmin(t *testing.T) {
	dir := t.TempDir()
	out, err := runIn(t, "", "admin", "user", "create", "alice", "--superuser", "--data-dir", dir)
	if err != nil {
		t.Fatal(err, out)
	}
	password := regexp.MustCompile(`password: (\S+)`).FindStringSubmatch(out)[1]
	if _, err := runIn(t, "bob-password\n", "admin", "user", "create", "bob", "--password-stdin", "--data-dir", dir); err != nil {
		t.Fatal(err)
	}
	if _, err := runIn(t, "short\n", "admin", "user", "create", "carol", "--password-stdin", "--data-dir", dir); err == nil {
		t.Fatal("a short password was accepted")
	}
	if _, err := runIn(t, strings.Repeat("a", 1025)+"\n", "admin", "user", "create", "carol", "--password-stdin", "--data-dir", dir); err == nil {
		t.Fatal("a password over 1024 bytes, which no login accepts, was accepted")
	}
	if _, err := runIn(t, "", "admin", "user", "create", "Bad/Name", "--data-dir", dir); err == nil {
		t.Fatal("a bad user name was accepted")
	}
	if _, err := runIn(t, "", "admin", "user", "create", "alice", "--data-dir", dir); err == nil {
		t.Fatal("a second alice was created")
	}
	out, err = runIn(t, "", "admin", "robot", "create", "alice+ci", "--data-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	robotToken := regexp.MustCompile(`token: (\S+)`).FindStringSubmatch(out)[1]
	out, err = runIn(t, "", "admin", "token", "create", "ci-token", "--scope", "alice/*=content/read,content/write", "--expires", "24h", "--data-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	secret := regexp.MustCompile(`secret: (\S+)`).FindStringSubmatch(out)[1]
	for _, bad := range []string{"alice/*", "alice/*=content/all", "../x=content/read"} {
		if _, err := runIn(t, "", "admin", "token", "create", "t2", "--scope", bad, "--data-dir", dir); err == nil {
			t.Fatalf("scope %q accepted", bad)
		}
	}

	ctx := context.Background()
	db, err := meta.Open(ctx, filepath.Join(dir, "berth.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	alice, _ := db.Users().UserByName(ctx, "alice")
	bob, _ := db.Users().UserByName(ctx, "bob")
	if !alice.Superuser || !auth.VerifyPassword(alice.SecretHash, password) || !auth.VerifyPassword(bob.SecretHash, "bob-password") || bob.Superuser {
		t.Fatal("users not stored as created")
	}
	robot, _ := db.Users().UserByName(ctx, "alice+ci")
	if robot.SecretHash != auth.HashSecret(robotToken) || strings.Contains(robot.SecretHash, robotToken) {
		t.Fatal("robot token not stored hashed")
	}
	tok, _ := db.Access().AccessTokenByName(ctx, "ci-token")
	if tok.SecretHash != auth.HashSecret(secret) || tok.ExpiresAt.IsZero() || !strings.Contains(string(tok.Scopes), "alice/*") {
		t.Fatalf("token stored as %+v", tok)
	}

	// Reset (a browser signed in before is signed out) and revoke.
	signedIn := func(id string) bool {
		_, err := db.WebSessions().WebSession(ctx, id, time.Now())
		return err == nil
	}
	if err := db.WebSessions().CreateWebSession(ctx, meta.WebSession{IDHash: "before reset", UserID: alice.ID, CSRF: "c", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := runIn(t, "new-password-1\n", "admin", "user", "reset-password", "alice", "--password-stdin", "--data-dir", dir); err != nil {
		t.Fatal(err)
	}
	alice, _ = db.Users().UserByName(ctx, "alice")
	if !auth.VerifyPassword(alice.SecretHash, "new-password-1") || auth.VerifyPassword(alice.SecretHash, password) {
		t.Fatal("password not reset")
	}
	if signedIn("before reset") {
		t.Error("the browser signed in with the old password is still signed in")
	}

	// Disable and enable, superusers too (the API refuses them); list.
	if _, err := runIn(t, "", "admin", "user", "disable", "alice", "--data-dir", dir); err != nil {
		t.Fatal(err)
	}
	if alice, _ = db.Users().UserByName(ctx, "alice"); alice.Enabled {
		t.Fatal("alice is still enabled")
	}
	out, err = runIn(t, "", "admin", "user", "list", "--data-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^alice\s+true\s+disabled$`).MatchString(out) || !regexp.MustCompile(`(?m)^bob\s+false\s+enabled$`).MatchString(out) ||
		strings.Contains(out, "alice+ci") {
		t.Fatalf("user list:\n%s", out)
	}
	if _, err := runIn(t, "", "admin", "user", "enable", "alice", "--data-dir", dir); err != nil {
		t.Fatal(err)
	}
	if alice, _ = db.Users().UserByName(ctx, "alice"); !alice.Enabled {
		t.Fatal("alice is still disabled")
	}
	for _, name := range []string{"alice+ci", "nobody"} {
		if _, err := runIn(t, "", "admin", "user", "disable", name, "--data-dir", dir); err == nil || !strings.Contains(err.Error(), "no user") {
			t.Errorf("disable %s: %v", name, err)
		}
	}
	if _, err := runIn(t, "", "admin", "token", "revoke", "ci-token", "--data-dir", dir); err != nil {
		t.Fatal(err)
	}
	if tok, _ = db.Access().AccessTokenByName(ctx, "ci-token"); tok.RevokedAt.IsZero() {
		t.Fatal("token not revoked")
	}
	audit, _ := db.Access().AuditLog(ctx, "", 0, 100)
	if len(audit) < 6 {
		t.Fatalf("%d audit entries for 6 administrative actions", len(audit))
	}
}

// TestConfigDefaultsFile: the file BERTH_CONFIG_DEFAULTS names (the
// container image's) gives defaults that a --config file, BERTH_*
// variables and flags override; before, the image set BERTH_DATA_DIR and
// BERTH_ADDR, which overrode a --config file's dataDir and addr.
func TestConfigDefaultsFile(t *testing.T) {
	dir := t.TempDir()
	defaults := filepath.Join(dir, "defaults.yaml")
	if err := os.WriteFile(defaults, []byte("dataDir: "+filepath.Join(dir, "image-data")+"\naddr: 0.0.0.0:5000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mine := filepath.Join(dir, "mine.yaml")
	if err := os.WriteFile(mine, []byte("dataDir: "+filepath.Join(dir, "my-data")+"\naddr: 127.0.0.1:8080\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(config.DefaultsFileVariable, defaults)
	load := func(args ...string) config.Config {
		t.Helper()
		var st settings
		cmd := &cobra.Command{Use: "x", RunE: func(*cobra.Command, []string) error { return nil }}
		st.register(cmd, true)
		cmd.SetArgs(args)
		if err := cmd.Execute(); err != nil {
			t.Fatal(err)
		}
		cfg, err := st.load(cmd)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	if cfg := load(); cfg.DataDir != filepath.Join(dir, "image-data") || cfg.Addr != "0.0.0.0:5000" {
		t.Fatalf("without --config: %s %s", cfg.DataDir, cfg.Addr)
	}
	if cfg := load("--config", mine); cfg.DataDir != filepath.Join(dir, "my-data") || cfg.Addr != "127.0.0.1:8080" {
		t.Fatalf("with --config: %s %s, want the file's", cfg.DataDir, cfg.Addr)
	}
	t.Setenv("BERTH_ADDR", "127.0.0.1:9000")
	if cfg := load("--config", mine, "--data-dir", filepath.Join(dir, "flag-data")); cfg.DataDir != filepath.Join(dir, "flag-data") || cfg.Addr != "127.0.0.1:9000" {
		t.Fatalf("with a variable and a flag: %s %s", cfg.DataDir, cfg.Addr)
	}
}
