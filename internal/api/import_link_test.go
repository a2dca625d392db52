package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	stdlog "log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/testenv"
)

// importFrom posts an import of source into repo as user and returns the
// status and the answer.
func (e *importEnv) importFrom(user, source, repo string) (int, map[string]any) {
	e.t.Helper()
	b, _ := json.Marshal(map[string]any{"source": source, "repository": repo, "tags": []string{"1"}, "mode": "Force"})
	req, _ := http.NewRequest(http.MethodPost, e.url+"/api/v1/import", strings.NewReader(string(b)))
	req.Header.Set("Content-Type", "application/json")
	req.SetBasicAuth(user, e.env.Secret(user))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	json.NewDecoder(res.Body).Decode(&out)
	return res.StatusCode, out
}

// TestImportLinksOnlyBlobsTheImporterMayRead: an import links a blob that
// another repository of the namespace has only when the importer may pull
// from that repository, as a /v2 mount does. Bob, with write on acme/other
// and no role on private acme/secret, serves from his own registry a
// manifest naming a layer of acme/secret without its bytes: the import
// fails and acme/other does not serve the layer. A token scoped to
// acme/other, made by acme's owner, fares no better. Once bob may read
// acme/secret, the same import links the layer and downloads nothing.
func TestImportLinksOnlyBlobsTheImporterMayRead(t *testing.T) {
	for _, dialect := range testenv.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newImportEnvWith(t, testenv.Options{Dialect: dialect})
			e.user("bob", false)
			ctx := context.Background()
			img, err := random.Image(512, 1)
			if err != nil {
				t.Fatal(err)
			}
			layers, _ := img.Layers()
			lh, _ := layers[0].Digest()
			layer := digest.Digest(lh.String())
			e.expect("alice", "POST", "/api/v1/repository", `{"namespace":"acme","repository":"secret","visibility":"private"}`, http.StatusCreated)
			berth := strings.TrimPrefix(e.url, "http://")
			secret, _ := name.ParseReference(berth+"/acme/secret:1", name.Insecure)
			if err := remote.Write(secret, img, remote.WithAuth(&authn.Basic{Username: "alice", Password: e.env.Secret("alice")})); err != nil {
				t.Fatal(err)
			}
			e.expect("alice", "POST", "/api/v1/repository", `{"namespace":"acme","repository":"other","visibility":"private"}`, http.StatusCreated)
			e.expect("alice", "PUT", "/api/v1/repository/acme/other/permissions/user/bob", `{"role":"write"}`, http.StatusOK)

			// Bob's registry: it names the layer, and has not its bytes.
			var hide atomic.Bool
			up := ggcrregistry.New(ggcrregistry.Logger(stdlog.New(io.Discard, "", 0)))
			evil := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if hide.Load() && strings.Contains(r.URL.Path, "/blobs/"+layer.String()) {
					http.Error(w, `{"errors":[{"code":"BLOB_UNKNOWN"}]}`, http.StatusNotFound)
					return
				}
				up.ServeHTTP(w, r)
			}))
			t.Cleanup(evil.Close)
			e.imp.transport = evil.Client().Transport
			source := strings.TrimPrefix(evil.URL, "https://") + "/bob/app:1"
			src, _ := name.ParseReference(source)
			if err := remote.Write(src, img, remote.WithTransport(e.imp.transport)); err != nil {
				t.Fatal(err)
			}
			hide.Store(true)

			refused := func(who string) {
				t.Helper()
				if st, out := e.importFrom(who, source, "acme/other"); st == http.StatusCreated {
					t.Fatalf("%s's import naming acme/secret's layer without its bytes: %d %v", who, st, out)
				}
				if _, err := e.db.Blobs().RepositoryBlob(ctx, "acme/other", layer); !errors.Is(err, meta.ErrBlobNotFound) {
					t.Fatalf("after %s's import, acme/other links acme/secret's layer (%v)", who, err)
				}
				if res, _ := e.env.Do("bob", http.MethodGet, "/v2/acme/other/blobs/"+layer.String(), nil); res.StatusCode != http.StatusNotFound {
					t.Fatalf("after %s's import, GET the layer from acme/other: %d, want 404", who, res.StatusCode)
				}
			}
			refused("bob")
			e.env.AccessToken("other-token", "alice", []auth.TokenScope{{Repository: "acme/other",
				Actions: []string{auth.TokenContentRead, auth.TokenContentWrite, auth.TokenMetadataRead, auth.TokenMetadataWrite}}})
			refused("other-token")

			// May bob read acme/secret, the layer is linked from there.
			e.expect("alice", "PUT", "/api/v1/repository/acme/secret/permissions/user/bob", `{"role":"read"}`, http.StatusOK)
			st, out := e.importFrom("bob", source, "acme/other")
			if st != http.StatusCreated || out["blobs_fetched"] != 0.0 || out["blobs_linked"] == 0.0 {
				t.Fatalf("import by a reader of acme/secret: %d %v, want 201 with the layer linked and nothing fetched", st, out)
			}
			if res, _ := e.env.Do("bob", http.MethodGet, "/v2/acme/other/blobs/"+layer.String(), nil); res.StatusCode != http.StatusOK {
				t.Fatalf("GET the linked layer from acme/other: %d", res.StatusCode)
			}
		})
	}
}
