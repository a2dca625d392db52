package e2e

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// TestBaseImageGraph is the loop Berth exists for, with real tools: a CNCF
// Distribution "upstream" holds ubi8/openjdk-11-runtime:1.9; Berth mirrors
// it; applications are built on the mirrored base with buildah (base
// annotations), with crane append (layers only), and as an index carrying
// a BuildKit-style provenance attestation; a runtime is built on the base
// and an application on the runtime. Upstream moves 1.9 to a patched
// image; after the next sync a Tekton-style receiver (HMAC checked) gets
// exactly one base_image_updated per image built directly on the base,
// none for an image on another base, and the second level fires once the
// runtime is rebuilt and pushed.
func TestBaseImageGraph(t *testing.T) {
	begin(t)
	requireTool(t, "crane")
	up := startDistribution(t, "up", "upstream-pw")
	upAuth := remote.WithAuth(&authn.Basic{Username: "up", Password: "upstream-pw"})
	pushUp := func() string {
		t.Helper()
		base, _ := mutate.ConfigFile(mutate.MediaType(mutate.ConfigMediaType(empty.Image, types.OCIConfigJSON), types.OCIManifestSchema1),
			&v1.ConfigFile{Architecture: "amd64", OS: "linux", RootFS: v1.RootFS{Type: "layers"}})
		var layers []v1.Layer
		for range 2 {
			l, _ := random.Layer(32<<10, types.OCILayer)
			layers = append(layers, l)
		}
		img, _ := mutate.AppendLayers(base, layers...)
		ref, _ := name.ParseReference(up+"/ubi8/openjdk-11-runtime:1.9", name.Insecure)
		if err := remote.Write(ref, img, upAuth); err != nil {
			t.Fatal(err)
		}
		d, _ := img.Digest()
		return d.String()
	}
	pushUp()

	ns := strings.TrimSuffix(uniqueRepo(t, "x"), "/x")
	mirrorRepo := ns + "/openjdk-11-runtime"
	api := func(method, path string, body any) (int, []byte) {
		t.Helper()
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, "http://"+registryHost+path, rd)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, raw
	}
	// The repository exists before its mirror is configured (a seed tag,
	// which the first sync removes).
	seed, _ := random.Image(512, 1)
	seedRef, _ := name.ParseReference(registryHost+"/"+mirrorRepo+":seed", name.Insecure)
	if err := remote.Write(seedRef, seed); err != nil {
		t.Fatal(err)
	}
	if st, b := api("POST", "/api/v1/repository/"+mirrorRepo+"/mirror", map[string]any{
		"external_reference": up + "/ubi8/openjdk-11-runtime", "external_registry_username": "up", "external_registry_password": "upstream-pw",
		"external_registry_config": map[string]any{"verify_tls": false}, "sync_interval": 86400,
		"sync_start_date": time.Now().Add(24 * time.Hour).UTC().Format("2006-01-02T15:04:05Z"),
		"root_rule":       map[string]any{"rule_kind": "tag_glob_csv", "rule_value": []string{"1.9"}},
	}); st != http.StatusCreated {
		t.Fatalf("create mirror: %d %s", st, b)
	}
	syncNow := func() {
		t.Helper()
		if st, b := api("POST", "/api/v1/repository/"+mirrorRepo+"/mirror/sync-now", nil); st != http.StatusNoContent {
			t.Fatalf("sync-now: %d %s", st, b)
		}
		deadline := time.Now().Add(90 * time.Second)
		for {
			_, b := api("GET", "/api/v1/repository/"+mirrorRepo+"/mirror", nil)
			var m map[string]any
			json.Unmarshal(b, &m)
			if m["sync_status"] == "SUCCESS" {
				return
			}
			if m["sync_status"] == "FAIL" || time.Now().After(deadline) {
				t.Fatalf("sync: %v", m)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	syncNow()
	headDigest := func(ref string) string {
		r, _ := name.ParseReference(registryHost+"/"+ref, name.Insecure)
		desc, err := remote.Head(r)
		if err != nil {
			t.Fatalf("HEAD %s: %v", ref, err)
		}
		return desc.Digest.String()
	}
	oldBase := headDigest(mirrorRepo + ":1.9")
	baseRef := registryHost + "/" + mirrorRepo + ":1.9"

	// The receiver, as a Tekton EventListener with the GitHub interceptor.
	const secret = "tekton-graph-secret"
	var mu sync.Mutex
	got := map[string][]map[string]any{} // repository -> payloads
	badSig := 0
	listener := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write(b)
		var p map[string]any
		json.Unmarshal(b, &p)
		mu.Lock()
		if r.Header.Get("X-Hub-Signature-256") != "sha256="+hex.EncodeToString(mac.Sum(nil)) {
			badSig++
		}
		repo, _ := p["repository"].(string)
		got[repo] = append(got[repo], p)
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	defer listener.Close()
	notifyOn := func(repo string) {
		t.Helper()
		st, b := api("POST", "/api/v1/repository/"+repo+"/notification/", map[string]any{"event": "base_image_updated", "method": "webhook",
			"title": "rebuild", "config": map[string]any{"url": listener.URL + "/rebuild", "secret": secret}})
		if st != http.StatusCreated {
			t.Fatalf("notification on %s: %d %s", repo, st, b)
		}
	}
	appendTo := func(base, target, file string) string {
		t.Helper()
		runTool(t, "crane", "append", "--insecure", "-b", base, "-f", layerTar(t, t.TempDir(), file, file+" contents"), "-t", registryHost+"/"+target)
		return headDigest(target)
	}

	direct := map[string]string{} // repository -> digest, built directly on the base
	// 1. buildah, FROM and COPY only: base annotations.
	if st := tools["buildah"]; st != nil && st.err == nil {
		store := t.TempDir()
		ctxDir := filepath.Join(store, "ctx")
		os.MkdirAll(ctxDir, 0o755)
		os.WriteFile(filepath.Join(ctxDir, "app.txt"), []byte("built by buildah\n"), 0o644)
		os.WriteFile(filepath.Join(ctxDir, "Containerfile"), []byte("FROM "+baseRef+"\nCOPY app.txt /app.txt\n"), 0o644)
		global := []string{"--root", filepath.Join(store, "root"), "--runroot", filepath.Join(store, "runroot"), "--storage-driver", "vfs"}
		o := opts{Dir: store, Env: []string{"BUILDAH_ISOLATION=chroot"}}
		mustRun(t, o, "buildah", append(global, "bud", "--tls-verify=false", "--format", "oci", "-t", "localhost/graph-app:1", ctxDir)...)
		repo := ns + "/app-buildah"
		mustRun(t, o, "buildah", append(global, "push", "--tls-verify=false", "localhost/graph-app:1", "docker://"+registryHost+"/"+repo+":1")...)
		direct[repo] = headDigest(repo + ":1")
	} else {
		t.Logf("buildah unavailable: its application is skipped (%v)", st)
	}
	// 2. crane append without base annotations: found by layers.
	direct[ns+"/app-crane"] = appendTo(baseRef, ns+"/app-crane:1", "crane.txt")
	// 3. An index whose attestation (BuildKit's layout) names the base.
	{
		r, _ := name.ParseReference(baseRef, name.Insecure)
		base, err := remote.Image(r)
		if err != nil {
			t.Fatal(err)
		}
		l, _ := random.Layer(4096, types.OCILayer)
		img, _ := mutate.AppendLayers(base, l)
		imgDigest, _ := img.Digest()
		statement, _ := json.Marshal(map[string]any{"_type": "https://in-toto.io/Statement/v0.1", "predicateType": "https://slsa.dev/provenance/v0.2",
			"predicate": map[string]any{"materials": []map[string]any{
				{"uri": "pkg:docker/docker/dockerfile@1", "digest": map[string]string{"sha256": strings.Repeat("ab", 32)}},
				{"uri": "pkg:docker/" + strings.ReplaceAll(registryHost+"/"+mirrorRepo, ":", "%3A") + "@1.9?platform=linux%2Famd64",
					"digest": map[string]string{"sha256": strings.TrimPrefix(oldBase, "sha256:")}},
			}}})
		att, _ := mutate.Append(mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON),
			mutate.Addendum{Layer: static.NewLayer(statement, "application/vnd.in-toto+json"),
				Annotations: map[string]string{"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"}})
		idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
			mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
			mutate.IndexAddendum{Add: att, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "unknown", Architecture: "unknown"},
				Annotations: map[string]string{"vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": imgDigest.String()}}})
		repo := ns + "/app-buildkit"
		ref, _ := name.ParseReference(registryHost+"/"+repo+":1", name.Insecure)
		if err := remote.WriteIndex(ref, idx); err != nil {
			t.Fatal(err)
		}
		d, _ := idx.Digest()
		direct[repo] = d.String()
	}
	// 4. A runtime on the base, an application on the runtime.
	runtimeRepo, leveled := ns+"/runtime", ns+"/app-on-runtime"
	direct[runtimeRepo] = appendTo(baseRef, runtimeRepo+":11", "jdk.txt")
	leveledDigest := appendTo(registryHost+"/"+runtimeRepo+":11", leveled+":1", "app2.txt")
	// 5. An application on another base.
	other, _ := random.Image(8192, 2)
	otherRef, _ := name.ParseReference(registryHost+"/"+ns+"/other-base:1", name.Insecure)
	if err := remote.Write(otherRef, other); err != nil {
		t.Fatal(err)
	}
	unrelated := ns + "/app-unrelated"
	appendTo(registryHost+"/"+ns+"/other-base:1", unrelated+":1", "u.txt")

	waitBase := func(repo, digest, want string) string {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			st, b := api("GET", "/api/v1/repository/"+repo+"/manifest/"+digest+"/bases", nil)
			var out struct {
				Bases []struct {
					Repository string `json:"repository"`
					Method     string `json:"method"`
					Level      int    `json:"level"`
				} `json:"bases"`
			}
			json.Unmarshal(b, &out)
			for _, bs := range out.Bases {
				if bs.Repository == want && bs.Level == 1 {
					return bs.Method
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s@%s: no base %s found: %d %s", repo, digest, want, st, b)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	methods := map[string]string{}
	for repo, d := range direct {
		methods[repo] = waitBase(repo, d, mirrorRepo)
		notifyOn(repo)
	}
	waitBase(leveled, leveledDigest, runtimeRepo)
	notifyOn(leveled)
	notifyOn(unrelated)
	t.Logf("bases found by: %v", methods)
	if m := methods[ns+"/app-crane"]; m != "layers" {
		t.Errorf("crane append's base found by %q, want layers", m)
	}
	if m := methods[ns+"/app-buildkit"]; m != "provenance" {
		t.Errorf("the attested image's base found by %q, want provenance", m)
	}
	if m, ok := methods[ns+"/app-buildah"]; ok && m != "annotation" {
		t.Errorf("buildah's base found by %q, want annotation", m)
	}

	// Upstream patches 1.9; the next sync brings it in.
	pushUp()
	syncNow()
	newBase := headDigest(mirrorRepo + ":1.9")
	if newBase == oldBase {
		t.Fatal("the sync did not move 1.9")
	}
	waitFired := func(repos ...string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			mu.Lock()
			n := 0
			for _, r := range repos {
				if len(got[r]) > 0 {
					n++
				}
			}
			mu.Unlock()
			if n == len(repos) {
				return
			}
			if time.Now().After(deadline) {
				mu.Lock()
				defer mu.Unlock()
				t.Fatalf("not every dependent fired within 60 s: %v", got)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	var repos []string
	for r := range direct {
		repos = append(repos, r)
	}
	waitFired(repos...)
	time.Sleep(2 * time.Second) // a duplicate or a stray event would have arrived by now
	mu.Lock()
	if badSig != 0 {
		t.Errorf("%d deliveries failed the GitHub interceptor's HMAC check", badSig)
	}
	for _, r := range repos {
		if len(got[r]) != 1 {
			t.Errorf("%s: %d base_image_updated, want 1", r, len(got[r]))
			continue
		}
		p := got[r][0]
		b, _ := p["base"].(map[string]any)
		// What a TriggerBinding reads: $(body.repository), $(body.base.new_digest), ...
		if p["event"] != "base_image_updated" || p["digest"] != direct[r] || b["new_digest"] != newBase || b["old_digest"] != oldBase ||
			b["repository"] != mirrorRepo || b["tag"] != "1.9" {
			t.Errorf("%s: payload %v", r, p)
		}
	}
	if len(got[unrelated]) != 0 || len(got[leveled]) != 0 {
		t.Errorf("fired for the unrelated image (%d) or the second level before its runtime moved (%d)", len(got[unrelated]), len(got[leveled]))
	}
	mu.Unlock()

	// The runtime is rebuilt on the patched base: now its dependent fires.
	appendTo(baseRef, runtimeRepo+":11", "jdk.txt")
	waitFired(leveled)
	time.Sleep(time.Second)
	mu.Lock()
	defer mu.Unlock()
	if len(got[leveled]) != 1 {
		t.Fatalf("second level: %d events, want 1", len(got[leveled]))
	}
	if b, _ := got[leveled][0]["base"].(map[string]any); b["repository"] != runtimeRepo || b["tag"] != "11" {
		t.Fatalf("second level's base: %v", got[leveled][0]["base"])
	}
}
