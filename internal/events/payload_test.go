package events

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
)

var testServer = Server{Host: "reg.example:5000", Scheme: "https"}

// asJSON round-trips v so that maps built from Go types compare equal to
// maps decoded from the expected JSON.
func asJSON(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("unmarshal: %v", err)
	}
	return out
}

func mustUnmarshal(t *testing.T, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("expected JSON %s: %v", s, err)
	}
	return v
}

func TestQuayPayload(t *testing.T) {
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	const repoFields = `"repository":"ns/app","namespace":"ns","name":"app","docker_url":"reg.example:5000/ns/app","homepage":"https://reg.example:5000/repository/ns/app","event_id":"u-1","actor":"alice","time":"2025-01-02T03:04:05Z"`
	tests := []struct {
		name, kind, repo, data string
		want                   string
	}{
		{
			name: "push", kind: meta.EventRepoPush, repo: "ns/app",
			data: `{"digest":"sha256:abc","media_type":"application/vnd.oci.image.manifest.v1+json","size":1234,"updated_tags":["latest","v1"]}`,
			want: `{` + repoFields + `,"event":"repo_push","updated_tags":["latest","v1"],"digest":"sha256:abc","media_type":"application/vnd.oci.image.manifest.v1+json","size":1234}`,
		},
		{
			name: "push by digest has an empty tag list", kind: meta.EventRepoPush, repo: "ns/app",
			data: `{"digest":"sha256:abc","media_type":"","size":10,"updated_tags":null}`,
			want: `{` + repoFields + `,"event":"repo_push","updated_tags":[],"digest":"sha256:abc","size":10}`,
		},
		{
			name: "nested repository", kind: meta.EventRepoCreated, repo: "ns/team/app",
			want: `{"repository":"ns/team/app","namespace":"ns","name":"team/app","docker_url":"reg.example:5000/ns/team/app","homepage":"https://reg.example:5000/repository/ns/team/app","event_id":"u-1","actor":"alice","time":"2025-01-02T03:04:05Z","event":"repo_created"}`,
		},
		{
			name: "tag deleted", kind: meta.EventTagDeleted, repo: "ns/app",
			data: `{"tag":"v1","digest":"sha256:abc"}`,
			want: `{` + repoFields + `,"event":"tag_deleted","tag":"v1","digest":"sha256:abc"}`,
		},
		{
			name: "manifest deleted", kind: meta.EventManifestDeleted, repo: "ns/app",
			data: `{"digest":"sha256:abc","tags":["a","b"]}`,
			want: `{` + repoFields + `,"event":"manifest_deleted","tags":["a","b"],"digest":"sha256:abc"}`,
		},
		{
			name: "repo deleted", kind: meta.EventRepoDeleted, repo: "ns/app",
			want: `{` + repoFields + `,"event":"repo_deleted"}`,
		},
		{
			name: "mirror failed", kind: EventRepoMirrorSyncFailed, repo: "ns/app",
			data: `{"message":"'quay.io/x/y' with tag pattern 'latest,v1.*'"}`,
			want: `{` + repoFields + `,"event":"repo_mirror_sync_failed","message":"'quay.io/x/y' with tag pattern 'latest,v1.*'"}`,
		},
		{
			name: "vulnerability", kind: EventVulnerabilityFound, repo: "ns/app",
			data: `{"tags":["latest"],"digest":"sha256:abc","vulnerability":{"id":"CVE-1","description":"bad","link":"https://x/CVE-1","priority":"High","has_fix":true}}`,
			want: `{` + repoFields + `,"event":"vulnerability_found","tags":["latest"],"digest":"sha256:abc","vulnerability":{"id":"CVE-1","description":"bad","link":"https://x/CVE-1","priority":"High","has_fix":true}}`,
		},
		{
			name: "vulnerability on an untagged manifest names its digest", kind: EventVulnerabilityFound, repo: "ns/app",
			data: `{"digest":"sha256:abc","vulnerability":{"id":"CVE-2"}}`,
			want: `{` + repoFields + `,"event":"vulnerability_found","tags":["sha256:abc"],"digest":"sha256:abc","vulnerability":{"id":"CVE-2","description":"","link":"","priority":"Unknown","has_fix":false}}`,
		},
		{
			name: "image expiry", kind: EventRepoImageExpiry, repo: "ns/app",
			data: `{"tags":["old"],"expiring_in":3}`,
			want: `{` + repoFields + `,"event":"repo_image_expiry","tags":["old"],"expiring_in":"3 days"}`,
		},
		{
			name: "quota warning", kind: EventQuotaWarning, repo: "ns/app",
			data: `{"threshold_percent":80,"usage_bytes":8589934592,"limit_bytes":10737418240,"usage_percent":80,"namespace":"ns","limit_type":"Warning","digest":"sha256:abc","refused":false,"push_bytes":5}`,
			want: `{` + repoFields + `,"event":"quota_warning","threshold_percent":80,"usage_bytes":8589934592,"limit_bytes":10737418240,"usage_percent":80,"digest":"sha256:abc","limit_type":"Warning","refused":false,"push_bytes":5}`,
		},
		{
			name: "quota error fields are always there", kind: EventQuotaError, repo: "ns/app",
			data: `{"usage_percent":99.65}`,
			want: `{` + repoFields + `,"event":"quota_error","threshold_percent":0,"usage_bytes":0,"limit_bytes":0,"usage_percent":99.65}`,
		},
		{
			name: "data never replaces a repository or Berth field", kind: meta.EventRepoCreated, repo: "ns/app",
			data: `{"repository":"evil/x","event":"other","actor":"mallory","extra":{"k":1}}`,
			want: `{` + repoFields + `,"event":"repo_created","extra":{"k":1}}`,
		},
		{
			name: "a kind added later gets the repository fields and its data", kind: "manifest_scanned", repo: "ns/app",
			data: `{"digest":"sha256:abc","vulnerabilities":3}`,
			want: `{` + repoFields + `,"event":"manifest_scanned","digest":"sha256:abc","vulnerabilities":3}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := meta.Event{ID: 7, UUID: "u-1", Kind: tc.kind, Repository: tc.repo, Actor: "alice", CreatedAt: at}
			if tc.data != "" {
				e.Data = json.RawMessage(tc.data)
			}
			got, err := QuayPayload(testServer, e)
			if err != nil {
				t.Fatalf("QuayPayload: %v", err)
			}
			if g, w := asJSON(t, got), mustUnmarshal(t, tc.want); !reflect.DeepEqual(g, w) {
				gb, _ := json.Marshal(g)
				t.Errorf("payload\n got %s\nwant %s", gb, tc.want)
			}
		})
	}
}

func TestQuayPayloadKeepsLargeSizesExact(t *testing.T) {
	e := meta.Event{UUID: "u", Kind: meta.EventRepoPush, Repository: "a/b",
		Data: json.RawMessage(`{"size":9007199254740993,"updated_tags":["x"]}`)}
	p, err := QuayPayload(testServer, e)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(p)
	if !strings.Contains(string(b), `"size":9007199254740993`) {
		t.Errorf("size lost precision: %s", b)
	}
}

func TestQuayPayloadErrors(t *testing.T) {
	tests := []struct {
		name string
		e    meta.Event
	}{
		{"no repository", meta.Event{Kind: meta.EventRepoPush}},
		{"no kind", meta.Event{Repository: "a/b"}},
		{"data not JSON", meta.Event{Kind: meta.EventRepoPush, Repository: "a/b", Data: json.RawMessage(`{`)}},
		{"data not an object", meta.Event{Kind: meta.EventRepoPush, Repository: "a/b", Data: json.RawMessage(`[1]`)}},
		{"tags not a list", meta.Event{Kind: meta.EventRepoPush, Repository: "a/b", Data: json.RawMessage(`{"updated_tags":"latest"}`)}},
		{"tag not a string", meta.Event{Kind: meta.EventManifestDeleted, Repository: "a/b", Data: json.RawMessage(`{"tags":[1]}`)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := QuayPayload(testServer, tc.e); err == nil {
				t.Fatal("expected an error")
			}
		})
	}
}

func TestSamplePayload(t *testing.T) {
	repoKeys := []string{"repository", "namespace", "name", "docker_url", "homepage", "event_id", "event", "actor", "time"}
	tests := []struct {
		kind  string
		check map[string]string // field -> JSON value
	}{
		{meta.EventRepoPush, map[string]string{"updated_tags": `["latest","foo"]`, "pruned_image_count": `3`}},
		{meta.EventTagDeleted, map[string]string{"tag": `"latest"`}},
		{meta.EventManifestDeleted, map[string]string{"tags": `["latest","foo"]`}},
		{meta.EventRepoCreated, nil},
		{meta.EventRepoDeleted, nil},
		{EventRepoMirrorSyncStarted, map[string]string{"message": `"TEST NOTIFICATION"`}},
		{EventRepoMirrorSyncSuccess, map[string]string{"message": `"TEST NOTIFICATION"`}},
		{EventRepoMirrorSyncFailed, map[string]string{"message": `"TEST NOTIFICATION"`}},
		{EventVulnerabilityFound, map[string]string{
			"tags":          `["latest","prod","foo","bar","baz"]`,
			"image":         `"some-image-id"`,
			"vulnerability": `{"id":"CVE-FAKE-CVE","description":"A futurist vulnerability","link":"https://security-tracker.debian.org/tracker/CVE-FAKE-CVE","priority":"Critical","has_fix":false}`,
		}},
		{EventRepoImageExpiry, map[string]string{"tags": `["latest","v1"]`, "expiring_in": `"7 days"`}},
		{EventQuotaWarning, map[string]string{"threshold_percent": `80`, "usage_bytes": `8589934592`, "limit_bytes": `10737418240`, "usage_percent": `80`}},
		{EventQuotaError, map[string]string{"threshold_percent": `100`, "limit_bytes": `10737418240`, "refused": `true`, "limit_type": `"Reject"`}},
		{"manifest_scanned", nil},
	}
	for _, tc := range tests {
		t.Run(tc.kind, func(t *testing.T) {
			p, err := SamplePayload(testServer, tc.kind, "ns/app")
			if err != nil {
				t.Fatal(err)
			}
			got := asJSON(t, p).(map[string]any)
			for _, k := range repoKeys {
				if _, ok := got[k]; !ok {
					t.Errorf("missing %s", k)
				}
			}
			if got["event"] != tc.kind || got["repository"] != "ns/app" || got["namespace"] != "ns" || got["name"] != "app" {
				t.Errorf("repository fields: %v", got)
			}
			if _, err := uuid.Parse(got["event_id"].(string)); err != nil {
				t.Errorf("event_id %v is not a UUID", got["event_id"])
			}
			for k, want := range tc.check {
				if !reflect.DeepEqual(got[k], mustUnmarshal(t, want)) {
					t.Errorf("%s = %v, want %s", k, got[k], want)
				}
			}
		})
	}
	a, _ := SamplePayload(testServer, meta.EventRepoPush, "ns/app")
	b, _ := SamplePayload(testServer, meta.EventRepoPush, "ns/app")
	if a["event_id"] == b["event_id"] {
		t.Error("two test sends share an event_id; deduplicating receivers would drop the second")
	}
}

func TestSamplePayloadConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  map[string]any
		want string
	}{
		{map[string]any{"level": float64(1)}, "High"},
		{map[string]any{"level": json.Number("3")}, "Low"},
		{map[string]any{"level": "4"}, "Negligible"},
		{map[string]any{"level": "Medium"}, "Medium"},
		{map[string]any{"level": 99}, "Critical"},
		{nil, "Critical"},
	} {
		p, err := SamplePayloadConfig(testServer, EventVulnerabilityFound, "ns/app", tc.cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got := p["vulnerability"].(map[string]any)["priority"]; got != tc.want {
			t.Errorf("level %v: priority %v, want %s", tc.cfg, got, tc.want)
		}
	}
	p, err := SamplePayloadConfig(testServer, EventRepoImageExpiry, "ns/app", map[string]any{"days": float64(14)})
	if err != nil {
		t.Fatal(err)
	}
	if p["expiring_in"] != "14 days" {
		t.Errorf("expiring_in %v", p["expiring_in"])
	}
	if _, err := SamplePayload(testServer, meta.EventRepoPush, ""); err == nil {
		t.Error("a sample without a repository must fail")
	}
}

func TestCloudEvent(t *testing.T) {
	e := meta.Event{UUID: "0b6f1f9e-5a53-4f47-9d0c-1d3c7f1b2a11", Kind: meta.EventRepoPush, Repository: "ns/app",
		CreatedAt: time.Date(2025, 1, 2, 3, 4, 5, 600000000, time.FixedZone("x", 3600)), Data: json.RawMessage(`{"updated_tags":["v1"]}`)}
	data, err := QuayPayload(Server{Host: "reg.example"}, e)
	if err != nil {
		t.Fatal(err)
	}
	got := asJSON(t, CloudEvent(Server{Host: "reg.example"}, e, data)).(map[string]any)
	want := map[string]any{
		"specversion":     "1.0",
		"id":              e.UUID,
		"source":          "https://reg.example/repository/ns/app",
		"type":            "dev.berth.repo_push",
		"time":            "2025-01-02T02:04:05.6Z",
		"datacontenttype": "application/json",
		"subject":         "ns/app",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if _, err := time.Parse(time.RFC3339, got["time"].(string)); err != nil {
		t.Errorf("time is not RFC 3339: %v", err)
	}
	if d, ok := got["data"].(map[string]any); !ok || d["repository"] != "ns/app" {
		t.Errorf("data = %v", got["data"])
	}
	if len(got) != len(want)+1 {
		t.Errorf("unexpected attributes: %v", got)
	}
}

// TestBaseImageUpdatedPayload: the dependent's repository fields, its tags
// and digest, and the base object a TriggerBinding reads, complete even
// when the producer left fields out.
func TestBaseImageUpdatedPayload(t *testing.T) {
	srv := Server{Host: "registry.example.com"}
	old, updated := digest.FromString("old"), digest.FromString("new")
	data := `{"digest":"` + digest.FromString("app").String() + `","tags":["v1"],"base":{"repository":"mirror/ubi","tag":"1.9","old_digest":"` +
		old.String() + `","new_digest":"` + updated.String() + `"},"fixed_vulnerabilities":[{"id":"CVE-1"}]}`
	p, err := QuayPayload(srv, meta.Event{UUID: "u", Kind: EventBaseImageUpdated, Repository: "team/app", Data: json.RawMessage(data)})
	if err != nil {
		t.Fatal(err)
	}
	base, _ := p["base"].(map[string]any)
	if p["repository"] != "team/app" || p["docker_url"] != "registry.example.com/team/app" || p["digest"] != digest.FromString("app").String() ||
		base["docker_url"] != "registry.example.com/mirror/ubi:1.9" || base["old_digest"] != old.String() || base["new_digest"] != updated.String() {
		t.Fatalf("payload: %v", p)
	}
	if fixed, _ := p["fixed_vulnerabilities"].([]any); len(fixed) != 1 {
		t.Fatalf("fixed: %v", p["fixed_vulnerabilities"])
	}
	if added, ok := p["new_vulnerabilities"].([]any); !ok || len(added) != 0 {
		t.Fatalf("new vulnerabilities must be an empty list: %#v", p["new_vulnerabilities"])
	}
	if s := Summary(p, EventBaseImageUpdated); !strings.Contains(s, "mirror/ubi:1.9") || !strings.Contains(s, "team/app") {
		t.Fatalf("summary: %s", s)
	}
}

// TestInternalDataNotSent: what the outbox carries for Berth's own
// subscribers stays out of receivers' payloads.
func TestInternalDataNotSent(t *testing.T) {
	p, err := QuayPayload(testServer, meta.Event{UUID: "u", Kind: meta.EventRepoPush, Repository: "ns/app",
		Data: json.RawMessage(`{"digest":"` + sampleDigest + `","updated_tags":["1"],"new_manifest":true,"previous":{"1":"` + sampleDigest + `"}}`)})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := p["new_manifest"]; ok {
		t.Fatalf("new_manifest sent: %v", p)
	}
	if _, ok := p["previous"]; ok {
		t.Fatalf("previous sent: %v", p)
	}
}
