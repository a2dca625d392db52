package api_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/api"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/internal/wire"
)

// mirrorsDeletedFirst is the mirror store with the repository's deletion
// run just before the one call named op: the repository (and its mirror,
// which goes with it) is deleted after the handler checked the caller's
// rights and read the mirror.
type mirrorsDeletedFirst struct {
	api.MirrorStore
	op  string
	del func(ctx context.Context) error
}

func (s mirrorsDeletedFirst) before(ctx context.Context, op string) error {
	if op != s.op {
		return nil
	}
	return s.del(ctx)
}

func (s mirrorsDeletedFirst) CreateMirror(ctx context.Context, m meta.Mirror) error {
	if err := s.before(ctx, "create"); err != nil {
		return err
	}
	return s.MirrorStore.CreateMirror(ctx, m)
}

func (s mirrorsDeletedFirst) UpdateMirror(ctx context.Context, m meta.Mirror, reschedule bool) error {
	if err := s.before(ctx, "update"); err != nil {
		return err
	}
	return s.MirrorStore.UpdateMirror(ctx, m, reschedule)
}

func (s mirrorsDeletedFirst) MirrorSyncNow(ctx context.Context, repo string) error {
	if err := s.before(ctx, "sync-now"); err != nil {
		return err
	}
	return s.MirrorStore.MirrorSyncNow(ctx, repo)
}

func (s mirrorsDeletedFirst) MirrorSyncCancel(ctx context.Context, repo string) error {
	if err := s.before(ctx, "sync-cancel"); err != nil {
		return err
	}
	return s.MirrorStore.MirrorSyncCancel(ctx, repo)
}

// TestMirrorOfDeletedRepository: a repository deleted while a mirror
// request runs (after the handler found it and its mirror) is answered
// 404, as a repository that was not there, not 500.
func TestMirrorOfDeletedRepository(t *testing.T) {
	testenv.ForDialects(t, testenv.Options{}, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := env.User("alice", false)
		env.Robot("alice", "mirror")
		const repo = "alice/app"
		body := `{"external_reference":"registry.example:5000/library/alpine","sync_interval":3600,` +
			`"root_rule":{"rule_kind":"tag_glob_csv","rule_value":["*"]},"robot_username":"alice+mirror"}`
		for _, c := range []struct{ op, method, path, body string }{
			{"create", http.MethodPost, "/mirror", body},
			{"update", http.MethodPut, "/mirror", `{"sync_interval":7200}`},
			{"sync-now", http.MethodPost, "/mirror/sync-now", ""},
			{"sync-cancel", http.MethodPost, "/mirror/sync-cancel", ""},
		} {
			t.Run(c.op, func(t *testing.T) {
				if err := env.DB.Repositories().CreateRepository(ctx, repo, "private", "", "alice", alice.ID); err != nil {
					t.Fatal(err)
				}
				if c.op != "create" {
					m := meta.Mirror{Repository: repo, Enabled: true, ExternalReference: "registry.example:5000/library/alpine",
						VerifyTLS: true, SyncInterval: time.Hour, SyncStartDate: time.Now().Add(time.Hour),
						RootRule: meta.MirrorRule{Kind: "tag_glob_csv", Value: []string{"*"}}, RobotUsername: "alice+mirror"}
					if err := env.DB.Mirrors().CreateMirror(ctx, m); err != nil {
						t.Fatal(err)
					}
				}
				stores := wire.APIStores(env.DB, 7*24*time.Hour)
				stores.Mirrors = mirrorsDeletedFirst{stores.Mirrors, c.op, func(ctx context.Context) error {
					return env.DB.Repositories().DeleteRepository(ctx, repo, "alice")
				}}
				srv := httptest.NewServer(api.New(stores, env.Authz, api.Options{Mirrors: fakeMirrors{},
					Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}))
				defer srv.Close()
				req, err := http.NewRequest(c.method, srv.URL+"/api/v1/repository/"+repo+c.path, strings.NewReader(c.body))
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Content-Type", "application/json")
				req.SetBasicAuth("alice", env.Secret("alice"))
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				out, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode != http.StatusNotFound {
					t.Errorf("%s %s of a repository deleted meanwhile: %d %s, want 404", c.method, c.path, res.StatusCode, out)
				}
				if ri, err := env.DB.Repositories().Repository(ctx, repo); err != nil || ri.Exists {
					t.Errorf("%s: exists %v, %v", repo, ri.Exists, err)
				}
			})
		}
	})
}
