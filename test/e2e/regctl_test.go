package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func regctlIn(t *testing.T, o opts, args ...string) string {
	t.Helper()
	return mustRun(t, o, "regctl", append(args, "--host", "reg="+registryHost+",tls=disabled")...)
}

// TestRegctl lists tags and repositories, pushes a blob and a hand-written
// manifest and reads them back, attaches an artifact and deletes a tag.
func TestRegctl(t *testing.T) {
	begin(t)
	requireTool(t, "regctl")
	repo := uniqueRepo(t, "img")
	base := registryHost + "/" + repo
	img := newImage(t, true, "linux/amd64")
	dig := digestOf(t, img)
	pushImage(t, base+":v1", img)

	if tags := strings.Fields(regctl(t, "tag", "ls", base)); !slices.Equal(tags, []string{"v1"}) {
		t.Fatalf("regctl tag ls: %v, want [v1]", tags)
	}
	if got := strings.TrimSpace(regctl(t, "image", "digest", base+":v1")); got != dig {
		t.Fatalf("regctl image digest = %s, want %s", got, dig)
	}
	raw, _ := img.RawManifest()
	if got := regctl(t, "manifest", "get", "--format", "raw-body", base+":v1"); got != string(raw) {
		t.Fatalf("regctl manifest get raw-body:\n%s\nwant:\n%s", got, raw)
	}

	// A blob from stdin, and a manifest written by hand that uses it.
	blob := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{}}`)
	blobDigest := strings.TrimSpace(regctlIn(t, opts{Stdin: blob}, "blob", "put", base))
	if blobDigest != sha256Digest(blob) {
		t.Fatalf("regctl blob put printed %q, want %s", blobDigest, sha256Digest(blob))
	}
	if got := regctl(t, "blob", "get", base, blobDigest); got != string(blob) {
		t.Fatalf("regctl blob get: %q", got)
	}
	manifest := `{"schemaVersion":2,"mediaType":"` + mtOCIManifest + `","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` +
		blobDigest + `","size":` + itoa(len(blob)) + `},"layers":[],"annotations":{"dev.berth.e2e":"hand-written"}}`
	regctlIn(t, opts{Stdin: []byte(manifest)}, "manifest", "put", "--content-type", mtOCIManifest, base+":handmade")
	if got := regctl(t, "manifest", "get", "--format", "raw-body", base+":handmade"); got != manifest {
		t.Fatalf("manifest round trip:\n%s\nwant:\n%s", got, manifest)
	}
	requireManifest(t, repo, sha256Digest([]byte(manifest)), mtOCIManifest)
	tags := strings.Fields(regctl(t, "tag", "ls", base))
	sort.Strings(tags)
	if !slices.Equal(tags, []string{"handmade", "v1"}) {
		t.Fatalf("regctl tag ls: %v, want [handmade v1]", tags)
	}

	// An artifact attached to v1, listed and fetched through its subject.
	work := t.TempDir()
	artifact := `{"scanner":"e2e","findings":[]}`
	if err := os.WriteFile(filepath.Join(work, "report.json"), []byte(artifact), 0o644); err != nil {
		t.Fatal(err)
	}
	const reportType = "application/vnd.example.report+json"
	regctlIn(t, opts{Dir: work}, "artifact", "put", "--artifact-type", reportType, "--subject", base+":v1",
		"-f", "report.json", "--file-media-type", "application/json")
	var list struct {
		Descriptors []v1.Descriptor `json:"descriptors"`
	}
	out := regctl(t, "artifact", "list", "--format", "{{json .}}", base+":v1")
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("regctl artifact list: %v\n%s", err, out)
	}
	// Berth's scanner attaches its own SBOM to every scanned image, in the
	// background (annotation dev.berth.sbom): it may be listed or not yet.
	list.Descriptors = slices.DeleteFunc(list.Descriptors, func(d v1.Descriptor) bool { return d.Annotations["dev.berth.sbom"] != "" })
	if len(list.Descriptors) != 1 || string(list.Descriptors[0].ArtifactType) != reportType {
		t.Fatalf("regctl artifact list: %s; want one %s", out, reportType)
	}
	reportDigest := list.Descriptors[0].Digest.String()
	body := requireManifest(t, repo, reportDigest, mtOCIManifest)
	var am v1.Manifest
	if err := json.Unmarshal(body, &am); err != nil || am.Subject == nil || am.Subject.Digest.String() != dig {
		t.Fatalf("artifact manifest subject: %s", body)
	}
	if got := regctl(t, "artifact", "get", "--subject", base+":v1", "--filter-artifact-type", reportType); got != artifact {
		t.Fatalf("regctl artifact get: %q, want %q", got, artifact)
	}
	if got := regctl(t, "artifact", "get", base+"@"+reportDigest); got != artifact {
		t.Fatalf("regctl artifact get by digest: %q", got)
	}

	repos := strings.Fields(regctl(t, "repo", "ls", registryHost))
	if !slices.Contains(repos, repo) {
		t.Fatalf("regctl repo ls does not list %s (%d repositories)", repo, len(repos))
	}

	// regctl tag delete removes one tag and leaves the image and other tags.
	regctl(t, "image", "copy", base+":v1", base+":extra")
	regctl(t, "tag", "delete", base+":extra")
	tags = tagList(t, repo)
	if slices.Contains(tags, "extra") || !slices.Contains(tags, "v1") {
		t.Fatalf("tags after regctl tag delete extra: %v", tags)
	}
	if r := getManifest(t, repo, "extra"); r.Status != http.StatusNotFound {
		t.Fatalf("GET deleted tag extra: %s", r)
	}
	requireManifest(t, repo, dig, mtOCIManifest)

	regctl(t, "manifest", "delete", base+"@"+sha256Digest([]byte(manifest)))
	if r := getManifest(t, repo, "handmade"); r.Status != http.StatusNotFound {
		t.Fatalf("GET handmade after regctl manifest delete: %s", r)
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
