package e2e

import (
	"encoding/json"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// skopeo runs skopeo with a throw-away policy and registries.d; callers pass
// the --tls-verify flags their subcommand takes.
func skopeo(t *testing.T, args ...string) string {
	t.Helper()
	global := []string{
		"--policy", toolHome + "/containers/policy.json",
		"--registries.d", toolHome + "/containers/registries.d",
		"--tmpdir", t.TempDir(),
	}
	return runTool(t, "skopeo", append(global, args...)...)
}

// regctl runs regctl with the registry configured for plain HTTP.
func regctl(t *testing.T, args ...string) string {
	t.Helper()
	return runTool(t, "regctl", append(args, "--host", "reg="+registryHost+",tls=disabled")...)
}

// TestMultiPlatformIndex pushes an index of two platforms with the Go
// client, copies it with skopeo --all and regctl image copy, and checks that
// the index digest survives and every child manifest is there.
func TestMultiPlatformIndex(t *testing.T) {
	begin(t)
	for _, tc := range []struct {
		name                string
		oci                 bool
		indexType, manifest string
	}{
		{"oci-index", true, mtOCIIndex, mtOCIManifest},
		{"docker-manifest-list", false, mtDockerList, mtDockerManifest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			idx, imgs := newIndex(t, tc.oci)
			idxDigest := digestOf(t, idx)
			children := map[string]string{}
			for plat, img := range imgs {
				children[plat] = digestOf(t, img)
			}
			src := uniqueRepo(t, "src")
			pushIndex(t, registryHost+"/"+src+":multi", idx)

			checkCopy := func(t *testing.T, repo string) {
				t.Helper()
				r := getManifest(t, repo, "multi")
				if r.Status != 200 || sha256Digest(r.Body) != idxDigest {
					t.Fatalf("GET /v2/%s/manifests/multi: want the index %s; got %s", repo, idxDigest, r)
				}
				body := requireManifest(t, repo, idxDigest, tc.indexType)
				var im v1.IndexManifest
				if err := json.Unmarshal(body, &im); err != nil || len(im.Manifests) != 2 {
					t.Fatalf("index in %s: %v %s", repo, err, body)
				}
				for plat, d := range children {
					requireManifest(t, repo, d, tc.manifest)
					for _, l := range layerDigests(t, imgs[plat]) {
						if r := regDo(t, "HEAD", "/v2/"+repo+"/blobs/"+l, nil, nil); r.Status != 200 {
							t.Fatalf("HEAD /v2/%s/blobs/%s (%s layer): %s", repo, l, plat, r)
						}
					}
				}
			}
			checkCopy(t, src)

			t.Run("crane", func(t *testing.T) {
				requireTool(t, "crane")
				if got := strings.TrimSpace(crane(t, "digest", registryHost+"/"+src+":multi")); got != idxDigest {
					t.Fatalf("crane digest = %s, want index %s", got, idxDigest)
				}
				got := strings.TrimSpace(crane(t, "digest", "--platform", "linux/arm64", registryHost+"/"+src+":multi"))
				if got != children["linux/arm64"] {
					t.Fatalf("crane digest --platform linux/arm64 = %s, want %s", got, children["linux/arm64"])
				}
			})

			t.Run("skopeo-copy-all", func(t *testing.T) {
				requireTool(t, "skopeo")
				dst := uniqueRepo(t, "skopeo")
				skopeo(t, "copy", "--all", "--preserve-digests", "--src-tls-verify=false", "--dest-tls-verify=false",
					"docker://"+registryHost+"/"+src+":multi", "docker://"+registryHost+"/"+dst+":multi")
				checkCopy(t, dst)
				raw := skopeo(t, "inspect", "--raw", "--tls-verify=false", "docker://"+registryHost+"/"+dst+":multi")
				if sha256Digest([]byte(raw)) != idxDigest {
					t.Fatalf("skopeo inspect --raw: digest %s, want %s", sha256Digest([]byte(raw)), idxDigest)
				}
			})

			t.Run("regctl-image-copy", func(t *testing.T) {
				requireTool(t, "regctl")
				dst := uniqueRepo(t, "regctl")
				regctl(t, "image", "copy", registryHost+"/"+src+":multi", registryHost+"/"+dst+":multi")
				checkCopy(t, dst)
				if got := strings.TrimSpace(regctl(t, "image", "digest", registryHost+"/"+dst+":multi")); got != idxDigest {
					t.Fatalf("regctl image digest = %s, want %s", got, idxDigest)
				}
				for _, plat := range []string{"linux/arm64", "linux/amd64"} {
					raw := regctl(t, "manifest", "get", "--platform", plat, "--format", "raw-body", registryHost+"/"+dst+":multi")
					if got := sha256Digest([]byte(raw)); got != children[plat] {
						t.Fatalf("regctl manifest get --platform %s: digest %s, want %s", plat, got, children[plat])
					}
				}
			})
		})
	}
}
