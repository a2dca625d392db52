package events

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
)

func TestSummary(t *testing.T) {
	tests := []struct {
		kind string
		data string
		want string
	}{
		{meta.EventRepoPush, `{"updated_tags":["latest","v1"],"digest":"sha256:0123456789abcdef"}`, "Berth: pushed tags latest, v1 to ns/app"},
		{meta.EventRepoPush, `{"updated_tags":["latest"]}`, "Berth: pushed tag latest to ns/app"},
		{meta.EventRepoPush, `{"digest":"sha256:0123456789abcdef"}`, "Berth: pushed manifest sha256:0123456789ab to ns/app"},
		{meta.EventTagDeleted, `{"tag":"v1","digest":"sha256:x"}`, "Berth: deleted tag v1 from ns/app"},
		{meta.EventManifestDeleted, `{"digest":"sha256:0123456789abcdef","tags":["a","b"]}`, "Berth: deleted manifest sha256:0123456789ab from ns/app (tags a, b)"},
		{meta.EventRepoCreated, ``, "Berth: created repository ns/app"},
		{meta.EventRepoDeleted, ``, "Berth: deleted repository ns/app"},
		{EventRepoMirrorSyncStarted, `{"message":"'q/x' with tag pattern 'v1.*'"}`, "Berth: mirror sync started for ns/app: 'q/x' with tag pattern 'v1.*'"},
		{EventRepoMirrorSyncSuccess, `{}`, "Berth: mirror sync succeeded for ns/app"},
		{EventRepoMirrorSyncFailed, `{"message":"boom"}`, "Berth: mirror sync failed for ns/app: boom"},
		{EventVulnerabilityFound, `{"tags":["latest"],"vulnerability":{"id":"CVE-1","priority":"Critical"}}`, "Berth: Critical vulnerability CVE-1 found in ns/app (tag latest)"},
		{EventRepoImageExpiry, `{"tags":["a","b"],"expiring_in":"7 days"}`, "Berth: tags a, b of ns/app expiring in 7 days"},
		{"manifest_scanned", `{}`, "Berth: manifest_scanned in ns/app"},
		{EventBaseImageUpdated, `{"tags":["v1"],"base":{"repository":"mirror/ubi","tag":"1.9"}}`, "Berth: the base mirror/ubi:1.9 of ns/app moved (tag v1): rebuild"},
		// A private base of another namespace is not named (meta.Graph.FireBaseMoved).
		{EventBaseImageUpdated, `{"tags":["v1"],"base":{"repository":"","tag":"","old_digest":"sha256:x"}}`, "Berth: the base of ns/app moved (tag v1): rebuild"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			p, err := QuayPayload(testServer, meta.Event{UUID: "u", Kind: tc.kind, Repository: "ns/app", Data: json.RawMessage(tc.data)})
			if err != nil {
				t.Fatal(err)
			}
			if got := Summary(p, tc.kind); got != tc.want {
				t.Errorf("Summary = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestSlackBody(t *testing.T) {
	p, err := QuayPayload(testServer, meta.Event{UUID: "u", Kind: meta.EventRepoPush, Repository: "ns/app", Actor: "a<b>&c",
		Data: json.RawMessage(`{"updated_tags":["latest","v1"],"digest":"sha256:abc"}`)})
	if err != nil {
		t.Fatal(err)
	}
	var msg struct {
		Text        string `json:"text"`
		Username    string `json:"username"`
		Attachments []struct {
			Fallback string   `json:"fallback"`
			Text     string   `json:"text"`
			Color    string   `json:"color"`
			MrkdwnIn []string `json:"mrkdwn_in"`
		} `json:"attachments"`
	}
	body := SlackBody(p, meta.EventRepoPush)
	if err := json.Unmarshal(body, &msg); err != nil {
		t.Fatalf("SlackBody is not JSON: %v\n%s", err, body)
	}
	if msg.Text != "Berth: pushed tags latest, v1 to ns/app" || msg.Username != "Berth" || len(msg.Attachments) != 1 {
		t.Fatalf("message = %+v", msg)
	}
	a := msg.Attachments[0]
	if a.Fallback != msg.Text || a.Color != "good" || !reflect.DeepEqual(a.MrkdwnIn, []string{"text"}) {
		t.Errorf("attachment = %+v", a)
	}
	for _, want := range []string{
		"*Repository:* <https://reg.example:5000/repository/ns/app|ns/app>",
		"*Pull:* `docker pull reg.example:5000/ns/app:latest`",
		"*Digest:* `sha256:abc`",
		"*By:* a&lt;b&gt;&amp;c",
	} {
		if !strings.Contains(a.Text, want) {
			t.Errorf("attachment text lacks %q:\n%s", want, a.Text)
		}
	}
	vuln, _ := SamplePayload(testServer, EventVulnerabilityFound, "ns/app")
	if c := slackColor(vuln, EventVulnerabilityFound); c != "danger" {
		t.Errorf("critical vulnerability colour %q", c)
	}
}

func TestEmailText(t *testing.T) {
	p, _ := SamplePayload(testServer, EventVulnerabilityFound, "ns/app")
	subject, body := EmailText(p, EventVulnerabilityFound)
	if subject != "Berth: Critical vulnerability CVE-FAKE-CVE found in ns/app (tags latest, prod, foo, bar, baz)" {
		t.Errorf("subject %q", subject)
	}
	for _, want := range []string{subject + "\n", "Vulnerability: CVE-FAKE-CVE <https://security-tracker.debian.org/tracker/CVE-FAKE-CVE>", "Fix available: no", `"repository": "ns/app"`} {
		if !strings.Contains(body, want) {
			t.Errorf("body lacks %q:\n%s", want, body)
		}
	}
}
