// Package events turns outbox events into the payloads receivers already
// understand (Quay's notification data, CloudEvents, Slack messages),
// renders Quay's custom body templates, signs bodies the way GitHub does,
// guards outgoing requests against server-side request forgery, and
// delivers through the notification methods (webhook, Slack, email).
//
// Everything here is either a pure function or a method that does one
// delivery; the dispatcher, the store and the API live elsewhere.
package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/uipath"
)

// Event kinds beyond the ones the registry core appends (see meta). Their
// payload shapes are Quay's, built from event data fields of the same
// names, so a producer only has to append an event with that data.
const (
	EventRepoMirrorSyncStarted = "repo_mirror_sync_started"
	EventRepoMirrorSyncSuccess = "repo_mirror_sync_success"
	EventRepoMirrorSyncFailed  = "repo_mirror_sync_failed"
	EventVulnerabilityFound    = "vulnerability_found"
	EventRepoImageExpiry       = "repo_image_expiry"
	EventBaseImageUpdated      = meta.EventBaseImageUpdated
	EventPromotionPending      = meta.EventPromotionPending
	EventPromotionSucceeded    = meta.EventPromotionSucceeded
	EventPromotionBlocked      = meta.EventPromotionBlocked
	EventQuotaWarning          = meta.EventQuotaWarning
	EventQuotaError            = meta.EventQuotaError
)

// Kinds lists the event kinds whose payload shape this package knows.
// Other kinds still get the repository fields plus their data.
func Kinds() []string {
	return []string{
		meta.EventRepoPush, meta.EventTagDeleted, meta.EventManifestDeleted,
		meta.EventRepoCreated, meta.EventRepoDeleted,
		EventRepoMirrorSyncStarted, EventRepoMirrorSyncSuccess, EventRepoMirrorSyncFailed,
		EventVulnerabilityFound, EventRepoImageExpiry, EventBaseImageUpdated,
		EventPromotionPending, EventPromotionSucceeded, EventPromotionBlocked,
		EventQuotaWarning, EventQuotaError,
	}
}

// Server is the registry as the outside world reaches it.
type Server struct {
	// Host is the public host[:port], e.g. "registry.example.com".
	Host string
	// Scheme is "https" (the default when empty) or "http".
	Scheme string
}

func (s Server) scheme() string {
	if s.Scheme == "" {
		return "https"
	}
	return s.Scheme
}

// RepositoryURL is the repository's page in the web UI:
// <scheme>://<host>/repository/<repo>, its segments escaped, with "/-"
// after a nested name that ends like one of the pages under a repository
// (acme/app/activity, acme/team/manifest/x), which the UI would otherwise
// route to a page of another repository.
func (s Server) RepositoryURL(repo string) string {
	return s.scheme() + "://" + s.Host + uipath.Repository(repo)
}

// priorities are Quay's severity names by level index (0 is the worst).
var priorities = [...]string{"Critical", "High", "Medium", "Low", "Negligible", "Unknown"}

// sampleDigest is the digest used in sample payloads.
const sampleDigest = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"

// repositoryFields are the fields Quay puts first in every repository event.
func repositoryFields(srv Server, repo string) map[string]any {
	ns, name, _ := strings.Cut(repo, "/")
	return map[string]any{
		"repository": repo,
		"namespace":  ns,
		"name":       name,
		"docker_url": srv.Host + "/" + repo,
		"homepage":   srv.RepositoryURL(repo),
	}
}

// QuayPayload is the JSON object POSTed for an event: Quay's fields, to the
// name, followed by Berth's additions (event_id, event, actor, time and,
// where known, digest and media_type). Data fields the shape does not name
// are passed through under their own names; they never replace a field
// set here.
func QuayPayload(srv Server, e meta.Event) (map[string]any, error) {
	if e.Repository == "" {
		return nil, fmt.Errorf("%s event %s: no repository", e.Kind, e.UUID)
	}
	if e.Kind == "" {
		return nil, fmt.Errorf("event %s: no kind", e.UUID)
	}
	data, err := decodeData(e.Data)
	if err != nil {
		return nil, fmt.Errorf("%s event %s: %w", e.Kind, e.UUID, err)
	}
	p := repositoryFields(srv, e.Repository)
	p["event_id"] = e.UUID
	p["event"] = e.Kind
	p["actor"] = e.Actor
	if !e.CreatedAt.IsZero() {
		p["time"] = formatTime(e.CreatedAt)
	}
	if err := shape(e.Kind, p, data); err != nil {
		return nil, fmt.Errorf("%s event %s: %w", e.Kind, e.UUID, err)
	}
	for k, v := range data {
		if _, ok := p[k]; ok || (k == "digest" || k == "media_type") && v == "" || internalData[k] {
			continue // set above, not known, or for Berth's own subscribers
		}
		p[k] = v
	}
	return p, nil
}

