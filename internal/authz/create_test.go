package authz_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/authz"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// requireNothingLeft checks that no repository, namespace, permission or
// event of repo exists.
func (e *env) requireNothingLeft(step, repo string) {
	e.t.Helper()
	ctx := context.Background()
	ns, _, _ := strings.Cut(repo, "/")
	if ri, err := e.db.Repositories().Repository(ctx, repo); err != nil || ri.Exists {
		e.t.Fatalf("%s left repository %s (%v)", step, repo, err)
	}
	if _, err := e.db.Users().NamespaceByName(ctx, ns); !errors.Is(err, meta.ErrNamespaceNotFound) {
		e.t.Fatalf("%s left namespace %s: %v", step, ns, err)
	}
	alice, err := e.db.Users().UserByName(ctx, "alice")
	if err != nil {
		e.t.Fatal(err)
	}
	if st, err := e.db.Access().StandingOf(ctx, alice, repo); err != nil || st.Role != "" || st.CanCreate {
		e.t.Fatalf("%s left alice a standing on %s: %+v (%v)", step, repo, st, err)
	}
	evs, err := e.db.Outbox().EventsAfter(ctx, 0, 1000)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, ev := range evs {
		if ev.Repository == repo {
			e.t.Fatalf("%s left event %s of %s", step, ev.Kind, repo)
		}
	}
}

// TestAbortedPushCreatesNothing: a push that creates its repository (and,
// with CREATE_NAMESPACE_ON_PUSH, its organization and its creator's admin
// permission) creates them only when its first blob or its manifest
// commits: one refused before anything is authorized, an upload cancelled
// or abandoned half way, a blob refused for its digest, and a manifest
// refused for a missing layer leave no repository, no organization, no
// permission and no repo_created event.
func TestAbortedPushCreatesNothing(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, dialect, authz.Options{CreatePrivateRepoOnPush: true, CreateNamespaceOnPush: true})
			alice := basicAuth("alice", alicePW)
			send := func(method, path, body string, want int) *http.Response {
				t.Helper()
				req, _ := http.NewRequest(method, e.url+path, strings.NewReader(body))
				req.Header.Set("Authorization", alice)
				if method == "PATCH" {
					req.Header.Set("Content-Type", "application/octet-stream")
				}
				if method == "PUT" && strings.Contains(path, "/manifests/") {
					req.Header.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != want {
					t.Fatalf("%s %s: %d %s; want %d", method, path, resp.StatusCode, b, want)
				}
				return resp
			}

			// Refused before anything is authorized: anonymous.
			if a := e.raw("POST", "/v2/ghost1/app/blobs/uploads/", ""); a.status != 401 {
				t.Fatalf("anonymous push: %d %s", a.status, a.body)
			}
			e.requireNothingLeft("an anonymous push", "ghost1/app")

			// An upload cancelled after a chunk.
			loc := send("POST", "/v2/ghost2/app/blobs/uploads/", "", 202).Header.Get("Location")
			loc = send("PATCH", loc, "half a layer", 202).Header.Get("Location")
			send("DELETE", loc, "", 204)
			e.requireNothingLeft("a cancelled upload", "ghost2/app")

			// An upload abandoned after a chunk (it expires later).
			loc = send("POST", "/v2/ghost3/app/blobs/uploads/", "", 202).Header.Get("Location")
			send("PATCH", loc, "half a layer", 202)
			e.requireNothingLeft("an abandoned upload", "ghost3/app")

			// A blob whose bytes do not match its digest.
			send("POST", "/v2/ghost4/app/blobs/uploads/?digest="+digest.FromString("other bytes").String(), "these bytes", 400)
			e.requireNothingLeft("a blob refused for its digest", "ghost4/app")

			// A manifest that names a layer never uploaded.
			m := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.example+json",` +
				`"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},` +
				`"layers":[{"mediaType":"application/vnd.example+json","digest":"` + digest.FromString("never uploaded").String() + `","size":5}]}`
			send("PUT", "/v2/ghost5/app/manifests/v1", m, 400)
			e.requireNothingLeft("a manifest refused for a missing layer", "ghost5/app")

			// The same push, complete, creates all three.
			if err := e.push("ghost5/app:v1", "alice", alicePW); err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if ri, err := e.db.Repositories().Repository(ctx, "ghost5/app"); err != nil || !ri.Exists {
				t.Fatalf("repository after the push: %+v %v", ri, err)
			}
			u, _ := e.db.Users().UserByName(ctx, "alice")
			if st, _ := e.db.Access().StandingOf(ctx, u, "ghost5/app"); st.Role != "admin" {
				t.Fatalf("creator's role after the push: %q", st.Role)
			}
		})
	}
}
