package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

const (
	orasArtifactType = "application/vnd.example.test"
	sbomArtifactType = "application/vnd.example.sbom+json"
)

type orasDescriptor struct {
	Reference    string           `json:"reference"`
	MediaType    string           `json:"mediaType"`
	Digest       string           `json:"digest"`
	Size         int64            `json:"size"`
	ArtifactType string           `json:"artifactType"`
	Referrers    []orasDescriptor `json:"referrers"`
}

func orasJSON(t *testing.T, dir string, args ...string) orasDescriptor {
	t.Helper()
	out := mustRun(t, opts{Dir: dir}, "oras", append(args, "--plain-http", "--format", "json")...)
	var d orasDescriptor
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatalf("oras %s: output is not JSON: %v\n%s", args[0], err, out)
	}
	return d
}

// TestOrasArtifactReferrers pushes an artifact with oras, pulls it, attaches
// an SBOM to it as a referrer and discovers it.
func TestOrasArtifactReferrers(t *testing.T) {
	begin(t)
	requireTool(t, "oras")
	work := t.TempDir()
	const content = "hello from the berth e2e suite\n"
	const sbom = `{"bomFormat":"CycloneDX","specVersion":"1.5"}`
	if err := os.WriteFile(filepath.Join(work, "file.txt"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "sbom.json"), []byte(sbom), 0o644); err != nil {
		t.Fatal(err)
	}
	repo := uniqueRepo(t, "artifact")
	ref := registryHost + "/" + repo + ":v1"

	pushed := orasJSON(t, work, "push", "--artifact-type", orasArtifactType, ref, "file.txt:text/plain")
	if pushed.ArtifactType != orasArtifactType || pushed.MediaType != mtOCIManifest {
		t.Fatalf("oras push: %+v", pushed)
	}
	body := requireManifest(t, repo, pushed.Digest, mtOCIManifest)

	raw := mustRun(t, opts{Dir: work}, "oras", "manifest", "fetch", "--plain-http", ref)
	if raw != string(body) || sha256Digest([]byte(raw)) != pushed.Digest {
		t.Fatalf("oras manifest fetch: %s; want the pushed manifest %s", raw, pushed.Digest)
	}
	var man v1.Manifest
	if err := json.Unmarshal([]byte(raw), &man); err != nil {
		t.Fatal(err)
	}
	if string(man.ArtifactType) != orasArtifactType || len(man.Layers) != 1 ||
		man.Layers[0].MediaType != "text/plain" || man.Layers[0].Digest.String() != sha256Digest([]byte(content)) ||
		man.Layers[0].Annotations["org.opencontainers.image.title"] != "file.txt" {
		t.Fatalf("artifact manifest: %s", raw)
	}
	if blob := mustRun(t, opts{Dir: work}, "oras", "blob", "fetch", "--plain-http", "--output", "-",
		registryHost+"/"+repo+"@"+sha256Digest([]byte(content))); blob != content {
		t.Fatalf("oras blob fetch: %q", blob)
	}

	out := mkdir(t, filepath.Join(work, "out"))
	mustRun(t, opts{Dir: work}, "oras", "pull", "--plain-http", "-o", out, ref)
	if got, err := os.ReadFile(filepath.Join(out, "file.txt")); err != nil || string(got) != content {
		t.Fatalf("oras pull: file.txt = %q (%v), want %q", got, err, content)
	}

	attached := orasJSON(t, work, "attach", "--artifact-type", sbomArtifactType, ref, "sbom.json:application/json")
	if attached.ArtifactType != sbomArtifactType {
		t.Fatalf("oras attach: %+v", attached)
	}
	sbomManifest := requireManifest(t, repo, attached.Digest, mtOCIManifest)
	var sm v1.Manifest
	if err := json.Unmarshal(sbomManifest, &sm); err != nil || sm.Subject == nil || sm.Subject.Digest.String() != pushed.Digest {
		t.Fatalf("attached manifest has no subject %s: %s", pushed.Digest, sbomManifest)
	}

	checkDiscover := func(t *testing.T, d orasDescriptor) {
		t.Helper()
		if d.Digest != pushed.Digest || len(d.Referrers) != 1 || d.Referrers[0].Digest != attached.Digest ||
			d.Referrers[0].ArtifactType != sbomArtifactType || d.Referrers[0].MediaType != mtOCIManifest {
			t.Fatalf("oras discover: %+v; want one referrer %s of type %s", d, attached.Digest, sbomArtifactType)
		}
	}
	checkDiscover(t, orasJSON(t, work, "discover", ref))
	checkDiscover(t, orasJSON(t, work, "discover", "--artifact-type", sbomArtifactType, ref))
	if d := orasJSON(t, work, "discover", "--artifact-type", "application/vnd.example.none", ref); len(d.Referrers) != 0 {
		t.Fatalf("oras discover with an unknown artifact type: %+v, want no referrers", d)
	}
	sbomOut := mkdir(t, filepath.Join(work, "sbom"))
	mustRun(t, opts{Dir: work}, "oras", "pull", "--plain-http", "-o", sbomOut, registryHost+"/"+repo+"@"+attached.Digest)
	if got, err := os.ReadFile(filepath.Join(sbomOut, "sbom.json")); err != nil || string(got) != sbom {
		t.Fatalf("pulled referrer: %q (%v)", got, err)
	}

	// The OCI 1.1 referrers API itself, as oras uses it when asked to.
	t.Run("referrers-api", func(t *testing.T) {
		idx, r := referrers(t, repo, pushed.Digest, "")
		if len(idx.Manifests) != 1 || idx.Manifests[0].Digest.String() != attached.Digest ||
			string(idx.Manifests[0].ArtifactType) != sbomArtifactType || idx.Manifests[0].MediaType != mtOCIManifest {
			t.Fatalf("referrers of %s: %s", pushed.Digest, r.Body)
		}
		// Filtering is optional; a registry that filters says so in
		// OCI-Filters-Applied, one that does not returns the whole list.
		idx, r = referrers(t, repo, pushed.Digest, "application/vnd.example.none")
		if r.Header.Get("OCI-Filters-Applied") == "artifactType" {
			if len(idx.Manifests) != 0 {
				t.Fatalf("referrers filtered by an unknown artifactType: %s", r.Body)
			}
		} else {
			t.Logf("the registry does not filter referrers by artifactType (optional): OCI-Filters-Applied %q", r.Header.Get("OCI-Filters-Applied"))
			if len(idx.Manifests) != 1 {
				t.Fatalf("unfiltered referrers: %s, want the one referrer", r.Body)
			}
		}
		// A digest nobody refers to has an empty list, not a 404.
		none := sha256Digest([]byte("nothing refers to this"))
		if idx, r := referrers(t, repo, none, ""); len(idx.Manifests) != 0 {
			t.Fatalf("referrers of an unknown digest: %s", r.Body)
		}
		checkDiscover(t, orasJSON(t, work, "discover", "--distribution-spec", "v1.1-referrers-api", ref))
		// With the API there is no need for the fallback tag sha256-<hex>.
		if tags := tagList(t, repo); !slices.Equal(tags, []string{"v1"}) {
			t.Fatalf("tags %v, want only [v1]: oras made the referrers fallback tag, so it did not see the referrers API", tags)
		}
	})

	t.Run("copy-recursive", func(t *testing.T) {
		dst := uniqueRepo(t, "copy")
		mustRun(t, opts{Dir: work}, "oras", "cp", "-r", "--from-plain-http", "--to-plain-http", ref, registryHost+"/"+dst+":v1")
		requireManifest(t, dst, pushed.Digest, mtOCIManifest)
		requireManifest(t, dst, attached.Digest, mtOCIManifest)
		checkDiscover(t, orasJSON(t, work, "discover", registryHost+"/"+dst+":v1"))
	})

	t.Run("repo-ls-tags", func(t *testing.T) {
		ns := strings.TrimSuffix(repo, "/artifact")
		repos := strings.Fields(mustRun(t, opts{Dir: work}, "oras", "repo", "ls", "--plain-http", registryHost+"/"+ns))
		if !slices.Contains(repos, "artifact") && !slices.Contains(repos, repo) {
			t.Fatalf("oras repo ls %s: %v, want artifact listed", ns, repos)
		}
		tags := strings.Fields(mustRun(t, opts{Dir: work}, "oras", "repo", "tags", "--plain-http", registryHost+"/"+repo))
		if !slices.Contains(tags, "v1") {
			t.Fatalf("oras repo tags: %v", tags)
		}
		if r := regDo(t, http.MethodHead, "/v2/"+repo+"/manifests/v1", map[string]string{"Accept": acceptAll}, nil); r.Status != http.StatusOK ||
			r.Header.Get("Docker-Content-Digest") != pushed.Digest {
			t.Fatalf("HEAD manifest v1: %s", r)
		}
	})
}
