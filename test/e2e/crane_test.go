package e2e

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// crane runs crane against the plain-HTTP registry.
func crane(t *testing.T, args ...string) string {
	t.Helper()
	return runTool(t, "crane", append(args, "--insecure")...)
}

func TestCranePushPull(t *testing.T) {
	begin(t)
	for _, tc := range []struct {
		name                string
		oci                 bool
		manifestType, layer string
	}{
		{"docker", false, mtDockerManifest, mtDockerLayer},
		{"oci", true, mtOCIManifest, mtOCILayerGzip},
	} {
		t.Run(tc.name, func(t *testing.T) {
			requireTool(t, "crane")
			repo := uniqueRepo(t, "img")
			ref := registryHost + "/" + repo + ":v1"
			img := newImage(t, tc.oci, "linux/amd64")
			dir := filepath.Join(t.TempDir(), "layout")
			writeLayout(t, dir, map[string]v1.Image{"v1": img})
			want := digestOf(t, img)

			crane(t, "push", dir, ref)

			if got := strings.TrimSpace(crane(t, "digest", ref)); got != want {
				t.Fatalf("crane digest %s = %s, want %s", ref, got, want)
			}
			raw, _ := img.RawManifest()
			gotManifest := crane(t, "manifest", ref)
			if gotManifest != string(raw) {
				t.Fatalf("crane manifest returned other bytes:\n%s\nwant:\n%s", gotManifest, raw)
			}
			var m struct{ MediaType string }
			if err := json.Unmarshal([]byte(gotManifest), &m); err != nil || m.MediaType != tc.manifestType {
				t.Fatalf("manifest mediaType %q (%v), want %q", m.MediaType, err, tc.manifestType)
			}
			requireManifest(t, repo, want, tc.manifestType)
			rawCfg, _ := img.RawConfigFile()
			if got := crane(t, "config", ref); got != string(rawCfg) {
				t.Fatalf("crane config = %s, want %s", got, rawCfg)
			}

			// Every blob comes back with its digest.
			for _, d := range layerDigests(t, img) {
				if got := sha256Digest([]byte(crane(t, "blob", registryHost+"/"+repo+"@"+d))); got != d {
					t.Fatalf("crane blob %s: content digest %s", d, got)
				}
			}
			crane(t, "validate", "--remote", ref)

			// Pull as a docker tarball and as an OCI layout, and compare.
			tarPath := filepath.Join(t.TempDir(), "img.tar")
			crane(t, "pull", ref, tarPath)
			pulled, err := tarball.ImageFromPath(tarPath, nil)
			if err != nil {
				t.Fatalf("read pulled tarball: %v", err)
			}
			if got, want := layerDigests(t, pulled), layerDigests(t, img); !slices.Equal(got, want) {
				t.Fatalf("pulled tarball layers %v, want %v", got, want)
			}
			ociDir := filepath.Join(t.TempDir(), "pulled")
			crane(t, "pull", "--format", "oci", ref, ociDir)
			lp, err := layout.ImageIndexFromPath(ociDir)
			if err != nil {
				t.Fatal(err)
			}
			im, err := lp.IndexManifest()
			if err != nil || len(im.Manifests) != 1 || im.Manifests[0].Digest.String() != want {
				t.Fatalf("pulled OCI layout index %+v (%v), want one manifest %s", im, err, want)
			}

			if tags := strings.Fields(crane(t, "ls", registryHost+"/"+repo)); !slices.Equal(tags, []string{"v1"}) {
				t.Fatalf("crane ls = %v, want [v1]", tags)
			}
		})
	}
}

// layerTar builds a one-file layer with archive/tar.
func layerTar(t *testing.T, dir, file, content string) string {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := tw.WriteHeader(&tar.Header{Name: file, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write([]byte(content)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, strings.ReplaceAll(file, "/", "_")+".tar")
	if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// filesInTar reads a flattened filesystem tar (crane export).
func filesInTar(t *testing.T, data []byte) map[string]string {
	t.Helper()
	out := map[string]string{}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("reading exported tar: %v", err)
		}
		b, _ := io.ReadAll(tr)
		out[strings.TrimPrefix(h.Name, "./")] = string(b)
	}
}

// TestCraneAppendExport builds layers with archive/tar, appends them to an
// empty base (Docker types by default, OCI with --oci-empty-base), and reads
// the files back with crane export.
func TestCraneAppendExport(t *testing.T) {
	begin(t)
	for _, tc := range []struct {
		name, flag, mediaType string
	}{
		{"docker", "", mtDockerManifest},
		{"oci", "--oci-empty-base", mtOCIManifest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			requireTool(t, "crane")
			dir := t.TempDir()
			repo := uniqueRepo(t, "app")
			ref := registryHost + "/" + repo + ":latest"
			l1 := layerTar(t, dir, "etc/greeting", "hello from berth e2e\n")
			l2 := layerTar(t, dir, "app/data.txt", strings.Repeat("0123456789", 500))
			args := []string{"append", "-f", l1, "-f", l2, "-t", ref}
			if tc.flag != "" {
				args = append(args, tc.flag)
			}
			out := strings.TrimSpace(crane(t, args...))
			// crane append prints the pushed reference with its digest.
			_, dig, ok := strings.Cut(out, "@")
			if !ok {
				t.Fatalf("crane append printed %q, want REF@DIGEST", out)
			}
			if got := strings.TrimSpace(crane(t, "digest", ref)); got != dig {
				t.Fatalf("crane digest = %s, append said %s", got, dig)
			}
			body := requireManifest(t, repo, dig, tc.mediaType)
			var m v1.Manifest
			if err := json.Unmarshal(body, &m); err != nil || len(m.Layers) != 2 {
				t.Fatalf("manifest has %d layers (%v): %s", len(m.Layers), err, body)
			}
			files := filesInTar(t, []byte(crane(t, "export", ref, "-")))
			if files["etc/greeting"] != "hello from berth e2e\n" || files["app/data.txt"] != strings.Repeat("0123456789", 500) {
				t.Fatalf("crane export: files %v", mapKeys(files))
			}
		})
	}
}

