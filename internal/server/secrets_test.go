package server_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/server"
)

// testSecretKey is the secretKey of tests whose servers share a
// PostgreSQL database (replicas must share one key).
var testSecretKey = newSecretKey()

func newSecretKey() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// sharedDatabase returns a database URL for servers of the dialect to
// share: one SQLite file, or a fresh PostgreSQL schema.
func sharedDatabase(t *testing.T, dialect string) string {
	if dialect == "postgres" {
		return metatest.PostgresDSN(t)
	}
	return "sqlite:" + filepath.Join(t.TempDir(), "shared.db")
}

// replicaConfig is the configuration of one replica: its own data
// directory (and so its own key file), the shared database.
func replicaConfig(t *testing.T, dbURL, secretKey string) config.Config {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Database.URL = dbURL
	cfg.SecretKey = secretKey
	cfg.Storage.Filesystem.Fsync = false
	cfg.Log.Level = "error"
	cfg.Scan.Enabled = false
	cfg.Notifications.AllowedHosts = []string{"loopback"}
	return cfg
}

func newServer(t *testing.T, cfg config.Config) (*server.Server, error) {
	var logs io.Writer = io.Discard
	if os.Getenv("BERTH_TEST_LOG") != "" {
		logs = os.Stderr
	}
	srv, err := server.New(context.Background(), cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err == nil {
		t.Cleanup(func() { srv.Close() })
	}
	return srv, err
}

// TestSecretKeyAcrossReplicas starts servers on one database: one with
// another secret key refuses to start and says why; one with the same key
// reads what the first sealed (a webhook secret created through one and
// signed with by the other's delivery worker).
func TestSecretKeyAcrossReplicas(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			dbURL := sharedDatabase(t, dialect)
			key := newSecretKey()
			cfgA := replicaConfig(t, dbURL, key)
			cfgA.Auth.Mode = "none"
			a, err := newServer(t, cfgA)
			if err != nil {
				t.Fatal(err)
			}
			hsA := httptest.NewServer(a.Handler())
			defer hsA.Close()

			other := replicaConfig(t, dbURL, newSecretKey())
			other.Auth.Mode = "none"
			if _, err := newServer(t, other); err == nil || !strings.Contains(err.Error(), "secret key mismatch") ||
				!strings.Contains(err.Error(), "same secretKey") {
				t.Fatalf("a replica with another key started, or said %v", err)
			}
			// No secretKey: the generated key file cannot be the shared
			// key (on PostgreSQL the server says secretKey is missing).
			if _, err := newServer(t, replicaConfig(t, dbURL, "")); err == nil {
				t.Fatal("a replica without secretKey started next to one with a key")
			} else if dialect == "postgres" && !strings.Contains(err.Error(), "secretKey is not set") {
				t.Fatalf("without secretKey on PostgreSQL: %v", err)
			}

			// The same key: B delivers what was configured through A.
			received := make(chan bool, 4)
			const secret = "shared-webhook-secret"
			hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				received <- events.Verify([]byte(secret), body, r.Header.Get(events.SignatureHeader))
			}))
			defer hook.Close()
			body := `{"event":"repo_push","method":"webhook","config":{"url":"` + hook.URL + `","secret":"` + secret + `"}}`
			resp, err := http.Post(hsA.URL+"/api/v1/superuser/notification/", "application/json", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			var n struct{ UUID string }
			json.NewDecoder(resp.Body).Decode(&n)
			resp.Body.Close()
			if resp.StatusCode != 201 {
				t.Fatalf("create notification through A: %d", resp.StatusCode)
			}
			cfgB := replicaConfig(t, dbURL, key)
			cfgB.Auth.Mode = "none"
			b, err := newServer(t, cfgB)
			if err != nil {
				t.Fatalf("a replica with the same key: %v", err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- b.Serve(ctx, ln) }()
			defer func() { cancel(); <-done }()
			resp, err = http.Post(hsA.URL+"/api/v1/superuser/notification/"+n.UUID+"/test", "application/json", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			select {
			case ok := <-received:
				if !ok {
					t.Fatal("the delivery by B was not signed with the secret given to A")
				}
			case <-time.After(30 * time.Second):
				t.Fatal("B's worker delivered nothing")
			}
		})
	}
}

// TestSigningKeysSealedAtRest: the token-signing key is stored sealed,
// one stored in clear by an earlier version is sealed at the next start,
// and a token issued by one replica is accepted by another.
func TestSigningKeysSealedAtRest(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			dbURL := sharedDatabase(t, dialect)
			db, err := meta.Open(ctx, dbURL)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			// As an earlier version left it: the key in clear.
			k, err := auth.NewSigningKey()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := db.Access().AddSigningKeyIfNone(ctx, meta.SigningKeyRow{KID: k.ID, PrivatePEM: k.PrivatePEM}); err != nil {
				t.Fatal(err)
			}
			hash, _ := auth.HashPassword(pw)
			if _, err := db.Users().CreateUser(ctx, meta.User{Username: "alice", SecretHash: hash}); err != nil {
				t.Fatal(err)
			}
			key := newSecretKey()
			var urls []string
			for range 2 {
				srv, err := newServer(t, replicaConfig(t, dbURL, key))
				if err != nil {
					t.Fatal(err)
				}
				hs := httptest.NewServer(srv.Handler())
				defer hs.Close()
				urls = append(urls, hs.URL)
			}
			rows, err := db.Access().SigningKeys(ctx)
			if err != nil || len(rows) != 1 {
				t.Fatalf("signing keys: %v %d", err, len(rows))
			}
			if s := string(rows[0].PrivatePEM); strings.Contains(s, "PRIVATE KEY") || !strings.HasPrefix(s, "v1:") || rows[0].KID != k.ID {
				t.Fatalf("stored signing key not sealed: %.40q", s)
			}
			req, _ := http.NewRequest("GET", urls[0]+"/v2/auth?service=berth&scope=repository:alice/app:pull,push", nil)
			req.SetBasicAuth("alice", pw)
			resp, err := http.DefaultClient.Do(req)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("token from replica A: %v %v", err, resp)
			}
			var body struct{ Token string }
			json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			req, _ = http.NewRequest("POST", urls[1]+"/v2/alice/app/blobs/uploads/", nil)
			req.Header.Set("Authorization", "Bearer "+body.Token)
			resp, err = http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 202 {
				t.Fatalf("token of A at replica B: %d", resp.StatusCode)
			}
		})
	}
}
