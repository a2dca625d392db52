package mirror_test

import (
	"context"
	"encoding/json"
	"errors"
	"github.com/berth-dev/berth/internal/wire"
	"io"
	stdlog "log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/mirror"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/storage/fs"
)

type fixture struct {
	db       *meta.DB
	copier   *mirror.Copier
	berth    string // host of a Berth serving the same store
	upstream string // host of the upstream registry
	corrupt  bool
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{db: metatest.Open(t, "sqlite")}
	driver, err := fs.New(t.TempDir(), fs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	policy := oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	f.copier = mirror.NewCopier(wire.CopierStores(f.db), driver, policy, 0, log)
	b := httptest.NewServer(registry.New(wire.RegistryStores(f.db), driver, registry.Options{Policy: policy, Logger: log}))
	t.Cleanup(b.Close)
	f.berth = strings.TrimPrefix(b.URL, "http://")
	// The upstream: go-containerregistry's registry behind Basic auth,
	// able to corrupt blobs on demand.
	up := ggcrregistry.New(ggcrregistry.Logger(stdlog.New(io.Discard, "", 0)))
	u := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if user, pw, ok := r.BasicAuth(); !ok || user != "up" || pw != "secret" {
			w.Header().Set("WWW-Authenticate", `Basic realm="upstream"`)
			http.Error(w, "auth", http.StatusUnauthorized)
			return
		}
		if f.corrupt && r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			w.Write([]byte("not the bytes you asked for"))
			return
		}
		up.ServeHTTP(w, r)
	}))
	t.Cleanup(u.Close)
	f.upstream = strings.TrimPrefix(u.URL, "http://")
	return f
}

var upAuth = remote.WithAuth(&authn.Basic{Username: "up", Password: "secret"})

