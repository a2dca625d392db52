package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Offline signing: no transparency log, and the registry is plain HTTP.
var (
	cosignSignFlags   = []string{"--tlog-upload=false", "--allow-insecure-registry", "--allow-http-registry", "-y"}
	cosignVerifyFlags = []string{"--insecure-ignore-tlog", "--allow-insecure-registry", "--allow-http-registry"}
)

const cosignSigArtifactType = "application/vnd.dev.cosign.artifact.sig.v1+json"

// cosignKeys makes a key pair (protected by COSIGN_PASSWORD from toolEnv).
func cosignKeys(t *testing.T) (dir string) {
	t.Helper()
	dir = t.TempDir()
	mustRun(t, opts{Dir: dir}, "cosign", "generate-key-pair")
	for _, f := range []string{"cosign.key", "cosign.pub"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("cosign generate-key-pair made no %s: %v", f, err)
		}
	}
	return dir
}

type cosignPayload struct {
	Critical struct {
		Identity struct {
			DockerReference string `json:"docker-reference"`
		} `json:"identity"`
		Image struct {
			DockerManifestDigest string `json:"docker-manifest-digest"`
		} `json:"image"`
		Type string `json:"type"`
	} `json:"critical"`
}

// checkVerified parses `cosign verify` output and requires every payload
// to name the digest.
func checkVerified(t *testing.T, out, digest string) {
	t.Helper()
	var payloads []cosignPayload
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &payloads); err != nil || len(payloads) == 0 {
		t.Fatalf("cosign verify output is not a list of payloads (%v):\n%s", err, out)
	}
	for _, p := range payloads {
		if p.Critical.Image.DockerManifestDigest != digest {
			t.Fatalf("cosign verify: payload for %s, want %s:\n%s", p.Critical.Image.DockerManifestDigest, digest, out)
		}
	}
}

