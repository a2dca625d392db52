package server_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// TestTagPoliciesAPI drives Quay's tag policy endpoints and tag
// expiration through a served Berth: permissions, validation, Quay's
// shapes, an immutable tag refused through /v2 with the policy named, an
// expiration set through the API and one from the quay.expires-after
// label, both shown in the tag list.
func TestTagPoliciesAPI(t *testing.T) {
	w := newWorld(t)
	imm := "/api/v1/organization/acme/immutabilitypolicy/"
	for who, want := range map[string]int{"reader": 403, "writer": 403, "anonymous": 401} {
		if st, _, raw := w.call("POST", imm, who, `{"tagPattern":"^v"}`); st != want {
			t.Errorf("%s POST immutability policy: %d %s", who, st, raw)
		}
	}
	for _, bad := range []string{`{"tagPattern":"("}`, `{}`, `{"tagPattern":"^v","method":"number_of_tags"}`} {
		if st, _, raw := w.call("POST", imm, "owner", bad); st != 400 {
			t.Errorf("immutability policy %s: %d %s", bad, st, raw)
		}
	}
	st, created, raw := w.call("POST", imm, "orgadmin", `{"tagPattern":"^v[0-9]","tagPatternMatches":true}`)
	if st != 201 || created["uuid"] == "" {
		t.Fatalf("create immutability policy: %d %s", st, raw)
	}
	uuid := created["uuid"].(string)
	if st, body, raw := w.call("GET", imm, "owner", ""); st != 200 || !strings.Contains(raw, uuid) || len(body["policies"].([]any)) != 1 {
		t.Fatalf("list: %d %s", st, raw)
	}
	if st, _, raw := w.call("GET", imm+uuid, "owner", ""); st != 200 || !strings.Contains(raw, `"tagPattern":"^v[0-9]"`) {
		t.Fatalf("get: %d %s", st, raw)
	}
	w.pushTagged("acme/private", "v2.0", "layer of v2.0")
	c := w.creds["root"]
	over := w.manifest([]byte(`{"architecture":"amd64","os":"linux"}`), []byte("layer of acme/private"))
	if r := w.do("PUT", "/v2/acme/private/manifests/v2.0", c[0], c[1], over, "Content-Type", "application/vnd.oci.image.manifest.v1+json"); r.StatusCode != 403 {
		t.Fatalf("overwrite of an immutable tag: %d", r.StatusCode)
	}
	if st, _, raw := w.call("PUT", "/api/v1/repository/acme/private/tag/v2.0", "writer", fmt.Sprintf(`{"expiration":%d}`, time.Now().Add(time.Hour).Unix())); st != 403 || !strings.Contains(raw, uuid) {
		t.Fatalf("expiration of an immutable tag: %d %s", st, raw)
	}

	prune := "/api/v1/repository/acme/private/autoprunepolicy/"
	for _, bad := range []string{`{"method":"keep_some","value":3}`, `{"method":"number_of_tags","value":0}`, `{"method":"number_of_tags","value":"3"}`,
		`{"method":"creation_date","value":"7x"}`, `{"method":"creation_date","value":7}`} {
		if st, _, raw := w.call("POST", prune, "owner", bad); st != 400 {
			t.Errorf("auto-prune policy %s: %d %s", bad, st, raw)
		}
	}
	if st, _, raw := w.call("POST", prune, "writer", `{"method":"number_of_tags","value":10}`); st != 403 {
		t.Fatalf("a writer set an auto-prune policy: %d %s", st, raw)
	}
	st, created, raw = w.call("POST", prune, "owner", `{"method":"number_of_tags","value":10,"tagPattern":"^nightly-"}`)
	if st != 201 {
		t.Fatalf("create auto-prune policy: %d %s", st, raw)
	}
	pid := created["uuid"].(string)
	if st, _, raw := w.call("GET", prune+pid, "owner", ""); st != 200 || !strings.Contains(raw, `"value":10`) || !strings.Contains(raw, `"method":"number_of_tags"`) {
		t.Fatalf("get auto-prune policy: %d %s", st, raw)
	}
	if st, _, raw := w.call("PUT", prune+pid, "owner", `{"method":"creation_date","value":"2w"}`); st != 204 {
		t.Fatalf("update: %d %s", st, raw)
	}
	// No pattern: Quay's "tagPattern": null.
	if st, _, raw := w.call("GET", prune+pid, "owner", ""); st != 200 || !strings.Contains(raw, `"value":"2w"`) || !strings.Contains(raw, `"tagPattern":null`) {
		t.Fatalf("after update: %d %s", st, raw)
	}
	// Quay answers a delete with the policy's uuid.
	if st, body, raw := w.call("DELETE", prune+pid, "owner", ""); st != 200 || body["uuid"] != pid {
		t.Fatalf("delete auto-prune policy: %d %s", st, raw)
	}
	if st, _, _ := w.call("GET", prune+pid, "owner", ""); st != 404 {
		t.Fatal("deleted policy still there")
	}

	// Expiration through the API, and from the label.
	w.pushTagged("acme/private", "nightly", "layer of nightly")
	at := time.Now().Add(48 * time.Hour).Unix()
	if st, _, raw := w.call("PUT", "/api/v1/repository/acme/private/tag/nightly", "writer", fmt.Sprintf(`{"expiration":%d}`, at)); st != 201 {
		t.Fatalf("set expiration: %d %s", st, raw)
	}
	// 18446744073710 s wrapped to 1970 in microseconds: the tag expired at
	// the next pass.
	for _, bad := range []string{`{"expiration":-5}`, `{"expiration":"tomorrow"}`, fmt.Sprintf(`{"expiration":%d}`, time.Now().Add(-time.Hour).Unix()), `{}`,
		`{"expiration":18446744073710}`, `{"expiration":253402300800}`} {
		if st, _, raw := w.call("PUT", "/api/v1/repository/acme/private/tag/nightly", "writer", bad); st != 400 {
			t.Errorf("expiration %s: %d %s", bad, st, raw)
		}
	}
	cfg := []byte(`{"architecture":"amd64","os":"linux","config":{"Labels":{"quay.expires-after":"2w"}}}`)
	layer := []byte("layer of a short-lived build")
	for _, b := range [][]byte{layer, cfg} {
		w.do("POST", "/v2/acme/private/blobs/uploads/?digest="+digest.FromBytes(b).String(), c[0], c[1], b)
	}
	if r := w.do("PUT", "/v2/acme/private/manifests/pr-42", c[0], c[1], w.manifest(cfg, layer), "Content-Type", "application/vnd.oci.image.manifest.v1+json"); r.StatusCode != 201 {
		t.Fatalf("push with the label: %d", r.StatusCode)
	}
	st, body, raw := w.call("GET", "/api/v1/repository/acme/private/tag/", "reader", "")
	if st != 200 {
		t.Fatalf("tags: %d %s", st, raw)
	}
	ends := map[string]float64{}
	for _, tg := range body["tags"].([]any) {
		m := tg.(map[string]any)
		if e, ok := m["end_ts"].(float64); ok {
			ends[m["name"].(string)] = e
			if m["expiration"] == nil {
				t.Errorf("%s has end_ts but no expiration", m["name"])
			}
		}
	}
	twoWeeks := float64(time.Now().Add(14 * 24 * time.Hour).Unix())
	if ends["nightly"] != float64(at) || ends["pr-42"] < twoWeeks-60 || ends["pr-42"] > twoWeeks+60 || len(ends) != 2 {
		t.Fatalf("expirations in the tag list: %v (%s)", ends, raw)
	}
	if st, _, raw := w.call("PUT", "/api/v1/repository/acme/private/tag/nightly", "writer", `{"expiration":null}`); st != 201 {
		t.Fatalf("clear expiration: %d %s", st, raw)
	}
}
