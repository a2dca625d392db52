package server_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/meta"
)

// TestQuotaDocExamples runs the curl examples of the "Namespace quotas"
// section of docs/lifecycle.md against a real server in token mode, as
// TestAPIDocExamples does for docs/api.md: $AUTH is the ordinary user
// alice, $ADMIN the superuser root.
func TestQuotaDocExamples(t *testing.T) {
	raw, err := os.ReadFile("../../docs/lifecycle.md")
	if err != nil {
		t.Fatal(err)
	}
	// Only the section's lines, the others blanked, so that line numbers
	// stay the file's.
	lines := strings.Split(string(raw), "\n")
	in := false
	for i, l := range lines {
		if strings.HasPrefix(l, "## ") {
			in = l == "## Namespace quotas"
		}
		if !in {
			lines[i] = ""
		}
	}
	examples := parseDocExamples(t, strings.Join(lines, "\n"))
	if len(examples) < 10 {
		t.Fatalf("docs/lifecycle.md: %d curl examples found in Namespace quotas; the parser lost them", len(examples))
	}
	ctx := context.Background()
	_, hs, db := startServer(t, func(*config.Config) {})
	hash, _ := auth.HashPassword(pw)
	for _, u := range []meta.User{{Username: "alice", SecretHash: hash}, {Username: "root", SecretHash: hash, Superuser: true}} {
		if _, err := db.Users().CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	runDocExamples(t, "docs/lifecycle.md", examples, hs.URL, map[string]string{"BERTH": hs.URL, "AUTH": "alice:" + pw, "ADMIN": "root:" + pw})
}