// TestCosignSignVerify signs an image by digest with a key, stores the
// signature the classic way (tag sha256-<hex>.sig) and verifies it; an
// unsigned image must not verify.
func TestCosignSignVerify(t *testing.T) {
	begin(t)
	requireTool(t, "cosign")
	keys := cosignKeys(t)
	repo := uniqueRepo(t, "signed")
	img := newImage(t, true, "linux/amd64")
	dig := digestOf(t, img)
	pushImage(t, registryHost+"/"+repo+":v1", img)
	ref := registryHost + "/" + repo + "@" + dig

	mustRun(t, opts{Dir: keys}, "cosign", append(append([]string{"sign", "--key", "cosign.key"}, cosignSignFlags...), ref)...)

	sigTag := "sha256-" + strings.TrimPrefix(dig, "sha256:") + ".sig"
	triangulated := strings.TrimSpace(mustRun(t, opts{Dir: keys}, "cosign", "triangulate", "--allow-insecure-registry", "--allow-http-registry", ref))
	if triangulated != registryHost+"/"+repo+":"+sigTag {
		t.Fatalf("cosign triangulate = %s, want tag %s", triangulated, sigTag)
	}
	r := getManifest(t, repo, sigTag)
	if r.Status != 200 {
		t.Fatalf("GET signature manifest %s: %s", sigTag, r)
	}
	var sig v1.Manifest
	if err := json.Unmarshal(r.Body, &sig); err != nil || len(sig.Layers) == 0 ||
		sig.Layers[0].MediaType != "application/vnd.dev.cosign.simplesigning.v1+json" ||
		sig.Layers[0].Annotations["dev.cosignproject.cosign/signature"] == "" {
		t.Fatalf("signature manifest: %s", r.Body)
	}

	out := mustRun(t, opts{Dir: keys}, "cosign", append(append([]string{"verify", "--key", "cosign.pub"}, cosignVerifyFlags...), ref)...)
	checkVerified(t, out, dig)
	// By tag too: cosign resolves the tag to the same digest.
	out = mustRun(t, opts{Dir: keys}, "cosign", append(append([]string{"verify", "--key", "cosign.pub"}, cosignVerifyFlags...), registryHost+"/"+repo+":v1")...)
	checkVerified(t, out, dig)

	// Another image, never signed, does not verify.
	other := newImage(t, true, "linux/amd64")
	pushImage(t, registryHost+"/"+repo+":unsigned", other)
	res := tryRun(t, opts{Dir: keys}, "cosign", append(append([]string{"verify", "--key", "cosign.pub"}, cosignVerifyFlags...),
		registryHost+"/"+repo+"@"+digestOf(t, other))...)
	if res.Err == nil {
		t.Fatalf("cosign verify of an unsigned image succeeded:\n%s", res.Stdout)
	}
	if !strings.Contains(res.Stderr, "no signatures found") && !strings.Contains(res.Stderr, "no matching signatures") {
		t.Fatalf("cosign verify of an unsigned image failed for another reason:\n%s", res.Stderr)
	}

	// An attestation, stored as sha256-<hex>.att, verifies too.
	pred := filepath.Join(keys, "predicate.json")
	if err := os.WriteFile(pred, []byte(`{"builder":"berth-e2e"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	mustRun(t, opts{Dir: keys}, "cosign", append(append([]string{"attest", "--key", "cosign.key", "--type", "custom", "--predicate", pred}, cosignSignFlags...), ref)...)
	out = mustRun(t, opts{Dir: keys}, "cosign", append(append([]string{"verify-attestation", "--key", "cosign.pub", "--type", "custom"}, cosignVerifyFlags...), ref)...)
	if !strings.Contains(out, `"payloadType":"application/vnd.in-toto+json"`) {
		t.Fatalf("cosign verify-attestation output:\n%s", out)
	}
	if r := getManifest(t, repo, strings.TrimSuffix(sigTag, ".sig")+".att"); r.Status != 200 {
		t.Fatalf("GET attestation manifest: %s", r)
	}
}

// TestCosignReferrers stores the signature as an OCI 1.1 referrer of the
// image (COSIGN_EXPERIMENTAL=1, --registry-referrers-mode=oci-1-1) and finds
// it through GET /v2/<name>/referrers/<digest>.
func TestCosignReferrers(t *testing.T) {
	begin(t)
	requireTool(t, "cosign")
	keys := cosignKeys(t)
	repo := uniqueRepo(t, "signed")
	img := newImage(t, true, "linux/amd64")
	dig := digestOf(t, img)
	pushImage(t, registryHost+"/"+repo+":v1", img)
	ref := registryHost + "/" + repo + "@" + dig
	exp := opts{Dir: keys, Env: []string{"COSIGN_EXPERIMENTAL=1"}}

	mustRun(t, exp, "cosign", append(append([]string{"sign", "--key", "cosign.key", "--registry-referrers-mode=oci-1-1"}, cosignSignFlags...), ref)...)

	out := mustRun(t, exp, "cosign", append(append([]string{"verify", "--key", "cosign.pub", "--experimental-oci11"}, cosignVerifyFlags...), ref)...)
	checkVerified(t, out, dig)
	// The classic .sig tag was not used.
	if r := getManifest(t, repo, "sha256-"+strings.TrimPrefix(dig, "sha256:")+".sig"); r.Status != 404 {
		t.Fatalf("GET the .sig tag in referrers mode: %s, want 404", r)
	}

	idx, r := referrers(t, repo, dig, "")
	var sigDesc *v1.Descriptor
	for i, d := range idx.Manifests {
		if string(d.ArtifactType) == cosignSigArtifactType {
			sigDesc = &idx.Manifests[i]
		}
	}
	if sigDesc == nil {
		t.Fatalf("referrers of %s have no %s: %s", dig, cosignSigArtifactType, r.Body)
	}
	body := requireManifest(t, repo, sigDesc.Digest.String(), mtOCIManifest)
	var sm v1.Manifest
	if err := json.Unmarshal(body, &sm); err != nil || sm.Subject == nil || sm.Subject.Digest.String() != dig {
		t.Fatalf("signature referrer has no subject %s: %s", dig, body)
	}
	// With the referrers API there is no fallback tag sha256-<hex>.
	if tags := tagList(t, repo); !slices.Equal(tags, []string{"v1"}) {
		t.Fatalf("tags %v, want only [v1]: cosign made the referrers fallback tag, so it did not see the referrers API", tags)
	}

}
