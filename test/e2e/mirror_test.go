package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// TestMirrorFromDistribution mirrors a repository of a real upstream (CNCF
// Distribution with Basic auth) through Quay's mirror API: the selected
// tags with every platform arrive, a tag only Berth had is deleted, and a
// retag upstream moves the tag on the next sync. Berth runs with
// --auth none, so the mirror has no robot (it writes as "mirror").
func TestMirrorFromDistribution(t *testing.T) {
	begin(t)
	up := startDistribution(t, "up", "upstream-pw")
	upAuth := remote.WithAuth(&authn.Basic{Username: "up", Password: "upstream-pw"})
	// Every image shares two base layers, as images built FROM one base do.
	var shared []v1.Layer
	for i := 0; i < 2; i++ {
		l, _ := random.Layer(64<<10, types.OCILayer)
		shared = append(shared, l)
	}
	pushUp := func(tag string) string {
		var adds []mutate.IndexAddendum
		for _, arch := range []string{"amd64", "arm64"} {
			own, _ := random.Layer(4096, types.OCILayer)
			base, _ := mutate.ConfigFile(mutate.MediaType(mutate.ConfigMediaType(empty.Image, types.OCIConfigJSON), types.OCIManifestSchema1),
				&v1.ConfigFile{Architecture: arch, OS: "linux", RootFS: v1.RootFS{Type: "layers"}})
			img, _ := mutate.AppendLayers(base, append(append([]v1.Layer{}, shared...), own)...)
			adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
		}
		idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...)
		ref, _ := name.ParseReference(up+"/library/app:"+tag, name.Insecure)
		if err := remote.WriteIndex(ref, idx, upAuth); err != nil {
			t.Fatal(err)
		}
		d, _ := idx.Digest()
		return d.String()
	}
	d10, d11 := pushUp("1.0"), pushUp("1.1")
	pushUp("2.0")
	// A cosign signature of 1.1 upstream (cosign's tag schema): it comes
	// along with the mirror.
	var sigTag string
	if cosign := tools["cosign"]; cosign.err == nil {
		keyDir := t.TempDir()
		env := []string{"COSIGN_PASSWORD=e2e"}
		mustRun(t, opts{Dir: keyDir, Env: env}, "cosign", "generate-key-pair")
		mustRun(t, opts{Dir: keyDir, Env: env}, "cosign", "login", up, "-u", "up", "-p", "upstream-pw")
		mustRun(t, opts{Dir: keyDir, Env: env}, "cosign", "sign", "--key", "cosign.key", "--tlog-upload=false", "--allow-insecure-registry",
			"--allow-http-registry", "-y", up+"/library/app@"+d11)
		sigTag = strings.Replace(d11, ":", "-", 1) + ".sig"
	} else {
		t.Logf("cosign unavailable (%v): the signature part is skipped", cosign.err)
	}

	target := uniqueRepo(t, "mirrored")
	// The repository exists with a tag of its own, which the mirror removes.
	img, _ := random.Image(1024, 1)
	local, _ := name.ParseReference(registryHost+"/"+target+":stale", name.Insecure)
	if err := remote.Write(local, img); err != nil {
		t.Fatal(err)
	}
	call := func(method, path string, body any) (int, map[string]any) {
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, "http://"+registryHost+"/api/v1/repository/"+target+"/mirror"+path, rd)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if strings.Contains(string(raw), "upstream-pw") {
			t.Fatal("the answer shows the upstream password")
		}
		var m map[string]any
		json.Unmarshal(raw, &m)
		return resp.StatusCode, m
	}
	status, m := call(http.MethodPost, "", map[string]any{
		"external_reference": up + "/library/app", "external_registry_username": "up", "external_registry_password": "upstream-pw",
		"external_registry_config": map[string]any{"verify_tls": false}, "sync_interval": 86400,
		"sync_start_date": time.Now().Add(24 * time.Hour).UTC().Format("2006-01-02T15:04:05Z"),
		"root_rule":       map[string]any{"rule_kind": "tag_glob_csv", "rule_value": []string{"1.*"}},
	})
	if status != http.StatusCreated || m["sync_status"] != "NEVER_RUN" {
		t.Fatalf("create mirror: %d %v", status, m)
	}
	syncNow := func() map[string]any {
		t.Helper()
		if status, m := call(http.MethodPost, "/sync-now", nil); status != http.StatusNoContent {
			t.Fatalf("sync-now: %d %v", status, m)
		}
		deadline := time.Now().Add(90 * time.Second)
		for {
			_, m := call(http.MethodGet, "", nil)
			switch m["sync_status"] {
			case "SUCCESS":
				return m
			case "FAIL":
				t.Fatalf("sync failed: %v", m)
			}
			if time.Now().After(deadline) {
				t.Fatalf("sync did not finish: %v", m)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	syncNow()
	digest := func(tag string) string {
		ref, _ := name.ParseReference(registryHost+"/"+target+":"+tag, name.Insecure)
		desc, err := remote.Head(ref)
		if err != nil {
			return ""
		}
		return desc.Digest.String()
	}
	if a, b := digest("1.0"), digest("1.1"); a != d10 || b != d11 {
		t.Fatalf("mirrored 1.0=%s 1.1=%s, want %s %s", a, b, d10, d11)
	}
	if d := digest("2.0"); d != "" {
		t.Fatalf("2.0 is not selected but was mirrored: %s", d)
	}
	if d := digest("stale"); d != "" {
		t.Fatalf("the local-only tag survived the sync: %s", d)
	}
	if sigTag != "" && digest(sigTag) == "" {
		t.Fatalf("the cosign signature %s of a mirrored tag did not come along", sigTag)
	}
	// The mirror is read-only for everyone but itself.
	other, _ := random.Image(512, 1)
	pushRef, _ := name.ParseReference(registryHost+"/"+target+":mine", name.Insecure)
	if err := remote.Write(pushRef, other); err == nil || !strings.Contains(err.Error(), "DENIED") {
		t.Fatalf("a push to the mirror: %v, want DENIED", err)
	}
	// A retag upstream moves the tag at the next sync.
	moved := pushUp("1.0")
	syncNow()
	if d := digest("1.0"); d != moved {
		t.Fatalf("1.0 at %s after a retag upstream, want %s", d, moved)
	}
}
