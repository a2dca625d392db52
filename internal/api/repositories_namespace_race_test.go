package api_test

import (
	"context"
	"errors"
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

// deletedFirst is the repository store with the namespace's deletion run
// just before CreateRepository: the organization goes after the handler
// looked it up and authorized the create.
type deletedFirst struct {
	api.RepositoryStore
	del func(ctx context.Context) error
}

func (s deletedFirst) CreateRepository(ctx context.Context, name, visibility, description, actor string, adminUserID int64) error {
	if err := s.del(ctx); err != nil {
		return err
	}
	return s.RepositoryStore.CreateRepository(ctx, name, visibility, description, actor, adminUserID)
}

// TestCreateRepositoryInDeletedOrganization: a repository created through
// the API in an organization deleted since the handler looked it up is
// answered 404 and not created (it was, without a namespace, for whoever
// created the name next to inherit).
func TestCreateRepositoryInDeletedOrganization(t *testing.T) {
	testenv.ForDialects(t, testenv.Options{}, func(t *testing.T, env *testenv.Env) {
		ctx := context.Background()
		alice := env.User("alice", false)
		if _, err := env.DB.Organizations().CreateOrganization(ctx, "acme", alice.ID); err != nil {
			t.Fatal(err)
		}
		stores := wire.APIStores(env.DB, 7*24*time.Hour)
		stores.Repositories = deletedFirst{stores.Repositories, func(ctx context.Context) error {
			return env.DB.Organizations().DeleteOrganization(ctx, "acme")
		}}
		srv := httptest.NewServer(api.New(stores, env.Authz, api.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}))
		t.Cleanup(srv.Close)
		req, err := http.NewRequest("POST", srv.URL+"/api/v1/repository", strings.NewReader(`{"namespace":"acme","repository":"app","visibility":"private"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.SetBasicAuth("alice", env.Secret("alice"))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusNotFound {
			t.Errorf("create in an organization deleted meanwhile: %d %s, want 404", res.StatusCode, body)
		}
		if ri, err := env.DB.Repositories().Repository(ctx, "acme/app"); err != nil || ri.Exists {
			t.Errorf("acme/app: exists %v, %v", ri.Exists, err)
		}
		if _, err := env.DB.Users().NamespaceByName(ctx, "acme"); !errors.Is(err, meta.ErrNamespaceNotFound) {
			t.Errorf("acme: %v, want it deleted", err)
		}
	})
}
