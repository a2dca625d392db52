package notify_test

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/notify"
)

// docFields reads the events table of docs/notifications.md: for each
// kind, the fields its data cell names (the backquoted names).
func docFields(t *testing.T) map[string][]string {
	t.Helper()
	doc, err := os.ReadFile("../../docs/notifications.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(doc), "\n## Events\n")
	if !ok {
		t.Fatal("no events table in docs/notifications.md")
	}
	table, _, _ = strings.Cut(table, "\n\n")
	quoted := regexp.MustCompile("`([^`]*)`")
	name := regexp.MustCompile(`^[a-z_]+$`)
	out := map[string][]string{}
	for _, line := range strings.Split(table, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 4 || !strings.Contains(cells[1], "`") {
			continue
		}
		var kinds []string
		prefix := ""
		for _, m := range quoted.FindAllStringSubmatch(cells[1], -1) {
			k := m[1]
			if strings.HasPrefix(k, "_") { // repo_mirror_sync_started / `_success`
				k = prefix + k
			} else if i := strings.LastIndex(k, "_"); i > 0 {
				prefix = k[:i]
			}
			kinds = append(kinds, k)
		}
		var fields []string
		for _, m := range quoted.FindAllStringSubmatch(strings.Join(cells[2:], "|"), -1) {
			if name.MatchString(m[1]) && !slices.Contains(fields, m[1]) {
				fields = append(fields, m[1])
			}
		}
		for _, k := range kinds {
			out[k] = fields
		}
	}
	return out
}

// outboxOnly are fields the table names as the outbox's, not carried by
// payloads.
var outboxOnly = map[string]bool{"new_manifest": true, "previous": true}

// TestSamplesCarryTheDocumentedFields: the test delivery of every kind a
// notification may hear carries every field docs/notifications.md lists
// for the kind, not null, at the top of the payload or in one of its
// objects (base_image_updated's base). manifest_scanned's sample carried
// none of the scan's fields.
func TestSamplesCarryTheDocumentedFields(t *testing.T) {
	doc := docFields(t)
	for kind := range notify.Events {
		fields, ok := doc[kind]
		if !ok {
			t.Errorf("%s: not in the events table of docs/notifications.md", kind)
			continue
		}
		p, err := events.SamplePayload(events.Server{Host: "registry.example"}, kind, "acme/app")
		if err != nil {
			t.Errorf("%s: %v", kind, err)
			continue
		}
		for _, f := range fields {
			if notify.Events[f] {
				continue // another event named in the text
			}
			if outboxOnly[f] {
				if _, ok := p[f]; ok {
					t.Errorf("%s: sample carries %s, which payloads do not", kind, f)
				}
				continue
			}
			if !carries(p, f) {
				t.Errorf("%s: sample lacks %s (documented), or it is null", kind, f)
			}
		}
	}
}

// carries reports whether p, or an object in it, has field f not null.
func carries(p map[string]any, f string) bool {
	if v, ok := p[f]; ok {
		return v != nil
	}
	for _, v := range p {
		if obj, ok := v.(map[string]any); ok && obj[f] != nil {
			return true
		}
	}
	return false
}
