package main

import (
	"context"
	"errors"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-dev/berth/internal/meta"
)

// TestImportChecks: berth import refuses what the API's import refuses
// (POST /api/v1/import): a one-part repository name (a repository outside
// any namespace), a namespace that does not exist (before, a typo made an
// organization nobody owns), a proxy cache organization (its content is
// its upstream's) and a repository that takes no pushes (READ_ONLY,
// MIRROR); each leaves nothing behind. Into an existing namespace it
// imports.
func TestImportChecks(t *testing.T) {
	upstream := httptest.NewServer(registry.New())
	defer upstream.Close()
	ref, err := name.ParseReference(strings.TrimPrefix(upstream.URL, "http://") + "/library/app:1")
	if err != nil {
		t.Fatal(err)
	}
	img, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, args := range [][]string{
		{"user", "create", "alice"},
		{"org", "create", "cache", "--owner", "alice"},
		{"repo", "create", "alice/frozen", "--state", "READ_ONLY"},
		{"repo", "create", "alice/mirrored", "--state", "MIRROR"},
	} {
		if out, err := runIn(t, "", append(append([]string{"admin"}, args...), "--data-dir", dir)...); err != nil {
			t.Fatal(err, out)
		}
	}
	ctx := context.Background()
	db, err := meta.Open(ctx, filepath.Join(dir, "berth.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.ProxyCaches().SetProxyCache(ctx, meta.ProxyCache{Namespace: "cache", Upstream: "registry-1.docker.io", CreatedBy: "test"}); err != nil {
		t.Fatal(err)
	}

	for repo, want := range map[string]string{
		"app":            "want NAMESPACE/NAME",
		"aliec/app":      `namespace "aliec" does not exist`,
		"cache/app":      "cache is a proxy cache organization",
		"alice/frozen":   "alice/frozen is read-only",
		"alice/mirrored": "alice/mirrored is a mirror",
	} {
		out, err := runIn(t, "", "import", ref.String(), "--repository", repo, "--tag", "1", "--insecure", "--data-dir", dir)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("import into %s: %v, want an error saying %q\n%s", repo, err, want, out)
		}
		if _, err := db.Manifests().GetManifest(ctx, repo, "1", "", false); !errors.Is(err, meta.ErrManifestNotFound) {
			t.Fatalf("import into %s stored the tag: %v", repo, err)
		}
	}
	for _, repo := range []string{"app", "aliec/app", "cache/app"} {
		if ri, err := db.Repositories().Repository(ctx, repo); err != nil || ri.Exists {
			t.Fatalf("a refused import left repository %s (%v)", repo, err)
		}
	}
	if _, err := db.Users().NamespaceByName(ctx, "aliec"); !errors.Is(err, meta.ErrNamespaceNotFound) {
		t.Fatalf("a refused import made the namespace aliec: %v", err)
	}

	if out, err := runIn(t, "", "import", ref.String(), "--repository", "alice/app", "--tag", "1", "--insecure", "--data-dir", dir); err != nil {
		t.Fatalf("import into alice/app: %v\n%s", err, out)
	}
	if _, err := db.Manifests().GetManifest(ctx, "alice/app", "1", "", false); err != nil {
		t.Fatalf("alice/app:1 after the import: %v", err)
	}
}
