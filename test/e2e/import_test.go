package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/crypto/bcrypt"
)

// startDistribution runs CNCF Distribution on a loopback port as an
// upstream registry, with htpasswd Basic auth unless user is empty.
func startDistribution(t *testing.T, user, password string) string {
	t.Helper()
	bin := requireTool(t, "docker-registry")
	dir := t.TempDir()
	hash, _ := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	os.WriteFile(filepath.Join(dir, "htpasswd"), []byte(user+":"+string(hash)+"\n"), 0o600)
	authCfg := fmt.Sprintf("auth:\n  htpasswd: {realm: upstream, path: %s}\n", filepath.Join(dir, "htpasswd"))
	if user == "" {
		authCfg = ""
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cfg := fmt.Sprintf(`version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: %s}
  delete: {enabled: true}
http: {addr: %q}
%s`, filepath.Join(dir, "data"), addr, authCfg)
	cfgPath := filepath.Join(dir, "config.yml")
	os.WriteFile(cfgPath, []byte(cfg), 0o600)
	cmd := exec.Command(bin, "serve", cfgPath)
	cmd.Env = append(os.Environ(), "AWS_CA_BUNDLE=")
	var logb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logb, &logb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; i < 100; i++ {
		if resp, err := http.Get("http://" + addr + "/v2/"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 401 || resp.StatusCode == 200 {
				return addr
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("Distribution did not start: %s", logb.String())
	return ""
}

// TestImportFromDistribution imports a multi-platform index and an image
// from a real upstream (CNCF Distribution with Basic auth) through the API
// and through `berth import`, and checks digests on Berth.
func TestImportFromDistribution(t *testing.T) {
	begin(t)
	up := startDistribution(t, "up", "upstream-pw")
	auth := remote.WithAuth(&authn.Basic{Username: "up", Password: "upstream-pw"})
	idx, _ := random.Index(4096, 2, 2)
	idx = mutate.IndexMediaType(idx, types.OCIImageIndex)
	ref, _ := name.ParseReference(up+"/library/base:1.9", name.Insecure)
	if err := remote.WriteIndex(ref, idx, auth); err != nil {
		t.Fatal(err)
	}
	want, _ := idx.Digest()

	target := uniqueRepo(t, "base")
	call := func(body map[string]any) (int, map[string]any) {
		b, _ := json.Marshal(body)
		resp, err := http.Post("http://"+registryHost+"/api/v1/import", "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var m map[string]any
		json.Unmarshal(raw, &m)
		if strings.Contains(string(raw), "upstream-pw") {
			t.Fatal("the answer shows the upstream password")
		}
		return resp.StatusCode, m
	}
	body := map[string]any{"source": up + "/library/base:1.9", "repository": target, "tags": []string{"1.9", "1.9-2"},
		"username": "up", "password": "upstream-pw", "insecure": true}
	status, m := call(body)
	if status != 201 || m["digest"] != want.String() || m["manifests"] != 3.0 {
		t.Fatalf("import: %d %v (want digest %s and 3 manifests)", status, m, want)
	}
	for _, tag := range []string{"1.9", "1.9-2"} {
		if d := strings.TrimSpace(runTool(t, "crane", "digest", "--insecure", registryHost+"/"+target+":"+tag)); d != want.String() {
			t.Fatalf("crane digest %s = %s, want %s", tag, d, want)
		}
	}
	// Every platform came along.
	im, _ := idx.IndexManifest()
	for _, c := range im.Manifests {
		runTool(t, "crane", "manifest", "--insecure", registryHost+"/"+target+"@"+c.Digest.String())
	}
	// NoForce over an existing tag: 409, nothing moves; Force moves it.
	img, _ := random.Image(2048, 1)
	other, _ := name.ParseReference(up+"/library/other:1", name.Insecure)
	remote.Write(other, img, auth)
	od, _ := img.Digest()
	status, _ = call(map[string]any{"source": up + "/library/other:1", "repository": target, "tags": []string{"1.9"},
		"username": "up", "password": "upstream-pw", "insecure": true})
	if status != 409 {
		t.Fatalf("NoForce import over an existing tag: %d", status)
	}
	if d := strings.TrimSpace(runTool(t, "crane", "digest", "--insecure", registryHost+"/"+target+":1.9")); d != want.String() {
		t.Fatalf("NoForce moved the tag to %s", d)
	}
	status, _ = call(map[string]any{"source": up + "/library/other:1", "repository": target, "tags": []string{"1.9"},
		"username": "up", "password": "upstream-pw", "insecure": true, "mode": "Force"})
	if d := strings.TrimSpace(runTool(t, "crane", "digest", "--insecure", registryHost+"/"+target+":1.9")); status != 201 || d != od.String() {
		t.Fatalf("Force import: %d, 1.9 at %s, want %s", status, d, od)
	}
	// The CLI, on the running server's data: blobs Berth holds are linked.
	if os.Getenv("BERTH_E2E_REGISTRY") == "" {
		cmd := exec.Command(filepath.Join(runDir, "berth"), "import", up+"/library/base:1.9", "--repository", target+"-cli", "--tag", "v1",
			"--username", "up", "--password-stdin", "--insecure", "--data-dir", filepath.Join(runDir, "data"))
		cmd.Stdin = strings.NewReader("upstream-pw\n")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "0 blobs fetched") {
			t.Fatalf("berth import: %v\n%s", err, out)
		}
		if d := strings.TrimSpace(runTool(t, "crane", "digest", "--insecure", registryHost+"/"+target+"-cli:v1")); d != want.String() {
			t.Fatalf("CLI import: %s, want %s", d, want)
		}
	}
	// An upstream without authentication.
	open := startDistribution(t, "", "")
	pubImg, _ := random.Image(1024, 2)
	pubRef, _ := name.ParseReference(open+"/library/public:1", name.Insecure)
	if err := remote.Write(pubRef, pubImg); err != nil {
		t.Fatal(err)
	}
	pd, _ := pubImg.Digest()
	status, m = call(map[string]any{"source": open + "/library/public:1", "repository": target + "-public", "tags": []string{"1"}, "insecure": true})
	if status != 201 || m["digest"] != pd.String() {
		t.Fatalf("import from an upstream without auth: %d %v", status, m)
	}
	// Wrong upstream credentials: a clear 502, nothing imported.
	status, m = call(map[string]any{"source": up + "/library/base:1.9", "repository": target + "-x", "tags": []string{"a"},
		"username": "up", "password": "wrong", "insecure": true})
	if status != 502 {
		t.Fatalf("wrong upstream credentials: %d %v", status, m)
	}
}
