package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/gc"
	"github.com/berth-dev/berth/internal/server"
	"github.com/berth-dev/berth/internal/wire"
)

// TestGCExplainAPI: the explain endpoint says why a manifest is kept (a
// tag, its recent push) and the superuser view counts what a pass would
// collect once the delay has passed.
func TestGCExplainAPI(t *testing.T) {
	hs := serveConfig(t, func(cfg *config.Config) {
		cfg.Auth.Mode = "none"
		cfg.GC.Delay = time.Second
	})
	do := func(method, path string, body []byte, ct string) (int, []byte) {
		req, _ := http.NewRequest(method, hs.URL+path, bytes.NewReader(body))
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	push := func(ref, note string) digest.Digest {
		cfgBlob := []byte(`{"architecture":"amd64","os":"linux","note":"` + note + `"}`)
		cd := digest.FromBytes(cfgBlob)
		if st, b := do("POST", "/v2/acme/app/blobs/uploads/?digest="+cd.String(), cfgBlob, ""); st != 201 {
			t.Fatalf("blob: %d %s", st, b)
		}
		m := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` +
			cd.String() + `","size":` + strconv.Itoa(len(cfgBlob)) + `},"layers":[]}`)
		d := digest.FromBytes(m)
		if ref == "" {
			ref = d.String()
		}
		if st, b := do("PUT", "/v2/acme/app/manifests/"+ref, m, "application/vnd.oci.image.manifest.v1+json"); st != 201 {
			t.Fatalf("manifest: %d %s", st, b)
		}
		return d
	}
	tagged, loose := push("v1", "tagged"), push("", "loose")
	var v struct {
		Kept    bool
		Reasons []string
		Tags    []string
	}
	st, b := do("GET", "/api/v1/repository/acme/app/manifest/"+tagged.String()+"/gc", nil, "")
	if err := json.Unmarshal(b, &v); st != 200 || err != nil || !v.Kept || len(v.Tags) != 1 || !strings.Contains(strings.Join(v.Reasons, ";"), "protected_by_tag") {
		t.Fatalf("tagged: %d %s", st, b)
	}
	st, b = do("GET", "/api/v1/repository/acme/app/manifest/"+loose.String()+"/gc", nil, "")
	if err := json.Unmarshal(b, &v); st != 200 || err != nil || !v.Kept || !strings.Contains(strings.Join(v.Reasons, ";"), "protected_by_recent_upload") {
		t.Fatalf("loose, just pushed: %d %s", st, b)
	}
	time.Sleep(1100 * time.Millisecond)
	st, b = do("GET", "/api/v1/repository/acme/app/manifest/"+loose.String()+"/gc", nil, "")
	if err := json.Unmarshal(b, &v); st != 200 || err != nil || v.Kept || len(v.Reasons) != 0 {
		t.Fatalf("loose, after the delay: %d %s", st, b)
	}
	var s struct {
		Enabled     bool
		Collectable struct{ Manifests, Blobs int }
	}
	st, b = do("GET", "/api/v1/superuser/gc", nil, "")
	if err := json.Unmarshal(b, &s); st != 200 || err != nil || !s.Enabled || s.Collectable.Manifests != 1 {
		t.Fatalf("superuser gc: %d %s", st, b)
	}
	if st, _ := do("GET", "/api/v1/repository/acme/app/manifest/sha256:"+strings.Repeat("0", 64)+"/gc", nil, ""); st != 404 {
		t.Fatalf("unknown manifest: %d", st)
	}
}

// TestConfirmationWithCollectionOff: a replica with gc.enabled false
// still confirms the blobs a client asks about (HEAD), so a collection
// that `berth admin gc`, or another replica, runs keeps them: the client
// pushes the manifest that names them next.
func TestConfirmationWithCollectionOff(t *testing.T) {
	var cfg config.Config
	_, hs, db := startServer(t, func(c *config.Config) {
		c.Scan.Enabled = false
		c.Auth.Mode = "none"
		c.GC.Enabled = false
		c.GC.Delay = 2 * time.Second
		cfg = *c
	})
	layer := []byte("a layer pushed before its manifest")
	d := digest.FromBytes(layer)
	resp, err := http.Post(hs.URL+"/v2/acme/app/blobs/uploads/?digest="+d.String(), "application/octet-stream", bytes.NewReader(layer))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("push: %d", resp.StatusCode)
	}
	time.Sleep(1400 * time.Millisecond) // past half the delay: a HEAD confirms
	head := func() int {
		resp, err := http.Head(hs.URL + "/v2/acme/app/blobs/" + d.String())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := head(); st != http.StatusOK {
		t.Fatalf("HEAD: %d", st)
	}
	time.Sleep(900 * time.Millisecond) // the push is past the delay, the HEAD is not
	driver, err := server.OpenStorage(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if _, err := gc.New(wire.GCStores(db, cfg.GC.TimeMachine), driver, server.GCOptions(cfg, log)).Pass(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if st := head(); st != http.StatusOK {
		t.Fatalf("the blob a HEAD confirmed was collected: HEAD %d", st)
	}
}
