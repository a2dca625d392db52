package events

import (
	"encoding/json"
	"errors"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

func templateData() map[string]any {
	return map[string]any{
		"repository":    "ns/app",
		"updated_tags":  []string{"latest", "v1"},
		"size":          json.Number("1234"),
		"vulnerability": map[string]any{"id": "CVE-1", "priority": "High"},
		"odd.key":       "dot",
		"with space":    "space",
		"empty":         []string{},
		"nested":        map[string]any{"list": []any{map[string]any{"id": "a"}, map[string]any{"id": "b"}, map[string]any{"x": 1}}},
		"flag":          true,
		"nothing":       nil,
		"url":           "https://h/x?a=1&b=2",
	}
}

func TestRender(t *testing.T) {
	tests := []struct {
		name, tmpl, want string
		exact            bool // compare bytes, not JSON values
	}{
		{name: "plain field", tmpl: `{"repo":"${repository}"}`, want: `{"repo":"ns/app"}`},
		{name: "leading $", tmpl: `{"repo":"${$.repository}"}`, want: `{"repo":"ns/app"}`},
		{name: "a list stays a list", tmpl: `{"tags":"${updated_tags}"}`, want: `{"tags":["latest","v1"]}`},
		{name: "a list inside text is joined", tmpl: `{"t":"tags: ${updated_tags}!"}`, want: `{"t":"tags: latest,v1!"}`},
		{name: "missing inside text", tmpl: `{"m":"x ${missing} y ${a.b.c}"}`, want: `{"m":"x (none) y (none)"}`},
		{name: "missing exact is null", tmpl: `{"m":"${missing}"}`, want: `{"m":null}`},
		{name: "a number stays a number", tmpl: `{"n":"${size}"}`, want: `{"n":1234}`, exact: true},
		{name: "a number inside text", tmpl: `{"s":"size=${size}"}`, want: `{"s":"size=1234"}`},
		{name: "an object stays an object", tmpl: `{"v":"${$.vulnerability}"}`, want: `{"v":{"id":"CVE-1","priority":"High"}}`},
		{name: "an object inside text is JSON", tmpl: `{"v":"v=${vulnerability}"}`, want: `{"v":"v={\"id\":\"CVE-1\",\"priority\":\"High\"}"}`},
		{name: "nested field", tmpl: `{"id":"${vulnerability.id}","p":"${$.vulnerability.priority}"}`, want: `{"id":"CVE-1","p":"High"}`},
		{name: "index", tmpl: `{"first":"${updated_tags[0]}","last":"${updated_tags[-1]}","none":"${updated_tags[5]}"}`, want: `{"first":"latest","last":"v1","none":null}`},
		{name: "wildcard", tmpl: `{"all":"${updated_tags[*]}","dot":"${updated_tags.*}"}`, want: `{"all":["latest","v1"],"dot":["latest","v1"]}`},
		{name: "wildcard then field", tmpl: `{"ids":"${nested.list[*].id}"}`, want: `{"ids":["a","b"]}`},
		{name: "wildcard over an empty list", tmpl: `{"e":"${empty[*]}","t":"tags: ${empty}"}`, want: `{"e":[],"t":"tags: (none)"}`},
		{name: "wildcard over a missing list", tmpl: `{"e":"${missing[*]}"}`, want: `{"e":null}`},
		{name: "quoted keys", tmpl: `{"a":"${['odd.key']}","b":"${$[\"odd.key\"]}","c":"${['with space']}"}`, want: `{"a":"dot","b":"dot","c":"space"}`},
		{name: "bool and null", tmpl: `{"f":"${flag}","t":"f=${flag} n=${nothing}","n":"${nothing}"}`, want: `{"f":true,"t":"f=true n=(none)","n":null}`},
		{name: "whole payload", tmpl: `"${$}"`, want: ""},
		{name: "keys are expanded", tmpl: `{"${repository}":1,"k ${updated_tags}":2}`, want: `{"ns/app":1,"k latest,v1":2}`},
		{name: "member order is kept", tmpl: `{"b":1,"a":{"z":2,"y":3},"c":[3,2,1]}`, want: `{"b":1,"a":{"z":2,"y":3},"c":[3,2,1]}`, exact: true},
		{name: "a repeated key keeps its place and the last value", tmpl: `{"${repository}":1,"x":0,"ns/app":2}`, want: `{"ns/app":2,"x":0}`, exact: true},
		{name: "literals pass through", tmpl: `[1,2.5e3,true,false,null,"plain",{"e":{}},[]]`, want: `[1,2.5e3,true,false,null,"plain",{"e":{}},[]]`, exact: true},
		{name: "no HTML escaping", tmpl: `{"u":"${url}","l":"a&b<c>"}`, want: `{"u":"https://h/x?a=1&b=2","l":"a&b<c>"}`, exact: true},
		{name: "unterminated expression is text", tmpl: `{"t":"${abc","u":"$ {x}","v":"$${repository}"}`, want: `{"t":"${abc","u":"$ {x}","v":"$ns/app"}`},
		{name: "spaces around the path", tmpl: `{"r":"${ repository }"}`, want: `{"r":"ns/app"}`},
		{name: "two expressions", tmpl: `{"r":"${namespace}${repository}"}`, want: `{"r":"(none)ns/app"}`},
		{name: "Tekton-style body", tmpl: `{"image":"reg/${repository}:${updated_tags[0]}","tags":"${updated_tags}"}`, want: `{"image":"reg/ns/app:latest","tags":["latest","v1"]}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := ValidateTemplate(json.RawMessage(tc.tmpl)); err != nil {
				t.Fatalf("ValidateTemplate: %v", err)
			}
			got, err := Render(json.RawMessage(tc.tmpl), templateData())
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			if !json.Valid(got) {
				t.Fatalf("invalid JSON: %s", got)
			}
			want := tc.want
			if want == "" {
				b, _ := json.Marshal(templateData())
				want = string(b)
			}
			if tc.exact {
				if string(got) != want {
					t.Errorf("got  %s\nwant %s", got, want)
				}
				return
			}
			if !reflect.DeepEqual(mustUnmarshal(t, string(got)), mustUnmarshal(t, want)) {
				t.Errorf("got  %s\nwant %s", got, want)
			}
		})
	}
}

func TestValidateTemplateRefuses(t *testing.T) {
	tests := []struct {
		name, tmpl, wantMsg string
	}{
		{"not JSON", `{"a":`, "not valid JSON"},
		{"empty", ``, "empty"},
		{"two documents", `{} {}`, "not valid JSON"},
		{"empty expression", `{"a":"${}"}`, "empty expression"},
		{"recursive descent", `{"a":"${a..b}"}`, "recursive descent"},
		{"filter", `{"a":"${a[?(@.x)]}"}`, "filter"},
		{"slice", `{"a":"${a[0:2]}"}`, "slices"},
		{"union", `{"a":"${a[0,1]}"}`, "unions"},
		{"space in a name", `{"a":"${a b}"}`, "unexpected"},
		{"unterminated quote", `{"a":"${a['x}"}`, "unterminated"},
		{"junk after $", `{"a":"${$x}"}`, "after $"},
		{"leading dot", `{"a":"${.a}"}`, "unexpected"},
		{"trailing dot", `{"a":"${a.}"}`, "missing name"},
		{"function", `{"a":"${a.length()}"}`, "unexpected"},
		{"bad expression in a key", `{"${a b}":1}`, "unexpected"},
		{"bad expression in a list", `["ok","${[x]}"]`, "inside [ ]"},
		{"too large", `"` + strings.Repeat("x", MaxTemplateSize) + `"`, "more than"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateTemplate(json.RawMessage(tc.tmpl))
			if err == nil {
				t.Fatal("expected an error")
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("error %q does not mention %q", err, tc.wantMsg)
			}
		})
	}
	var pe *PathError
	if err := ValidateTemplate(json.RawMessage(`{"a":"x ${tags[1:]}"}`)); !errors.As(err, &pe) || pe.Expr != "tags[1:]" || pe.Offset != 4 {
		t.Errorf("PathError = %#v", pe)
	}
}

func TestRenderRefusesHugeOutput(t *testing.T) {
	big := map[string]any{"blob": strings.Repeat("x", 64<<10)}
	tmpl := `[` + strings.Repeat(`"${blob}",`, 20) + `1]`
	if _, err := Render(json.RawMessage(tmpl), big); !errors.Is(err, ErrRenderedTooLarge) {
		t.Fatalf("err = %v, want ErrRenderedTooLarge", err)
	}
}

// TestRenderBoundsOneStringAsItGrows: a short template string of many
// ${blob} refs (under the template's size limit) is refused before it has
// built copies of the payload; it allocated them all first (128 MiB here,
// gigabytes with a large payload).
func TestRenderBoundsOneStringAsItGrows(t *testing.T) {
	big := map[string]any{"blob": strings.Repeat("x", 64<<10)}
	tmpl := `{"text":"` + strings.Repeat(`${blob}`, 2000) + `"}`
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := Render(json.RawMessage(tmpl), big)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrRenderedTooLarge) {
		t.Fatalf("err = %v, want ErrRenderedTooLarge", err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 32<<20 {
		t.Fatalf("allocated %d MiB before refusing", n>>20)
	}
}

func TestRenderRefusesUnencodableData(t *testing.T) {
	if _, err := Render(json.RawMessage(`"${a}"`), map[string]any{"a": make(chan int)}); err == nil {
		t.Fatal("expected an error")
	}
}

func fuzzSeeds() []string {
	return []string{
		`{"repo":"${repository}","tags":"${updated_tags}","t":"x ${updated_tags[0]} ${missing}"}`,
		`["${$}","${a[*].b}","${['k.k']}","${a[-1]}"]`,
		`{"${repository}":"${size}","k":{"n":[1,"${flag}",null]}}`,
		`"${"`, `"${}"`, `"}${"`, `{"a":"${a..b}"}`, `[[[[]]]]`, `1e999`, `"\u0000${x}"`,
	}
}

func FuzzRender(f *testing.F) {
	data, _ := json.Marshal(templateData())
	for _, s := range fuzzSeeds() {
		f.Add([]byte(s), data)
	}
	f.Add([]byte(`"${a}"`), []byte(`{"a":[1,{"b":"\ud800"}]}`))
	f.Fuzz(func(t *testing.T, tmpl, dataJSON []byte) {
		var d map[string]any
		if json.Unmarshal(dataJSON, &d) != nil {
			d = templateData()
		}
		out, err := Render(tmpl, d)
		if err != nil {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("Render(%q) produced invalid JSON %q", tmpl, out)
		}
	})
}

func FuzzValidateTemplate(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, tmpl []byte) {
		if ValidateTemplate(tmpl) != nil {
			return
		}
		// A template accepted at creation always renders later.
		out, err := Render(tmpl, templateData())
		if errors.Is(err, ErrRenderedTooLarge) {
			return
		}
		if err != nil {
			t.Fatalf("validated template %q fails to render: %v", tmpl, err)
		}
		if !json.Valid(out) {
			t.Fatalf("invalid JSON %q", out)
		}
	})
}
