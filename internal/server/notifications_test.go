package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
)

func (w *world) call(method, path, who, body string) (int, map[string]any, string) {
	w.t.Helper()
	c := w.creds[who]
	return w.callAs(method, path, c[0], c[1], body)
}

// callAs is call with a username and password of the caller's choosing.
func (w *world) callAs(method, path, user, password, body string) (int, map[string]any, string) {
	w.t.Helper()
	req, _ := http.NewRequest(method, w.url+path, bytes.NewReader([]byte(body)))
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	json.Unmarshal(raw, &m)
	return resp.StatusCode, m, string(raw)
}

// TestNotificationAPI covers Quay's notification endpoints on a
// repository, and Berth's organization-wide and registry-wide ones.
func TestNotificationAPI(t *testing.T) {
	w := newWorld(t)
	base := "/api/v1/repository/acme/private/notification/"
	const secret = "s3cret-for-hmac"
	body := `{"event":"repo_push","method":"webhook","title":"ci","config":{"url":"https://ci.example.com/hook","secret":"` + secret +
		`","template":"{\"tag\":\"${updated_tags[0]}\"}","headers":{"X-Team":"platform"}},"eventConfig":{}}`
	status, n, raw := w.call("POST", base, "owner", body)
	if status != 201 || n["uuid"] == "" || n["event"] != "repo_push" || n["number_of_failures"] != 0.0 || strings.Contains(raw, secret) {
		t.Fatalf("create: %d %s", status, raw)
	}
	uuid := n["uuid"].(string)
	if cfg := n["config"].(map[string]any); cfg["secret"] != "********" || cfg["url"] != "https://ci.example.com/…" {
		t.Fatalf("config shown as %v", cfg)
	}
	for _, bad := range []string{
		`{"event":"repo_push","method":"webhook","config":{}}`,                                             // no url
		`{"event":"repo_push","method":"webhook","config":{"url":"ftp://x.example.com/"}}`,                 // scheme
		`{"event":"repo_push","method":"webhook","config":{"url":"http://127.0.0.1:9/"}}`,                  // loopback: SSRF guard
		`{"event":"repo_push","method":"webhook","config":{"url":"http://169.254.169.254/latest/"}}`,       // metadata address
		`{"event":"repo_push","method":"webhook","config":{"url":"https://x.example.com","template":"{"}}`, // bad template
		`{"event":"nope","method":"webhook","config":{"url":"https://x.example.com"}}`,
		`{"event":"repo_push","method":"carrier-pigeon","config":{}}`,
		`{"event":"vulnerability_found","method":"webhook","config":{"url":"https://x.example.com"},"eventConfig":{"level":9}}`,
		`{"event":"vulnerability_found","method":"webhook","config":{"url":"https://x.example.com"},"eventConfig":{"level":"dire"}}`,
		`{"event":"vulnerability_found","method":"webhook","config":{"url":"https://x.example.com"},"eventConfig":{"level":1.5}}`,
		`{"event":"repo_push","method":"webhook","config":{"url":"https://x.example.com"},"unknown":1}`,
		`{"event":"repo_push","method":"webhook","config":{"url":"https://user:pw@x.example.com/"}}`, // credentials in the URL
		`{"event":"repo_push","method":"webhook","config":{"url":"https://x.example.com","headers":{"X-Hub-Signature-256":"forged"}}}`,
		`not json`,
		// repo_image_expiry's days: a whole number of days, 1 to 3650.
		`{"event":"repo_image_expiry","method":"webhook","config":{"url":"https://x.example.com"},"eventConfig":{"days":"soon"}}`,
		`{"event":"repo_image_expiry","method":"webhook","config":{"url":"https://x.example.com"},"eventConfig":{"days":-1}}`,
		`{"event":"repo_image_expiry","method":"webhook","config":{"url":"https://x.example.com"},"eventConfig":{"days":200000}}`,
		`{"event":"repo_image_expiry","method":"webhook","config":{"url":"https://x.example.com"},"eventConfig":{"days":3.7}}`,
	} {
		if status, _, raw := w.call("POST", base, "owner", bad); status != 400 {
			t.Errorf("create %s: %d %s", bad, status, raw)
		}
	}
	// Quay's level as digits or a severity name is accepted too.
	for _, level := range []string{`"1"`, `"High"`} {
		body := `{"event":"vulnerability_found","method":"webhook","config":{"url":"https://x.example.com"},"eventConfig":{"level":` + level + `}}`
		status, n, raw := w.call("POST", base, "owner", body)
		if status != 201 {
			t.Fatalf("level %s: %d %s", level, status, raw)
		}
		w.call("DELETE", base+n["uuid"].(string), "owner", "")
	}
	// Quay's UI sends event_config beside eventConfig (it copies what it
	// received), and scripts POST back what a GET returned: event_config
	// is read when eventConfig is absent (eventConfig wins when both are
	// sent), and the read-only fields of a GET are ignored.
	days := func(v map[string]any) any { ec, _ := v["event_config"].(map[string]any); return ec["days"] }
	const fakeUUID = "00000000-0000-0000-0000-000000000001"
	status, both, raw := w.call("POST", base, "owner", `{"uuid":"`+fakeUUID+`","number_of_failures":7,"event":"repo_image_expiry","method":"webhook",`+
		`"config":{"url":"https://x.example.com"},"eventConfig":{"days":5},"event_config":{"days":9}}`)
	if status != 201 || both["uuid"] == fakeUUID || both["number_of_failures"] != 0.0 || days(both) != 5.0 {
		t.Fatalf("create with eventConfig, event_config and uuid: %d %s", status, raw)
	}
	status, snake, raw := w.call("POST", base, "owner", `{"event":"repo_image_expiry","method":"webhook","config":{"url":"https://x.example.com"},"event_config":{"days":9}}`)
	if status != 201 || days(snake) != 9.0 {
		t.Fatalf("create with event_config only: %d %s", status, raw)
	}
	if status, _, raw := w.call("POST", base, "owner", `{"event":"repo_image_expiry","method":"webhook","config":{"url":"https://x.example.com"},"event_config":{"days":"soon"}}`); status != 400 {
		t.Errorf("event_config is validated as eventConfig is: %d %s", status, raw)
	}
	_, _, got := w.call("GET", base+snake["uuid"].(string), "owner", "")
	status, copied, raw := w.call("POST", base, "owner", got)
	if status != 201 || copied["uuid"] == snake["uuid"] || days(copied) != 9.0 || copied["event"] != "repo_image_expiry" {
		t.Fatalf("a GET's body POSTed back (%s): %d %s", got, status, raw)
	}
	// One with a secret and a header: its GET shows them masked, and the
	// mask sent back would become them. Refused, naming the field.
	status, secretive, raw := w.call("POST", base, "owner", `{"event":"repo_push","method":"webhook",`+
		`"config":{"url":"https://x.example.com","secret":"whsec-real","headers":{"X-Api-Key":"key-real"}}}`)
	if status != 201 {
		t.Fatalf("create with a secret: %d %s", status, raw)
	}
	_, _, got = w.call("GET", base+secretive["uuid"].(string), "owner", "")
	if status, _, raw := w.call("POST", base, "owner", got); status != 400 || !strings.Contains(string(raw), "config.secret") {
		t.Errorf("a GET's body with a masked secret POSTed back: %d %s, want 400 naming config.secret", status, raw)
	}
	masked := `{"event":"repo_push","method":"webhook","config":{"url":"https://x.example.com","headers":{"X-Api-Key":"********"}}}`
	if status, _, raw := w.call("POST", base, "owner", masked); status != 400 || !strings.Contains(string(raw), "X-Api-Key") {
		t.Errorf("a masked header value: %d %s, want 400 naming the header", status, raw)
	}
	for _, v := range []map[string]any{both, snake, copied, secretive} {
		w.call("DELETE", base+v["uuid"].(string), "owner", "")
	}
	if status, m, _ := w.call("GET", base, "owner", ""); status != 200 || len(m["notifications"].([]any)) != 1 {
		t.Fatalf("list: %d %v", status, m)
	}
	if status, m, _ := w.call("GET", base+uuid, "owner", ""); status != 200 || m["title"] != "ci" {
		t.Fatalf("get: %d %v", status, m)
	}
	if status, _, _ := w.call("POST", base+uuid+"/test", "owner", ""); status != 200 {
		t.Fatalf("test: %d", status)
	}
	// A test is one attempt: it is not retried for days on the shared
	// delivery workers.
	if jobs, err := w.db.Jobs().Jobs(context.Background(), meta.NotifyQueue, "pending", 100); err != nil || len(jobs) == 0 || jobs[len(jobs)-1].MaxAttempts != 1 {
		t.Fatalf("the test's delivery job: %+v %v", jobs, err)
	}
	if status, m, _ := w.call("GET", base+uuid+"/attempts", "owner", ""); status != 200 || m["attempts"] == nil {
		t.Fatalf("attempts: %d %v", status, m)
	}
	if status, _, _ := w.call("POST", base+uuid, "owner", ""); status != 204 {
		t.Fatalf("reset: %d", status)
	}
	// Repository admins only.
	for _, who := range []string{"writer", "reader", "robot", "token-in"} {
		if status, _, _ := w.call("GET", base, who, ""); status != 403 {
			t.Errorf("list as %s: %d", who, status)
		}
	}
	if status, _, _ := w.call("GET", base, "anonymous", ""); status != 401 {
		t.Errorf("list as anonymous: %d", status)
	}
	if status, _, _ := w.call("GET", base+"00000000-0000-0000-0000-000000000000", "owner", ""); status != 404 {
		t.Errorf("unknown uuid: %d", status)
	}
	if status, _, _ := w.call("DELETE", base+uuid, "owner", ""); status != 204 {
		t.Fatalf("delete: %d", status)
	}
	if status, _, _ := w.call("GET", base+uuid, "owner", ""); status != 404 {
		t.Fatalf("get after delete: %d", status)
	}
	// Organization-wide: organization admins; registry-wide: superusers.
	orgBody := `{"event":"repo_push","method":"slack","config":{"url":"https://hooks.slack.example.com/x"}}`
	for who, want := range map[string]int{"orgadmin": 201, "owner": 201, "writer": 403, "root": 201, "anonymous": 401} {
		if status, _, raw := w.call("POST", "/api/v1/organization/acme/notification/", who, orgBody); status != want {
			t.Errorf("organization notification as %s: %d, want %d: %s", who, status, want, raw)
		}
	}
	for who, want := range map[string]int{"root": 201, "owner": 403, "anonymous": 401} {
		if status, _, raw := w.call("POST", "/api/v1/superuser/notification/", who, orgBody); status != want {
			t.Errorf("registry notification as %s: %d, want %d: %s", who, status, want, raw)
		}
	}
	if status, m, _ := w.call("GET", "/api/v1/organization/acme/notification/", "orgadmin", ""); status != 200 || len(m["notifications"].([]any)) != 3 {
		t.Fatalf("organization list: %d %v", status, m)
	}
}

// TestImportRefusesInvalidNames: an import into a name that is not a
// repository name is refused before anything is created (it used to
// leave a repository row no route could reach or delete).
func TestImportRefusesInvalidNames(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	for _, name := range []string{"acme/Bad Name..", "acme/../x", "acme//x", "acme", "acme/" + strings.Repeat("a", 300)} {
		body, _ := json.Marshal(map[string]any{"source": "127.0.0.1:1/library/alpine", "repository": name})
		if st, _, raw := w.call("POST", "/api/v1/import", "creator", string(body)); st != 400 || !strings.Contains(raw, "repository") {
			t.Errorf("import into %q: %d %s, want 400", name, st, raw)
		}
		if ri, err := w.db.Repositories().Repository(ctx, name); err != nil || ri.Exists {
			t.Errorf("import into %q created the repository (%v)", name, err)
		}
	}
}
