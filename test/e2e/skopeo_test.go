package e2e

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"slices"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// TestSkopeoLayoutRoundTrip copies an OCI layout made in the test to the
// registry and back, converts it to Docker schema 2 on the way to another
// repository, and deletes it.
func TestSkopeoLayoutRoundTrip(t *testing.T) {
	begin(t)
	requireTool(t, "skopeo")
	repo := uniqueRepo(t, "img")
	ref := "docker://" + registryHost + "/" + repo + ":v1"
	img := newImage(t, true, "linux/amd64")
	want := digestOf(t, img)
	rawManifest, _ := img.RawManifest()
	rawConfig, _ := img.RawConfigFile()
	src := filepath.Join(t.TempDir(), "src")
	writeLayout(t, src, map[string]v1.Image{"v1": img})

	skopeo(t, "copy", "--preserve-digests", "--dest-tls-verify=false", "oci:"+src+":v1", ref)

	if raw := skopeo(t, "inspect", "--raw", "--tls-verify=false", ref); raw != string(rawManifest) {
		t.Fatalf("skopeo inspect --raw returned other bytes:\n%s\nwant:\n%s", raw, rawManifest)
	}
	if cfg := skopeo(t, "inspect", "--config", "--raw", "--tls-verify=false", ref); cfg != string(rawConfig) {
		t.Fatalf("skopeo inspect --config --raw:\n%s\nwant:\n%s", cfg, rawConfig)
	}
	var info struct {
		Digest       string
		Architecture string
		Os           string
		Layers       []string
		Labels       map[string]string
	}
	if err := json.Unmarshal([]byte(skopeo(t, "inspect", "--tls-verify=false", ref)), &info); err != nil {
		t.Fatal(err)
	}
	if info.Digest != want || info.Architecture != "amd64" || info.Os != "linux" ||
		!slices.Equal(info.Layers, layerDigests(t, img)) || info.Labels["dev.berth.e2e"] != t.Name() {
		t.Fatalf("skopeo inspect: %+v; want digest %s, linux/amd64, layers %v", info, want, layerDigests(t, img))
	}
	var tags struct{ Tags []string }
	if err := json.Unmarshal([]byte(skopeo(t, "list-tags", "--tls-verify=false", "docker://"+registryHost+"/"+repo)), &tags); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tags.Tags, []string{"v1"}) {
		t.Fatalf("skopeo list-tags: %v, want [v1]", tags.Tags)
	}

	// Back into a fresh OCI layout: same manifest, config and layers.
	out := filepath.Join(t.TempDir(), "out")
	skopeo(t, "copy", "--src-tls-verify=false", ref, "oci:"+out+":v1")
	lp, err := layout.FromPath(out)
	if err != nil {
		t.Fatal(err)
	}
	back, err := lp.Image(mustHash(t, want))
	if err != nil {
		t.Fatalf("copied-back layout has no image %s: %v", want, err)
	}
	if got := digestOf(t, back); got != want {
		t.Fatalf("copied-back image digest %s, want %s", got, want)
	}
	if got, _ := back.RawConfigFile(); string(got) != string(rawConfig) {
		t.Fatalf("copied-back config differs")
	}
	for _, l := range layerDigests(t, img) {
		layer, err := back.LayerByDigest(mustHash(t, l))
		if err != nil {
			t.Fatalf("copied-back layer %s: %v", l, err)
		}
		rc, err := layer.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		h, _, err := v1.SHA256(rc)
		rc.Close()
		if err != nil || h.String() != l {
			t.Fatalf("copied-back layer file digest %s (%v), want %s", h, err, l)
		}
	}

	// skopeo converts to Docker schema 2 into another repository.
	conv := uniqueRepo(t, "converted")
	convRef := "docker://" + registryHost + "/" + conv + ":v2s2"
	skopeo(t, "copy", "--format", "v2s2", "--src-tls-verify=false", "--dest-tls-verify=false", ref, convRef)
	raw := skopeo(t, "inspect", "--raw", "--tls-verify=false", convRef)
	var m struct {
		MediaType string
		Layers    []struct{ MediaType, Digest string }
	}
	if err := json.Unmarshal([]byte(raw), &m); err != nil || m.MediaType != mtDockerManifest || len(m.Layers) != 2 {
		t.Fatalf("converted manifest (%v): %s", err, raw)
	}
	for i, l := range m.Layers {
		if l.MediaType != mtDockerLayer || l.Digest != layerDigests(t, img)[i] {
			t.Fatalf("converted layer %d: %+v", i, l)
		}
	}
	requireManifest(t, conv, sha256Digest([]byte(raw)), mtDockerManifest)

	// skopeo delete resolves the tag and deletes the manifest by digest.
	skopeo(t, "delete", "--tls-verify=false", ref)
	if r := getManifest(t, repo, want); r.Status != http.StatusNotFound {
		t.Fatalf("GET manifest after skopeo delete: %s, want 404", r)
	}
	if r := getManifest(t, repo, "v1"); r.Status != http.StatusNotFound {
		t.Fatalf("GET tag v1 after skopeo delete: %s, want 404", r)
	}
	requireManifest(t, conv, sha256Digest([]byte(raw)), mtDockerManifest)
}

func mustHash(t *testing.T, s string) v1.Hash {
	t.Helper()
	h, err := v1.NewHash(s)
	if err != nil {
		t.Fatal(err)
	}
	return h
}
