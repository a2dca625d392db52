package server_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/server"
)

// TestTokensAcrossReplicasAndRestarts starts two servers on one database
// (PostgreSQL when BERTH_TEST_POSTGRES_DSN is set, else one SQLite file)
// and a third after both stopped: a token issued by one is accepted by the
// others, because the signing key lives in the database.
func TestTokensAcrossReplicasAndRestarts(t *testing.T) {
	ctx := context.Background()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	if os.Getenv(metatest.EnvPostgresDSN) != "" {
		cfg.Database.URL = metatest.PostgresDSN(t)
		cfg.SecretKey = testSecretKey // replicas on PostgreSQL share one key
	}
	start := func() (*httptest.Server, func()) {
		srv, err := server.New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		hs := httptest.NewServer(srv.Handler())
		return hs, func() { hs.Close(); srv.Close() }
	}
	a, stopA := start()
	b, stopB := start()
	db, err := meta.Open(ctx, cfg.DatabaseURL())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	hash, _ := auth.HashPassword(pw)
	if _, err := db.Users().CreateUser(ctx, meta.User{Username: "alice", SecretHash: hash}); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", a.URL+"/v2/auth?service=berth&scope=repository:alice/app:pull,push", nil)
	req.SetBasicAuth("alice", pw)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("token from replica A: %v %d", err, resp.StatusCode)
	}
	var body struct{ Token string }
	json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	use := func(url string) int {
		req, _ := http.NewRequest("POST", url+"/v2/alice/app/blobs/uploads/", nil)
		req.Header.Set("Authorization", "Bearer "+body.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := use(b.URL); s != 202 {
		t.Fatalf("token of A at replica B: %d", s)
	}
	stopA()
	stopB()
	c, stopC := start()
	defer stopC()
	if s := use(c.URL); s != 202 {
		t.Fatalf("token after a restart: %d", s)
	}
	keys, _ := db.Access().SigningKeys(ctx)
	if len(keys) != 1 {
		t.Fatalf("%d signing keys, want the one generated at the first start", len(keys))
	}
}
