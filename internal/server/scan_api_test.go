package server_test

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestVulnDBImportAPI imports advisories over the API as a superuser: an
// all.zip body, a JSON body, and bad input answered 400 with nothing lost.
func TestVulnDBImportAPI(t *testing.T) {
	w := newWorld(t)
	post := func(body []byte, contentType string) (int, map[string]any, string) {
		c := w.creds["root"]
		req, _ := http.NewRequest("POST", w.url+"/api/v1/superuser/vulndb", bytes.NewReader(body))
		req.SetBasicAuth(c[0], c[1])
		req.Header.Set("Content-Type", contentType)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var m map[string]any
		json.Unmarshal(raw, &m)
		return resp.StatusCode, m, string(raw)
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, id := range []string{"GO-2026-1", "GO-2026-2"} {
		f, _ := zw.Create(id + ".json")
		f.Write([]byte(`{"id":"` + id + `","modified":"2026-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"Go","name":"example.com/m"},"ranges":[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"1.2.0"}]}]}]}`))
	}
	f, _ := zw.Create("BAD.json")
	f.Write([]byte(`{"id":"BAD","modified":"2026-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"Go","name":"x"},"ranges":[{"type":"NOPE","events":[]}]}]}`))
	zw.Close()
	status, m, raw := post(buf.Bytes(), "application/zip")
	if status != 200 || m["applied"] != 2.0 || m["rejected"] != 1.0 || !strings.Contains(raw, "BAD.json") {
		t.Fatalf("zip import: %d %s", status, raw)
	}
	// Again: nothing changed.
	if status, m, raw := post(buf.Bytes(), "application/zip"); status != 200 || m["applied"] != 0.0 || m["unchanged"] != 2.0 {
		t.Fatalf("re-import: %d %s", status, raw)
	}
	if status, _, raw := post([]byte("PK\x03\x04garbage"), "application/zip"); status != 400 || !strings.Contains(raw, "zip") {
		t.Fatalf("corrupt zip: %d %s", status, raw)
	}
	if status, m, raw := post([]byte(`{"id":"GO-2026-3","modified":"2026-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"Go","name":"example.com/n"},"versions":["1.0.0"]}]}`), "application/json"); status != 200 || m["applied"] != 1.0 {
		t.Fatalf("JSON import: %d %s", status, raw)
	}
	if status, m, raw := post([]byte(`{"id":`), "application/json"); status != 200 || m["rejected"] != 1.0 || m["applied"] != 0.0 {
		t.Fatalf("malformed JSON: %d %s", status, raw)
	}
	status, m, raw = w.call("GET", "/api/v1/superuser/vulndb", "root", "")
	eco, _ := m["ecosystems"].([]any)
	if status != 200 || len(eco) != 1 || eco[0].(map[string]any)["ecosystem"] != "Go" || eco[0].(map[string]any)["records"] != 3.0 {
		t.Fatalf("status: %d %s", status, raw)
	}
	if status, _, _ := w.call("POST", "/api/v1/superuser/vulndb", "owner", `{}`); status != 403 {
		t.Fatalf("import as a non-superuser: %d", status)
	}
}

// TestSecurityEndpoint: the pushed image goes from queued to a scanned
// answer in Quay's shape; bad digests are refused.
func TestSecurityEndpoint(t *testing.T) {
	w := newWorld(t)
	// Run the background workers (the scanner) as `berth serve` does.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.srv.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	path := "/api/v1/repository/acme/private/manifest/" + w.digest["private"].String() + "/security?vulnerabilities=true"
	deadline := time.Now().Add(30 * time.Second)
	var m map[string]any
	var raw string
	for {
		var status int
		status, m, raw = w.call("GET", path, "reader", "")
		if status != 200 {
			t.Fatalf("security: %d %s", status, raw)
		}
		if m["status"] != "queued" || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The world's images have layers of random bytes, not tars: the
	// background scanner says so.
	if m["status"] != "unsupported" || m["data"] != nil || !strings.Contains(m["reason"].(string), "not a tar") {
		t.Fatalf("security: %s", raw)
	}
	bad := "/api/v1/repository/acme/private/manifest/sha256:nothex/security"
	if status, _, _ := w.call("GET", bad, "reader", ""); status != 400 {
		t.Fatalf("malformed digest: %d", status)
	}
	unknown := "/api/v1/repository/acme/private/manifest/sha256:" + strings.Repeat("0", 64) + "/security"
	if status, _, _ := w.call("GET", unknown, "reader", ""); status != 404 {
		t.Fatalf("unknown digest: %d", status)
	}
	if status, _, _ := w.call("GET", path[:len(path)-len("true")]+"maybe", "reader", ""); status != 400 {
		t.Fatalf("bad vulnerabilities parameter: %d", status)
	}
}