func mapKeys(m map[string]string) []string {
	var k []string
	for s := range m {
		k = append(k, s)
	}
	sort.Strings(k)
	return k
}

// TestCraneTagCopyDelete covers nested repository names, crane tag, crane
// copy between repositories (cross-repository blob mounts), the catalog and
// deletes.
func TestCraneTagCopyDelete(t *testing.T) {
	begin(t)
	requireTool(t, "crane")
	src := uniqueRepo(t, "org/team/app")
	dst := strings.TrimSuffix(src, "org/team/app") + "org/other/app"
	img := newImage(t, true, "linux/amd64")
	dig := digestOf(t, img)
	dir := filepath.Join(t.TempDir(), "layout")
	writeLayout(t, dir, map[string]v1.Image{"v1": img})
	crane(t, "push", dir, registryHost+"/"+src+":v1")

	crane(t, "tag", registryHost+"/"+src+":v1", "v2")
	tags := strings.Fields(crane(t, "ls", registryHost+"/"+src))
	sort.Strings(tags)
	if !slices.Equal(tags, []string{"v1", "v2"}) {
		t.Fatalf("crane ls after tag = %v, want [v1 v2]", tags)
	}
	if got := strings.TrimSpace(crane(t, "digest", registryHost+"/"+src+":v2")); got != dig {
		t.Fatalf("v2 digest %s, want %s", got, dig)
	}

	crane(t, "copy", registryHost+"/"+src+":v1", registryHost+"/"+dst+":copied")
	if got := strings.TrimSpace(crane(t, "digest", registryHost+"/"+dst+":copied")); got != dig {
		t.Fatalf("copied digest %s, want %s", got, dig)
	}
	requireManifest(t, dst, dig, mtOCIManifest)
	for _, d := range layerDigests(t, img) {
		r := regDo(t, http.MethodHead, "/v2/"+dst+"/blobs/"+d, nil, nil)
		if r.Status != http.StatusOK {
			t.Fatalf("HEAD /v2/%s/blobs/%s after copy: %s", dst, d, r)
		}
	}

	// A cross-repository mount asked for directly: 201 with the digest.
	mountRepo := strings.TrimSuffix(src, "org/team/app") + "mounted"
	layer := layerDigests(t, img)[0]
	r := regDo(t, http.MethodPost, "/v2/"+mountRepo+"/blobs/uploads/?mount="+layer+"&from="+src, nil, nil)
	if r.Status != http.StatusCreated || r.Header.Get("Docker-Content-Digest") != layer {
		t.Fatalf("POST /v2/%s/blobs/uploads/?mount=%s&from=%s: %s, want 201 with Docker-Content-Digest", mountRepo, layer, src, r)
	}
	if r := regDo(t, http.MethodGet, "/v2/"+mountRepo+"/blobs/"+layer, nil, nil); r.Status != http.StatusOK || sha256Digest(r.Body) != layer {
		t.Fatalf("GET mounted blob: HTTP %d, digest %s", r.Status, sha256Digest(r.Body))
	}

	catalog := strings.Fields(crane(t, "catalog", registryHost))
	for _, repo := range []string{src, dst} {
		if !slices.Contains(catalog, repo) {
			t.Fatalf("crane catalog does not list %s (%d repositories)", repo, len(catalog))
		}
	}

	// Delete by digest: the manifest and the tags that pointed at it go away
	// in the source repository only.
	crane(t, "delete", registryHost+"/"+src+"@"+dig)
	if r := getManifest(t, src, dig); r.Status != http.StatusNotFound {
		t.Fatalf("GET deleted manifest: %s, want 404", r)
	}
	for _, tag := range []string{"v1", "v2"} {
		if r := getManifest(t, src, tag); r.Status != http.StatusNotFound {
			t.Fatalf("GET tag %s of a deleted manifest: %s, want 404", tag, r)
		}
	}
	if tags := tagList(t, src); len(tags) != 0 {
		t.Fatalf("tags after delete: %v, want none", tags)
	}
	requireManifest(t, dst, dig, mtOCIManifest)

	// Delete by tag is optional in the distribution spec: a registry that
	// does not do it must answer 400 or 405.
	t.Run("delete-tag", func(t *testing.T) {
		crane(t, "tag", registryHost+"/"+dst+":copied", "doomed")
		r := regDo(t, http.MethodDelete, "/v2/"+dst+"/manifests/doomed", nil, nil)
		switch r.Status {
		case http.StatusAccepted:
		case http.StatusBadRequest, http.StatusMethodNotAllowed:
			t.Skipf("the registry does not delete tags (optional in the distribution spec): DELETE /v2/%s/manifests/doomed: %s", dst, r)
		default:
			t.Fatalf("DELETE /v2/%s/manifests/doomed: %s, want 202 (or 400/405 when unsupported)", dst, r)
		}
		if tags := strings.Fields(crane(t, "ls", registryHost+"/"+dst)); slices.Contains(tags, "doomed") || !slices.Contains(tags, "copied") {
			t.Fatalf("crane ls after deleting tag doomed: %v, want copied and not doomed", tags)
		}
		if r := getManifest(t, dst, "doomed"); r.Status != http.StatusNotFound {
			t.Fatalf("GET deleted tag: %s, want 404", r)
		}
		requireManifest(t, dst, dig, mtOCIManifest)
	})
}
