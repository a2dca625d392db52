package events

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/berth-dev/berth/internal/meta"
)

// Summary is a one-line, human-readable account of a payload, e.g.
// "Berth: pushed tags latest, v1 to ns/app". Slack messages and email
// subjects use it.
func Summary(payload map[string]any, kind string) string {
	repo := str(payload["repository"])
	switch kind {
	case meta.EventRepoPush:
		if tags := strs(payload["updated_tags"]); len(tags) > 0 {
			return fmt.Sprintf("Berth: pushed %s %s to %s", plural(len(tags), "tag", "tags"), strings.Join(tags, ", "), repo)
		}
		return fmt.Sprintf("Berth: pushed %s to %s", manifestRef(str(payload["digest"])), repo)
	case meta.EventTagDeleted:
		return fmt.Sprintf("Berth: deleted tag %s from %s", str(payload["tag"]), repo)
	case meta.EventManifestDeleted:
		s := fmt.Sprintf("Berth: deleted %s from %s", manifestRef(str(payload["digest"])), repo)
		if tags := strs(payload["tags"]); len(tags) > 0 {
			s += fmt.Sprintf(" (%s %s)", plural(len(tags), "tag", "tags"), strings.Join(tags, ", "))
		}
		return s
	case meta.EventRepoCreated:
		return "Berth: created repository " + repo
	case meta.EventRepoDeleted:
		return "Berth: deleted repository " + repo
	case EventRepoMirrorSyncStarted, EventRepoMirrorSyncSuccess, EventRepoMirrorSyncFailed:
		what := map[string]string{EventRepoMirrorSyncStarted: "started", EventRepoMirrorSyncSuccess: "succeeded",
			EventRepoMirrorSyncFailed: "failed"}[kind]
		s := fmt.Sprintf("Berth: mirror sync %s for %s", what, repo)
		if m := str(payload["message"]); m != "" {
			s += ": " + m
		}
		return s
	case EventVulnerabilityFound:
		v, _ := payload["vulnerability"].(map[string]any)
		s := fmt.Sprintf("Berth: %s vulnerability %s found in %s", orDefault(str(v["priority"]), "Unknown"), str(v["id"]), repo)
		if tags := strs(payload["tags"]); len(tags) > 0 {
			s += fmt.Sprintf(" (%s %s)", plural(len(tags), "tag", "tags"), strings.Join(tags, ", "))
		}
		return s
	case EventBaseImageUpdated:
		b, _ := payload["base"].(map[string]any)
		s := fmt.Sprintf("Berth: the base %s:%s of %s moved", str(b["repository"]), str(b["tag"]), repo)
		if str(b["repository"]) == "" { // a private base of another namespace is not named
			s = fmt.Sprintf("Berth: the base of %s moved", repo)
		}
		if tags := strs(payload["tags"]); len(tags) > 0 {
			s += fmt.Sprintf(" (%s %s)", plural(len(tags), "tag", "tags"), strings.Join(tags, ", "))
		}
		return s + ": rebuild"
	case EventRepoImageExpiry:
		tags := strs(payload["tags"])
		return fmt.Sprintf("Berth: %s %s of %s expiring in %s", plural(len(tags), "tag", "tags"),
			strings.Join(tags, ", "), repo, orDefault(strings.TrimSpace(str(payload["expiring_in"])), "(unknown)"))
	}
	return fmt.Sprintf("Berth: %s in %s", kind, repo)
}

// detail is one labelled line of a message; link, when set, is the
// target the value points at.
type detail struct{ label, value, link string }

