package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMisspelledVariableRefused: berth serve and berth admin refuse a
// BERTH_* variable that names no setting before they open anything, and
// say which setting was meant; before, BERTH_EXTERNALURL was ignored and
// the server started with no external URL.
func TestMisspelledVariableRefused(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("BERTH_EXTERNALURL", "https://registry.example.com")
	for _, args := range [][]string{
		{"serve", "--data-dir", dir, "--addr", "127.0.0.1:0"},
		{"admin", "user", "list", "--data-dir", dir},
	} {
		// Bounded: a server that starts all the same stops.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		cmd := rootCmd()
		cmd.SetOut(&bytes.Buffer{})
		cmd.SetErr(&bytes.Buffer{})
		cmd.SetArgs(args)
		err := cmd.ExecuteContext(ctx)
		cancel()
		if err == nil || !strings.Contains(err.Error(), "BERTH_EXTERNALURL is not a setting: did you mean BERTH_EXTERNAL_URL?") {
			t.Fatalf("berth %s with BERTH_EXTERNALURL: %v", args[0], err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "berth.db")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the database was opened: %v", err)
	}
}
