package config

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

var durationType = reflect.TypeOf(time.Duration(0))

// durationEdit replaces a plain 0 given to a duration, at its line and
// column (1-based, in characters) of the file, with "0s".
type durationEdit struct {
	line, col int
	value     string
}

// zeroDurations reads a configuration file's YAML for the settings that
// are durations and were given a bare number, which yaml.v3 refuses for a
// time.Duration ("cannot unmarshal !!int `0`"): a 0 (as the documentation
// writes "0 turns it off", and as Helm renders --set gc.timeMachine=0) is
// rewritten "0s" in place, every line kept where it was so that the
// decoder's messages name the file's lines; any other number is refused,
// naming the setting and its line, since 30 could mean seconds or
// minutes. A file that does not parse is returned as it is, for the
// decoder to report.
func zeroDurations(b []byte) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil || len(doc.Content) == 0 {
		return b, nil
	}
	var edits []durationEdit
	var errs []error
	walkDurations(doc.Content[0], reflect.TypeOf(Config{}), "", func(n *yaml.Node, path string) {
		tag := n.ShortTag()
		if n.Kind != yaml.ScalarNode || (tag != "!!int" && tag != "!!float") {
			return // a string: the decoder parses it (and says what is wrong with it)
		}
		var f float64
		if err := n.Decode(&f); err == nil && f == 0 && n.Style == 0 {
			edits = append(edits, durationEdit{line: n.Line, col: n.Column, value: n.Value})
			return
		}
		errs = append(errs, fmt.Errorf("line %d: %s: %s has no unit: write a duration with one, such as 30s, 15m or 24h (0 needs none)", n.Line, path, n.Value))
	})
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(edits) == 0 {
		return b, nil
	}
	lines := bytes.SplitAfter(b, []byte("\n"))
	// From the end of each line, so that an edit does not move the
	// columns of the ones before it (a flow mapping holds several).
	slices.SortFunc(edits, func(a, b durationEdit) int {
		if a.line != b.line {
			return a.line - b.line
		}
		return b.col - a.col
	})
	for _, e := range edits {
		if e.line < 1 || e.line > len(lines) {
			return nil, fmt.Errorf("line %d: a duration's 0 not found where the parser saw it: write 0s", e.line)
		}
		runes := []rune(string(lines[e.line-1]))
		start, end := e.col-1, e.col-1+len([]rune(e.value))
		if start < 0 || end > len(runes) || string(runes[start:end]) != e.value {
			return nil, fmt.Errorf("line %d: a duration's 0 not found where the parser saw it: write 0s", e.line)
		}
		lines[e.line-1] = []byte(string(runes[:start]) + "0s" + string(runes[end:]))
	}
	return bytes.Join(lines, nil), nil
}

// walkDurations calls visit for each node of the YAML tree n that a
// time.Duration field of t would be decoded from, with the setting's
// path (gc.retention.events). Keys that name no field are left to the
// decoder, which refuses them.
func walkDurations(n *yaml.Node, t reflect.Type, path string, visit func(*yaml.Node, string)) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == durationType {
		visit(n, path)
		return
	}
	join := func(key string) string {
		if path == "" {
			return key
		}
		return path + "." + key
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i].Value
			if f, ok := yamlField(t, key); ok {
				walkDurations(n.Content[i+1], f.Type, join(key), visit)
			}
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			walkDurations(n.Content[i+1], t.Elem(), join(n.Content[i].Value), visit)
		}
	case reflect.Slice, reflect.Array:
		if n.Kind != yaml.SequenceNode {
			return
		}
		for i, c := range n.Content {
			walkDurations(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i), visit)
		}
	}
}

// yamlField is the field of struct type t that the YAML key names.
func yamlField(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" {
			name = strings.ToLower(f.Name) // yaml.v3's default
		}
		if name == key && f.IsExported() {
			return f, true
		}
	}
	return reflect.StructField{}, false
}