// internalData are event data fields for Berth's own subscribers of the
// feed (the scanner, the base-image graph), not for receivers.
var internalData = map[string]bool{"new_manifest": true, "previous": true, "notification_uuid": true}

// shape sets the kind's own fields on p from data.
func shape(kind string, p, data map[string]any) error {
	var err error
	setDigest := func() {
		if d, _ := data["digest"].(string); d != "" {
			p["digest"] = d
		}
	}
	switch kind {
	case meta.EventRepoPush:
		if p["updated_tags"], err = stringList(data, "updated_tags"); err != nil {
			return err
		}
		setDigest()
		if mt, _ := data["media_type"].(string); mt != "" {
			p["media_type"] = mt
		}
	case meta.EventTagDeleted:
		tag, _ := data["tag"].(string)
		p["tag"] = tag
		setDigest()
	case meta.EventManifestDeleted:
		if p["tags"], err = stringList(data, "tags"); err != nil {
			return err
		}
		setDigest()
	case EventRepoMirrorSyncStarted, EventRepoMirrorSyncSuccess, EventRepoMirrorSyncFailed:
		msg, _ := data["message"].(string)
		p["message"] = msg
	case EventVulnerabilityFound:
		tags, err := stringList(data, "tags")
		if err != nil {
			return err
		}
		setDigest()
		if d, ok := p["digest"].(string); ok && len(tags) == 0 {
			tags = []string{d} // Quay: the digest stands in for the tags of an untagged manifest
		}
		p["tags"] = tags
		v, _ := data["vulnerability"].(map[string]any)
		p["vulnerability"] = vulnerability(v)
	case EventRepoImageExpiry:
		if p["tags"], err = stringList(data, "tags"); err != nil {
			return err
		}
		p["expiring_in"] = expiringIn(data["expiring_in"])
		setDigest()
	case EventBaseImageUpdated:
		if p["tags"], err = stringList(data, "tags"); err != nil {
			return err
		}
		setDigest()
		p["base"] = baseOf(p, data["base"])
		for _, k := range []string{"fixed_vulnerabilities", "new_vulnerabilities"} {
			list, _ := data[k].([]any)
			if list == nil {
				list = []any{}
			}
			p[k] = list
		}
	case EventPromotionPending, EventPromotionSucceeded, EventPromotionBlocked:
		// Berth's gate events: the candidate's digest, the guarded tag
		// (and, on promotion, the rollback tag) in "tags" as in repo_push
		// and Quay's other tag events, and the decision as data fields.
		if p["tags"], err = stringList(data, "tags"); err != nil {
			return err
		}
		setDigest()
	case EventQuotaWarning, EventQuotaError:
		// Quay's namespace-level quota fields, every one present (a
		// number), for the repository whose push crossed the threshold
		// or was refused; the namespace is Quay's namespace field.
		for _, k := range []string{"threshold_percent", "usage_bytes", "limit_bytes", "usage_percent"} {
			v, ok := data[k].(json.Number)
			if !ok {
				v = json.Number("0")
			}
			p[k] = v
		}
		setDigest()
	default:
		setDigest()
	}
	return nil
}

// baseOf completes the base object of a base_image_updated payload:
// every field present, with the base's pull reference in docker_url.
func baseOf(p map[string]any, v any) map[string]any {
	in, _ := v.(map[string]any)
	out := map[string]any{"repository": "", "tag": "", "docker_url": "", "old_digest": "", "new_digest": ""}
	for k, val := range in {
		out[k] = val
	}
	if repo, _ := out["repository"].(string); repo != "" {
		host, _, _ := strings.Cut(str(p["docker_url"]), "/")
		url := host + "/" + repo
		if tag, _ := out["tag"].(string); tag != "" {
			url += ":" + tag
		}
		out["docker_url"] = url
	}
	return out
}

// vulnerability completes Quay's vulnerability object: every one of its
// fields is present, whatever the producer left out.
func vulnerability(v map[string]any) map[string]any {
	out := map[string]any{"id": "", "description": "", "link": "", "priority": "Unknown", "has_fix": false}
	for k, val := range v {
		out[k] = val
	}
	if p, _ := out["priority"].(string); p == "" {
		out["priority"] = "Unknown"
	}
	return out
}