func (f *fixture) pushUpstream(t *testing.T, ref string, idx v1.ImageIndex, img v1.Image) v1.Hash {
	t.Helper()
	r, err := name.ParseReference(f.upstream+"/"+ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if idx != nil {
		if err := remote.WriteIndex(r, idx, upAuth); err != nil {
			t.Fatal(err)
		}
		d, _ := idx.Digest()
		return d
	}
	if err := remote.Write(r, img, upAuth); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	return d
}

func TestImport(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	idx, err := random.Index(2048, 2, 2) // two platforms
	if err != nil {
		t.Fatal(err)
	}
	idx = mutate.IndexMediaType(idx, types.OCIImageIndex)
	want := f.pushUpstream(t, "library/base:1.9", idx, nil)

	req := mirror.ImportRequest{Source: f.upstream + "/library/base:1.9", Username: "up", Password: "secret", Insecure: true,
		Repo: "mirror/base", Tags: []string{"1.9", "1.9-2"}, Actor: "alice"}
	got, st, err := f.copier.Import(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if got.String() != want.String() || st.Manifests != 3 || st.BlobsFetched != 6 {
		t.Fatalf("import: %s %+v, want %s, 3 manifests and 6 blobs", got, st, want)
	}
	// Served by Berth, byte for byte: the index and both platforms.
	for _, tag := range []string{"1.9", "1.9-2"} {
		r, _ := name.ParseReference(f.berth+"/mirror/base:"+tag, name.Insecure)
		pulled, err := remote.Index(r)
		if err != nil {
			t.Fatal(err)
		}
		if d, _ := pulled.Digest(); d != want {
			t.Fatalf("%s: %s, want %s", tag, d, want)
		}
		im, _ := pulled.IndexManifest()
		for _, m := range im.Manifests {
			img, err := remote.Image(r.Context().Digest(m.Digest.String()))
			if err != nil {
				t.Fatal(err)
			}
			layers, _ := img.Layers()
			for _, l := range layers {
				rc, err := l.Compressed()
				if err != nil {
					t.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, rc); err != nil { // ggcr verifies the digest
					t.Fatal(err)
				}
				rc.Close()
			}
		}
	}
	// One repo_push event for the import, naming both tags.
	evs, _ := f.db.Outbox().EventsAfter(ctx, 0, 100)
	var pushes []string
	for _, e := range evs {
		var d struct {
			Digest      string   `json:"digest"`
			UpdatedTags []string `json:"updated_tags"`
		}
		json.Unmarshal(e.Data, &d)
		if e.Kind == meta.EventRepoPush && len(d.UpdatedTags) > 0 {
			pushes = append(pushes, d.Digest+" "+strings.Join(d.UpdatedTags, ","))
		}
	}
	if len(pushes) != 1 || pushes[0] != want.String()+" 1.9,1.9-2" {
		t.Fatalf("repo_push events with tags: %v", pushes)
	}

	// NoForce: an existing target tag fails before anything is copied.
	other, _ := random.Image(1024, 1)
	f.pushUpstream(t, "library/other:1", nil, other)
	_, _, err = f.copier.Import(ctx, mirror.ImportRequest{Source: f.upstream + "/library/other:1", Username: "up", Password: "secret",
		Insecure: true, Repo: "mirror/base", Tags: []string{"1.9"}})
	if !errors.Is(err, mirror.ErrTagExists) {
		t.Fatalf("NoForce over an existing tag: %v", err)
	}
	od, _ := other.Digest()
	if _, err := f.db.Manifests().GetManifest(ctx, "mirror/base", "", digest.Digest(od.String()), false); err == nil {
		t.Fatal("NoForce copied content before failing")
	}
	// Force moves the tag.
	if _, _, err := f.copier.Import(ctx, mirror.ImportRequest{Source: f.upstream + "/library/other:1", Username: "up", Password: "secret",
		Insecure: true, Repo: "mirror/base", Tags: []string{"1.9"}, Force: true}); err != nil {
		t.Fatal(err)
	}
	if m, _ := f.db.Manifests().GetManifest(ctx, "mirror/base", "1.9", "", false); m.Digest.String() != od.String() {
		t.Fatalf("Force left 1.9 at %s", m.Digest)
	}

	// A second repository of the namespace with the same content links,
	// downloads nothing (its actor may read the first: MayLink); one of
	// another namespace downloads (see
	// TestImportDoesNotLinkOtherNamespacesBlobs).
	_, st, err = f.copier.Import(ctx, mirror.ImportRequest{Source: f.upstream + "/library/base:1.9", Username: "up", Password: "secret",
		Insecure: true, Repo: "mirror/stable", Tags: []string{"stable"}, MayLink: func(context.Context, string) bool { return true }})
	if err != nil || st.BlobsFetched != 0 || st.BlobsLinked != 6 {
		t.Fatalf("import of stored content: %+v %v (want 0 fetched, 6 linked)", st, err)
	}
	_, st, err = f.copier.Import(ctx, mirror.ImportRequest{Source: f.upstream + "/library/base:1.9", Username: "up", Password: "secret",
		Insecure: true, Repo: "team/base", Tags: []string{"stable"}, MayLink: func(context.Context, string) bool { return true }})
	if err != nil || st.BlobsFetched != 6 || st.BlobsLinked != 0 {
		t.Fatalf("import of content stored for another namespace: %+v %v (want 6 fetched, none linked)", st, err)
	}

	// Wrong credentials and bad requests fail clearly.
	if _, _, err := f.copier.Import(ctx, mirror.ImportRequest{Source: f.upstream + "/library/base:1.9", Username: "up", Password: "nope",
		Insecure: true, Repo: "x/y", Tags: []string{"a"}}); err == nil {
		t.Fatal("import with wrong upstream credentials succeeded")
	}
	// Without Insecure an upstream without TLS is refused, although
	// go-containerregistry would fall back to plain HTTP for a loopback
	// address by itself (and send the credentials in clear text).
	if _, _, err := f.copier.Import(ctx, mirror.ImportRequest{Source: f.upstream + "/library/base:1.9", Username: "up", Password: "secret",
		Repo: "x/plain", Tags: []string{"a"}}); err == nil || !strings.Contains(err.Error(), "plain HTTP") {
		t.Fatalf("import over plain HTTP without insecure: %v", err)
	}
	var inv *mirror.InvalidImportError
	for _, bad := range []mirror.ImportRequest{{Source: "::", Repo: "x/y"}, {Source: f.upstream + "/a:b", Repo: "X"}, {Source: f.upstream + "/a:b", Repo: "x/y", Tags: []string{"-bad"}}} {
		if _, _, err := f.copier.Import(ctx, bad); !errors.As(err, &inv) {
			t.Errorf("import %+v: %v, want InvalidImportError", bad, err)
		}
	}
}

// TestImportRefusesCorruptContent: bytes that do not match their digest
// are not stored and no tag moves.
func TestImportRefusesCorruptContent(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	img, _ := random.Image(4096, 2)
	f.pushUpstream(t, "library/img:1", nil, img)
	f.corrupt = true
	_, _, err := f.copier.Import(ctx, mirror.ImportRequest{Source: f.upstream + "/library/img:1", Username: "up", Password: "secret",
		Insecure: true, Repo: "mirror/img", Tags: []string{"1"}})
	if err == nil {
		t.Fatal("corrupt upstream content was imported")
	}
	if _, err := f.db.Manifests().GetManifest(ctx, "mirror/img", "1", "", false); !errors.Is(err, meta.ErrManifestNotFound) {
		t.Fatalf("a tag points at content that failed verification: %v", err)
	}
}
