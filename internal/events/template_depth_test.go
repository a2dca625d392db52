package events

import (
	"encoding/json"
	"errors"
	"runtime"
	"strings"
	"testing"
)

func nested(depth int, inner string) string {
	return strings.Repeat("[", depth) + inner + strings.Repeat("]", depth)
}

// TestValidateTemplateRefusesDeepNesting: a template nesting deeper than
// MaxTemplateDepth is refused when the notification is created, and by
// Render; one at the limit is accepted. A 40 KB template of ~9,000 nested
// [ around many ${$} passed validation and then copied every level's
// output into its parent on each delivery (gigabytes per render).
func TestValidateTemplateRefusesDeepNesting(t *testing.T) {
	deep := nested(9000, strings.Repeat(`"${$}",`, 1800)+`1`)
	if len(deep) > MaxTemplateSize {
		t.Fatalf("test template is %d bytes", len(deep))
	}
	err := ValidateTemplate(json.RawMessage(deep))
	if !errors.Is(err, ErrTemplateTooDeep) || !strings.Contains(err.Error(), "levels") {
		t.Fatalf("ValidateTemplate(9,000 levels) = %v, want ErrTemplateTooDeep", err)
	}
	over := `{"a":` + nested(MaxTemplateDepth, `1`) + `}`
	if err := ValidateTemplate(json.RawMessage(over)); !errors.Is(err, ErrTemplateTooDeep) {
		t.Fatalf("ValidateTemplate(%d levels) = %v, want ErrTemplateTooDeep", MaxTemplateDepth+1, err)
	}
	if _, err := Render(json.RawMessage(over), templateData()); !errors.Is(err, ErrTemplateTooDeep) {
		t.Fatalf("Render(%d levels) = %v, want ErrTemplateTooDeep", MaxTemplateDepth+1, err)
	}
	at := `{"a":` + nested(MaxTemplateDepth-1, `"${repository}"`) + `}`
	if err := ValidateTemplate(json.RawMessage(at)); err != nil {
		t.Fatalf("ValidateTemplate(%d levels) = %v", MaxTemplateDepth, err)
	}
	out, err := Render(json.RawMessage(at), templateData())
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"a":` + nested(MaxTemplateDepth-1, `"ns/app"`) + `}`; string(out) != want {
		t.Fatalf("got %s\nwant %s", out, want)
	}
}

// TestRenderDeepTemplateAllocatesAboutItsOutput: a template at the allowed
// depth with many ${$} renders in about its output's size; each level
// built its own buffer and copied its children's output into it (about
// depth × 2 × output allocated: 70× here). The bound leaves room for the
// race detector, under which sync.Pool drops encoding/json's buffers (about
// 3× without it, 7× with it).
func TestRenderDeepTemplateAllocatesAboutItsOutput(t *testing.T) {
	data := map[string]any{"blob": strings.Repeat("x", 2000), "list": []string{"a", "b", "c"}}
	tmpl := nested(MaxTemplateDepth, strings.Repeat(`"${$}",`, 200)+`1`)
	if err := ValidateTemplate(json.RawMessage(tmpl)); err != nil {
		t.Fatal(err)
	}
	if _, err := Render(json.RawMessage(tmpl), data); err != nil { // warm up
		t.Fatal(err)
	}
	// The least of three renders: the count is the process's, and a
	// goroutine an earlier test left running may allocate meanwhile.
	var out []byte
	var n uint64
	for i := range 3 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		o, err := Render(json.RawMessage(tmpl), data)
		runtime.ReadMemStats(&after)
		if err != nil {
			t.Fatal(err)
		}
		if !json.Valid(o) {
			t.Fatal("invalid JSON")
		}
		if a := after.TotalAlloc - before.TotalAlloc; i == 0 || a < n {
			n = a
		}
		out = o
	}
	t.Logf("output %d bytes, allocated %d bytes (%.1f×)", len(out), n, float64(n)/float64(len(out)))
	if n > uint64(12*len(out)) {
		t.Fatalf("allocated %d bytes for %d bytes of output", n, len(out))
	}
}

// TestRenderDuplicateKeysInNestedObjects: with one shared buffer, a key
// produced twice still keeps its first place and its last value, at every
// level.
func TestRenderDuplicateKeysInNestedObjects(t *testing.T) {
	tmpl := `{"a":1,"b":{"x":[1,{"y":1,"z":2,"y":"${repository}"}],"w":0,"x":{"k":"${updated_tags}","k":2}},"${repository}":3,"a":{"q":"${size}"},"ns/app":4}`
	want := `{"a":{"q":1234},"b":{"x":{"k":2},"w":0},"ns/app":4}`
	out, err := Render(json.RawMessage(tmpl), templateData())
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != want {
		t.Fatalf("got  %s\nwant %s", out, want)
	}
}