func details(payload map[string]any, kind string) []detail {
	var out []detail
	add := func(label, value, link string) {
		if value != "" {
			out = append(out, detail{label, value, link})
		}
	}
	add("Repository", str(payload["repository"]), str(payload["homepage"]))
	if kind == meta.EventRepoPush {
		if tags := strs(payload["updated_tags"]); len(tags) > 0 && str(payload["docker_url"]) != "" {
			add("Pull", "docker pull "+str(payload["docker_url"])+":"+tags[0], "")
		}
	}
	add("Digest", str(payload["digest"]), "")
	add("Media type", str(payload["media_type"]), "")
	if v, ok := payload["vulnerability"].(map[string]any); ok {
		add("Vulnerability", str(v["id"]), str(v["link"]))
		add("Priority", str(v["priority"]), "")
		add("Description", str(v["description"]), "")
		if fix, ok := v["has_fix"].(bool); ok {
			add("Fix available", map[bool]string{true: "yes", false: "no"}[fix], "")
		}
	}
	if b, ok := payload["base"].(map[string]any); ok {
		add("Base", str(b["docker_url"]), "")
		add("Base was", str(b["old_digest"]), "")
		add("Base now", str(b["new_digest"]), "")
	}
	add("Message", str(payload["message"]), "")
	add("By", str(payload["actor"]), "")
	add("Time", str(payload["time"]), "")
	return out
}

// slackColor follows Quay's colours for its event levels.
func slackColor(payload map[string]any, kind string) string {
	switch kind {
	case meta.EventRepoPush, meta.EventRepoCreated, EventRepoMirrorSyncSuccess:
		return "good"
	case meta.EventTagDeleted, meta.EventManifestDeleted, meta.EventRepoDeleted:
		return "warning"
	case EventRepoMirrorSyncFailed:
		return "danger"
	case EventVulnerabilityFound:
		v, _ := payload["vulnerability"].(map[string]any)
		switch str(v["priority"]) {
		case "Critical":
			return "danger"
		case "High", "Medium":
			return "warning"
		}
	}
	return "#ffffff"
}

// SlackBody is the Slack incoming-webhook message for a payload, in
// Quay's shape: {text, username, attachments: [{fallback, text, color,
// mrkdwn_in: ["text"]}]}.
func SlackBody(payload map[string]any, kind string) []byte {
	sum := Summary(payload, kind)
	var lines []string
	for _, d := range details(payload, kind) {
		v := slackEscape(d.value)
		switch {
		case d.link != "":
			v = "<" + slackEscape(d.link) + "|" + v + ">"
		case d.label == "Digest" || d.label == "Pull":
			v = "`" + v + "`"
		}
		lines = append(lines, "*"+d.label+":* "+v)
	}
	msg := map[string]any{
		"text":     slackEscape(sum),
		"username": "Berth",
		"mrkdwn":   true,
		"attachments": []any{map[string]any{
			"fallback":  sum,
			"text":      strings.Join(lines, "\n"),
			"color":     slackColor(payload, kind),
			"mrkdwn_in": []string{"text"},
		}},
	}
	b, err := marshal(msg)
	if err != nil { // only strings above: cannot happen
		return []byte(`{"text":"Berth notification","username":"Berth"}`)
	}
	return b
}

// slackEscape escapes the three characters Slack's mrkdwn reserves.
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// EmailText is the subject and plain-text body of an email for a payload:
// the summary, the details, then the payload itself as JSON.
func EmailText(payload map[string]any, kind string) (subject, body string) {
	subject = Summary(payload, kind)
	var b strings.Builder
	b.WriteString(subject + "\n\n")
	for _, d := range details(payload, kind) {
		b.WriteString(d.label + ": " + d.value)
		if d.link != "" && d.link != d.value {
			b.WriteString(" <" + d.link + ">")
		}
		b.WriteString("\n")
	}
	if raw, err := json.MarshalIndent(payload, "", "  "); err == nil {
		b.WriteString("\nPayload:\n" + string(raw) + "\n")
	}
	return subject, b.String()
}

func str(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case nil:
		return ""
	case json.Number:
		return x.String()
	}
	return fmt.Sprint(v)
}

func strs(v any) []string {
	switch x := v.(type) {
	case []string:
		return x
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			out = append(out, str(e))
		}
		return out
	}
	return nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// manifestRef is "manifest sha256:" and the first 12 hex digits.
func manifestRef(d string) string {
	if d == "" {
		return "a manifest"
	}
	if algo, hex, ok := strings.Cut(d, ":"); ok && len(hex) > 12 {
		d = algo + ":" + hex[:12]
	}
	return "manifest " + d
}