// expiringIn is Quay's "<N> days"; a bare number of days is accepted too.
func expiringIn(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case json.Number:
		return x.String() + " days"
	case nil:
		return ""
	}
	return fmt.Sprint(v)
}

// stringList reads data[key] as a list of strings; absent is empty.
func stringList(data map[string]any, key string) ([]string, error) {
	raw, ok := data[key]
	if !ok || raw == nil {
		return []string{}, nil
	}
	list, ok := raw.([]any)
	if !ok {
		return nil, fmt.Errorf("data field %s is not a list", key)
	}
	out := make([]string, 0, len(list))
	for i, x := range list {
		s, ok := x.(string)
		if !ok {
			return nil, fmt.Errorf("data field %s[%d] is not a string", key, i)
		}
		out = append(out, s)
	}
	return out, nil
}

// decodeData parses an event's data; empty or null is an empty object.
func decodeData(raw json.RawMessage) (map[string]any, error) {
	data := map[string]any{}
	if len(bytes.TrimSpace(raw)) == 0 {
		return data, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber() // sizes stay exact integers
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	if dec.More() {
		return nil, errors.New("data: trailing content after the JSON object")
	}
	switch x := v.(type) {
	case nil:
		return data, nil
	case map[string]any:
		return x, nil
	}
	return nil, errors.New("data is not a JSON object")
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// SamplePayload is the payload the notification "test" endpoint sends:
// Quay's sample values for the kind, for the given repository, with a
// fresh event_id so that receivers which deduplicate see every test.
func SamplePayload(srv Server, kind, repo string) (map[string]any, error) {
	return SamplePayloadConfig(srv, kind, repo, nil)
}

// SamplePayloadConfig is SamplePayload honouring the notification's event
// config as Quay does: "level" picks the sample vulnerability's priority
// (default Critical) and "days" the sample expiry (default 7).
func SamplePayloadConfig(srv Server, kind, repo string, eventConfig map[string]any) (map[string]any, error) {
	if repo == "" {
		return nil, errors.New("sample payload: no repository")
	}
	if kind == "" {
		return nil, errors.New("sample payload: no event kind")
	}
	var data map[string]any
	switch kind {
	case meta.EventRepoPush:
		data = map[string]any{"updated_tags": []any{"latest", "foo"}, "pruned_image_count": json.Number("3"),
			"digest": sampleDigest, "media_type": "application/vnd.oci.image.manifest.v1+json", "size": json.Number("1234")}
	case meta.EventTagDeleted:
		data = map[string]any{"tag": "latest", "digest": sampleDigest}
	case meta.EventManifestDeleted:
		data = map[string]any{"digest": sampleDigest, "tags": []any{"latest", "foo"}}
	case EventRepoMirrorSyncStarted, EventRepoMirrorSyncSuccess, EventRepoMirrorSyncFailed:
		data = map[string]any{"message": "TEST NOTIFICATION"}
	case EventVulnerabilityFound:
		priority := priorityFor(eventConfig["level"])
		data = map[string]any{
			"tags":   []any{"latest", "prod", "foo", "bar", "baz"},
			"image":  "some-image-id",
			"digest": sampleDigest,
			"vulnerability": map[string]any{
				"id":          "CVE-FAKE-CVE",
				"description": "A futurist vulnerability",
				"link":        "https://security-tracker.debian.org/tracker/CVE-FAKE-CVE",
				"priority":    priority,
				"has_fix":     false,
			},
			"vulnerabilities": []any{map[string]any{"id": "CVE-FAKE-CVE", "priority": priority, "package": "libfake",
				"version": "1.0-1", "fixed_by": ""}},
		}
	case meta.EventManifestScanned:
		data = map[string]any{"digest": sampleDigest, "tags": []any{"latest", "foo"}, "status": "scanned", "reason": "",
			"packages": json.Number("142"), "distribution": "Debian:12",
			"vulnerabilities":    map[string]any{"High": json.Number("1"), "Medium": json.Number("3")},
			"vulnerability_data": map[string]any{"complete": true, "missing": []any{}, "stale": []any{}}}
	case EventRepoImageExpiry:
		days := "7"
		if d, ok := eventConfig["days"]; ok && d != nil {
			days = fmt.Sprint(d)
		}
		data = map[string]any{"tags": []any{"latest", "v1"}, "expiring_in": days + " days", "digest": sampleDigest}
	case EventPromotionPending:
		data = map[string]any{"tags": []any{"15-alpine"}, "tag": "15-alpine", "digest": sampleDigest, "media_type": "application/vnd.oci.image.index.v1+json",
			"size": json.Number("1234"), "candidate": 1}
	case EventPromotionSucceeded:
		data = map[string]any{"tags": []any{"15-alpine", "15-alpine-3"}, "tag": "15-alpine", "rollback_tag": "15-alpine-3", "digest": sampleDigest,
			"media_type": "application/vnd.oci.image.index.v1+json", "candidate": 1,
			"previous_digest": "sha256:3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d", "override": false, "override_reason": "",
			"checks": map[string]any{"functional": "pass", "berth/scan": "pass"}, "scan": sampleGateScan(0),
			"policy": `scan.status == "scanned" && scan.counts.critical == 0 && checks["functional"] == "pass"`}
	case EventPromotionBlocked:
		data = map[string]any{"tags": []any{"15-alpine"}, "tag": "15-alpine", "digest": sampleDigest, "candidate": 1,
			"reasons": []any{`check "functional" failed`, `policy: scan.counts.critical == 0 is false`},
			"failed":  []any{`scan.counts.critical == 0`}, "checks": map[string]any{"functional": "fail", "berth/scan": "fail"}, "scan": sampleGateScan(1),
			"policy": `scan.status == "scanned" && scan.counts.critical == 0 && checks["functional"] == "pass"`}
	case EventQuotaWarning, EventQuotaError:
		data = map[string]any{"threshold_percent": json.Number("80"), "usage_bytes": json.Number("8589934592"),
			"limit_bytes": json.Number("10737418240"), "usage_percent": json.Number("80"), "limit_type": "Warning",
			"digest": sampleDigest, "refused": false, "push_bytes": json.Number("104857600")}
		if kind == EventQuotaError {
			data["threshold_percent"], data["usage_bytes"], data["usage_percent"] = json.Number("100"), json.Number("10700000000"), json.Number("99.65")
			data["limit_type"], data["refused"] = "Reject", true
		}
	case EventBaseImageUpdated:
		data = map[string]any{"tags": []any{"latest", "v1"}, "digest": sampleDigest,
			"base": map[string]any{"repository": "mirror/ubi8-openjdk-11-runtime", "tag": "1.9",
				"old_digest": "sha256:3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d",
				"new_digest": "sha256:18ac3e7343f016890c510e93f935261169d9e3f565436429830faf0934f4f8e4"},
			"fixed_vulnerabilities": []any{map[string]any{"id": "CVE-FAKE-CVE", "priority": "High"}},
			"new_vulnerabilities":   []any{}, "vulnerabilities_compared": true}
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("sample payload: %w", err)
	}
	return QuayPayload(srv, meta.Event{UUID: uuid.NewString(), Kind: kind, Repository: repo,
		Actor: "berth-test", Data: raw, CreatedAt: time.Now()})
}

// sampleGateScan is the scan summary of a sample gate event, with critical
// vulnerabilities (as gate.ScanSummary is written).
func sampleGateScan(critical int) map[string]any {
	counts := func(critical int) map[string]any {
		return map[string]any{"critical": critical, "high": 0, "medium": 0, "low": 0, "negligible": 0, "unknown": 0}
	}
	return map[string]any{"status": "scanned", "counts": counts(critical), "fixable": counts(critical)}
}

// priorityFor maps Quay's level index (a number or its digits) to a name.
func priorityFor(level any) string {
	var n int
	switch x := level.(type) {
	case nil:
		return priorities[0]
	case float64:
		n = int(x)
	case int:
		n = x
	case json.Number:
		i, err := x.Int64()
		if err != nil {
			return priorities[0]
		}
		n = int(i)
	case string:
		for _, p := range priorities {
			if strings.EqualFold(p, x) {
				return p
			}
		}
		if _, err := fmt.Sscanf(x, "%d", &n); err != nil {
			return priorities[0]
		}
	default:
		return priorities[0]
	}
	if n < 0 || n >= len(priorities) {
		return priorities[0]
	}
	return priorities[n]
}

// CloudEvent wraps data (usually the Quay payload) in a CloudEvents 1.0
// structured-mode JSON event, to be sent as application/cloudevents+json.
func CloudEvent(srv Server, e meta.Event, data map[string]any) map[string]any {
	ce := map[string]any{
		"specversion":     "1.0",
		"id":              e.UUID,
		"source":          srv.RepositoryURL(e.Repository),
		"type":            "dev.berth." + e.Kind,
		"datacontenttype": "application/json",
		"subject":         e.Repository,
		"data":            data,
	}
	if !e.CreatedAt.IsZero() {
		ce["time"] = formatTime(e.CreatedAt)
	}
	return ce
}
