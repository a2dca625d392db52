package server_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestGCReportsWithCollectionOff: a replica with gc.enabled false answers
// the garbage collection reports as docs/gc.md says, not 501: a manifest's
// report names what keeps it and says collection_disabled (the replica
// runs no passes, whatever another replica or `berth admin gc` does), and
// kept is what a pass would decide; the superuser view says enabled false,
// counts what a pass would collect, and has no pass of this replica.
func TestGCReportsWithCollectionOff(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			_, host, _ := serveServer(t, dialect, func(cfg *config.Config) {
				cfg.Auth.Mode = "none"
				cfg.GC.Enabled = false
				cfg.GC.Delay = time.Second
			})
			base := "http://" + host
			do := func(method, path string, body []byte, ct string) (int, []byte) {
				req, _ := http.NewRequest(method, base+path, bytes.NewReader(body))
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
			cfgBlob := []byte(`{"architecture":"amd64","os":"linux","note":"untagged"}`)
			cd := digest.FromBytes(cfgBlob)
			if st, b := do("POST", "/v2/acme/app/blobs/uploads/?digest="+cd.String(), cfgBlob, ""); st != 201 {
				t.Fatalf("blob: %d %s", st, b)
			}
			m := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` +
				cd.String() + `","size":` + strconv.Itoa(len(cfgBlob)) + `},"layers":[]}`)
			d := digest.FromBytes(m)
			if st, b := do("PUT", "/v2/acme/app/manifests/"+d.String(), m, "application/vnd.oci.image.manifest.v1+json"); st != 201 {
				t.Fatalf("manifest: %d %s", st, b)
			}
			type verdict struct {
				Kept    bool     `json:"kept"`
				Reasons []string `json:"reasons"`
			}
			report := func() (verdict, string) {
				t.Helper()
				st, b := do("GET", "/api/v1/repository/acme/app/manifest/"+d.String()+"/gc", nil, "")
				var v verdict
				if err := json.Unmarshal(b, &v); st != 200 || err != nil {
					t.Fatalf("GET .../manifest/%s/gc: %d %s (%v)", d, st, b, err)
				}
				return v, string(b)
			}
			has := func(v verdict, reason string) bool {
				for _, r := range v.Reasons {
					if strings.HasPrefix(r, reason+":") {
						return true
					}
				}
				return false
			}
			v, raw := report()
			if !v.Kept || !has(v, "protected_by_recent_upload") || !has(v, "collection_disabled") {
				t.Fatalf("just pushed: %s; want kept by its recent upload, and collection_disabled", raw)
			}
			time.Sleep(1100 * time.Millisecond) // past gc.delay
			v, raw = report()
			if v.Kept || len(v.Reasons) != 1 || !has(v, "collection_disabled") {
				t.Fatalf("past the delay: %s; want not kept (a pass elsewhere collects it), with collection_disabled only", raw)
			}

			var s struct {
				Enabled     *bool `json:"enabled"`
				Collectable struct {
					Manifests int `json:"manifests"`
				} `json:"collectable"`
				LastPass json.RawMessage `json:"last_pass"`
			}
			st, b := do("GET", "/api/v1/superuser/gc", nil, "")
			if err := json.Unmarshal(b, &s); st != 200 || err != nil || s.Enabled == nil || *s.Enabled || s.Collectable.Manifests != 1 ||
				string(s.LastPass) != "null" {
				t.Fatalf("superuser gc: %d %s; want enabled false, 1 collectable manifest, no pass", st, b)
			}
		})
	}
}
