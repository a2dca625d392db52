package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// podman runs podman without a daemon, with its storage in a temp dir.
func podmanCmd(t *testing.T, store string) func(args ...string) string {
	global := []string{
		"--root", filepath.Join(store, "root"), "--runroot", filepath.Join(store, "runroot"),
		"--tmpdir", filepath.Join(store, "tmp"), "--storage-driver", "vfs",
		"--cgroup-manager=cgroupfs", "--events-backend=file",
	}
	return func(args ...string) string {
		t.Helper()
		return mustRun(t, opts{Dir: store}, "podman", append(slices.Clone(global), args...)...)
	}
}

// TestPodman builds an image FROM scratch, pushes it as OCI and as Docker
// schema 2, pulls it back into empty storage and pushes a manifest list.
func TestPodman(t *testing.T) {
	begin(t)
	requireTool(t, "podman")
	store := t.TempDir()
	ctxDir := mkdir(t, filepath.Join(store, "context"))
	files := map[string]string{"hello.txt": "hello from podman\n", "data.txt": strings.Repeat("berth ", 300)}
	for n, c := range files {
		if err := os.WriteFile(filepath.Join(ctxDir, n), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	containerfile := "FROM scratch\nCOPY hello.txt /hello.txt\nCOPY data.txt /data/data.txt\nLABEL dev.berth.e2e=podman\n"
	if err := os.WriteFile(filepath.Join(ctxDir, "Containerfile"), []byte(containerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	podman := podmanCmd(t, store)
	podman("build", "--layers", "-t", "localhost/e2e:v1", ctxDir)
	var diffIDs []string
	if err := json.Unmarshal([]byte(podman("image", "inspect", "--format", "{{json .RootFS.Layers}}", "localhost/e2e:v1")), &diffIDs); err != nil || len(diffIDs) != 2 {
		t.Fatalf("podman image inspect: %d layers (%v)", len(diffIDs), err)
	}

	repo := uniqueRepo(t, "podman")
	base := registryHost + "/" + repo
	pushed := map[string]string{}
	for _, tc := range []struct{ format, tag, mediaType, layerType string }{
		{"oci", "oci", mtOCIManifest, mtOCILayerGzip},
		{"v2s2", "v2s2", mtDockerManifest, mtDockerLayer},
	} {
		digestFile := filepath.Join(store, tc.tag+".digest")
		podman("push", "--tls-verify=false", "--format", tc.format, "--digestfile", digestFile, "localhost/e2e:v1", "docker://"+base+":"+tc.tag)
		b, err := os.ReadFile(digestFile)
		if err != nil {
			t.Fatal(err)
		}
		dig := strings.TrimSpace(string(b))
		pushed[tc.tag] = dig
		if r := getManifest(t, repo, tc.tag); sha256Digest(r.Body) != dig {
			t.Fatalf("tag %s is not what podman pushed (%s): %s", tc.tag, dig, r)
		}
		var m v1.Manifest
		if err := json.Unmarshal(requireManifest(t, repo, dig, tc.mediaType), &m); err != nil {
			t.Fatal(err)
		}
		cfg := regDo(t, "GET", "/v2/"+repo+"/blobs/"+m.Config.Digest.String(), nil, nil)
		var cf v1.ConfigFile
		if err := json.Unmarshal(cfg.Body, &cf); err != nil || sha256Digest(cfg.Body) != m.Config.Digest.String() {
			t.Fatalf("config blob %s: %v %s", m.Config.Digest, err, cfg)
		}
		var gotDiffIDs []string
		for _, d := range cf.RootFS.DiffIDs {
			gotDiffIDs = append(gotDiffIDs, d.String())
		}
		if !slices.Equal(gotDiffIDs, diffIDs) || cf.Config.Labels["dev.berth.e2e"] != "podman" {
			t.Fatalf("pushed config: diff_ids %v labels %v, want %v", gotDiffIDs, cf.Config.Labels, diffIDs)
		}
		got := map[string]string{}
		for _, l := range m.Layers {
			if string(l.MediaType) != tc.layerType {
				t.Fatalf("layer media type %s, want %s", l.MediaType, tc.layerType)
			}
			blob := regDo(t, "GET", "/v2/"+repo+"/blobs/"+l.Digest.String(), nil, nil)
			if sha256Digest(blob.Body) != l.Digest.String() {
				t.Fatalf("GET layer %s: %s", l.Digest, blob)
			}
			for n, c := range gzipTarFiles(t, blob.Body) {
				got[n] = c
			}
		}
		if got["hello.txt"] != files["hello.txt"] || got["data/data.txt"] != files["data.txt"] {
			t.Fatalf("files in the pushed layers: %v", mapKeys(got))
		}
	}

	// A fresh store pulls what was pushed and sees the same digest.
	fresh := podmanCmd(t, t.TempDir())
	fresh("pull", "--tls-verify=false", "docker://"+base+":oci")
	if got := strings.TrimSpace(fresh("image", "inspect", "--format", "{{.Digest}}", base+":oci")); got != pushed["oci"] {
		t.Fatalf("pulled image digest %s, want %s", got, pushed["oci"])
	}

	// A manifest list made and pushed by podman.
	podman("manifest", "create", "localhost/e2e-list")
	podman("manifest", "add", "--tls-verify=false", "localhost/e2e-list", "docker://"+base+":oci")
	podman("manifest", "push", "--all", "--tls-verify=false", "localhost/e2e-list", "docker://"+base+":list")
	r := getManifest(t, repo, "list")
	var idx v1.IndexManifest
	if err := json.Unmarshal(r.Body, &idx); err != nil || r.Status != 200 || len(idx.Manifests) != 1 || idx.Manifests[0].Digest.String() != pushed["oci"] {
		t.Fatalf("podman manifest push: %s; want a list holding %s", r, pushed["oci"])
	}
	requireManifest(t, repo, sha256Digest(r.Body), r.Header.Get("Content-Type"))
	if ct := r.Header.Get("Content-Type"); ct != mtOCIIndex && ct != mtDockerList {
		t.Fatalf("manifest list Content-Type %q", ct)
	}
}

// gzipTarFiles reads the regular files of a gzipped tar layer.
func gzipTarFiles(t *testing.T, blob []byte) map[string]string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(blob))
	if err != nil {
		t.Fatalf("layer is not gzip: %v", err)
	}
	out := map[string]string{}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("reading layer tar: %v", err)
		}
		if h.Typeflag == tar.TypeReg {
			b, _ := io.ReadAll(tr)
			out[strings.TrimPrefix(h.Name, "./")] = string(b)
		}
	}
}
