package e2e

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestTektonStyleReceiver registers a webhook with a shared secret and a
// custom body, as a Tekton EventListener with the GitHub interceptor
// expects, pushes with crane, and checks what the listener receives: the
// X-Hub-Signature-256 HMAC verifies, and the TriggerBinding paths
// $(body.updated_tags[0]) and $(body.docker_url) resolve.
func TestTektonStyleReceiver(t *testing.T) {
	begin(t)
	if registryHost == "" {
		t.Fatal("no registry")
	}
	const secret = "tekton-shared-secret"
	type delivery struct {
		body      []byte
		signature string
		eventType string
		key       string
	}
	got := make(chan delivery, 10)
	listener := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- delivery{body: b, signature: r.Header.Get("X-Hub-Signature-256"), eventType: r.Header.Get("X-Berth-Event"), key: r.Header.Get("Idempotency-Key")}
		// An EventListener answers 202 with its ids.
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		w.Write([]byte(`{"eventListenerUID":"e2e","eventID":"1"}`))
	}))
	defer listener.Close()

	repo := uniqueRepo(t, "app")
	body := map[string]any{"event": "repo_push", "method": "webhook", "title": "tekton",
		"config": map[string]any{"url": listener.URL + "/hooks", "secret": secret,
			"template": `{"repository":"${repository}","docker_url":"${docker_url}","updated_tags":"${updated_tags}","pusher":"berth"}`}}
	b, _ := json.Marshal(body)
	resp, err := http.Post("http://"+registryHost+"/api/v1/repository/"+repo+"/notification/", "application/json", strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	created, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 201 {
		// Create the repository by pushing, then register.
		runTool(t, "crane", "append", "--insecure", "-f", layerTar(t, t.TempDir(), "hello.txt", "hello"), "-t", registryHost+"/"+repo+":seed")
		resp, err = http.Post("http://"+registryHost+"/api/v1/repository/"+repo+"/notification/", "application/json", strings.NewReader(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		created, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 201 {
			t.Fatalf("create notification: %d %s", resp.StatusCode, created)
		}
	}
	if strings.Contains(string(created), secret) {
		t.Fatal("the API answer shows the shared secret")
	}

	runTool(t, "crane", "append", "--insecure", "-f", layerTar(t, t.TempDir(), "hello.txt", "hello"), "-t", registryHost+"/"+repo+":1.9-2")
	var d delivery
	select {
	case d = <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("the listener received nothing within 30 s")
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(d.body)
	if want := "sha256=" + hex.EncodeToString(mac.Sum(nil)); d.signature != want {
		t.Fatalf("X-Hub-Signature-256 = %q, want %q (GitHub interceptor would reject it)", d.signature, want)
	}
	if d.key == "" || d.eventType != "repo_push" {
		t.Fatalf("headers: Idempotency-Key %q, X-Berth-Event %q", d.key, d.eventType)
	}
	var p map[string]any
	if err := json.Unmarshal(d.body, &p); err != nil {
		t.Fatalf("body is not JSON: %s", d.body)
	}
	// $(body.updated_tags[0]) and $(body.docker_url).
	tags, _ := p["updated_tags"].([]any)
	if len(tags) == 0 || tags[0] != "1.9-2" {
		t.Fatalf("$(body.updated_tags[0]) = %v in %s", tags, d.body)
	}
	if p["docker_url"] != registryHost+"/"+repo || p["pusher"] != "berth" {
		t.Fatalf("$(body.docker_url) = %v in %s", p["docker_url"], d.body)
	}
}
