package server_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"
)

// TestHostileAPIInputs sends every operation of the OpenAPI document
// malformed input, as the superuser and anonymously: hostile path
// parameters, query values of the wrong kind and size, bodies that are not
// JSON, not objects, or objects whose fields have the wrong type, one field
// at a time. Bad input gets a clear error: no answer may be a 5xx, and the
// server must still answer afterwards.
func TestHostileAPIInputs(t *testing.T) {
	w := newWorld(t)
	o := fetchOpenAPI(t, w.url)
	type op struct {
		method, tmpl string
		spec         map[string]any
		params       []map[string]any
	}
	var ops []op
	for tmpl, item := range o.doc["paths"].(map[string]any) {
		item := item.(map[string]any)
		for method, spec := range item {
			spec, ok := spec.(map[string]any)
			if !ok || method == "parameters" {
				continue
			}
			var params []map[string]any
			for _, p := range append(asSlice(item["parameters"]), asSlice(spec["parameters"])...) {
				params = append(params, o.resolve(p.(map[string]any)))
			}
			ops = append(ops, op{strings.ToUpper(method), tmpl, spec, params})
		}
	}
	// Deletes last, so the other operations find what they name.
	sort.Slice(ops, func(i, j int) bool {
		di, dj := ops[i].method == http.MethodDelete, ops[j].method == http.MethodDelete
		if di != dj {
			return dj
		}
		return ops[i].tmpl+ops[i].method < ops[j].tmpl+ops[j].method
	})
	valid := map[string]string{
		"repository": "acme/public", "orgname": "acme", "username": "owner", "membername": "reader",
		"teamname": "readers", "tag": "v1", "manifestref": w.digest["public"].String(),
		"robot_shortname": "ci", "name": "t", "quota_id": "1", "limit_id": "1",
		"policyuuid": "00000000-0000-0000-0000-000000000000", "uuid": "00000000-0000-0000-0000-000000000000",
	}
	hostile := []string{"..", "%2e%2e", "%2F", "a%00b", "%ff%fe", "ü", strings.Repeat("a", 4096), "-1",
		"99999999999999999999999", "sha256:", "sha256:zz", "' OR 1=1 --", "<script>", "%25", "acme/public/../private"}
	queries := []string{"-1", "0", "99999999999999999999", "abc", "", "%00", "true", strings.Repeat("9", 400), "1e9", "sha256:x"}
	bodies := []string{"", "{", "null", "[]", `"x"`, "1", "{}", strings.Repeat("[", 10000), `{"a":` + strings.Repeat(`{"a":`, 5000) + "1" + strings.Repeat("}", 5001)}
	wrong := []string{"null", "-1", "1e308", `""`, `"` + strings.Repeat("x", 70000) + `"`, "[]", "{}", "true", `"\u0000"`, `[null]`, `{"":null}`}
	root := w.creds["root"]
	requests, fails := 0, 0
	statuses := map[int]int{}
	send := func(who [2]string, method, path string, body string) {
		t.Helper()
		req, err := http.NewRequest(method, w.url+path, strings.NewReader(body))
		if err != nil {
			return // a path net/http will not send
		}
		if who[0] != "" {
			req.SetBasicAuth(who[0], who[1])
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		resp.Body.Close()
		requests++
		statuses[resp.StatusCode]++
		if resp.StatusCode >= 500 {
			fails++
			if fails <= 60 {
				short := body
				if len(short) > 80 {
					short = short[:80] + "..."
				}
				t.Errorf("%s %s (body %q) as %q: %d %s", method, truncate(path), short, who[0], resp.StatusCode, bytes.TrimSpace(msg))
			}
		}
	}
	for _, op := range ops {
		fill := func(override map[string]string) string {
			p := op.tmpl
			for _, prm := range op.params {
				if prm["in"] != "path" {
					continue
				}
				name := prm["name"].(string)
				v, ok := override[name]
				if !ok {
					v = valid[name]
					if v == "" {
						v = "x"
					}
				}
				p = strings.Replace(p, "{"+name+"}", v, 1)
			}
			return strings.TrimSuffix(p, "{$}")
		}
		base := fill(nil)
		// A valid body to mutate: the request schema's properties, each
		// with a value of its type.
		var sample any = map[string]any{}
		if s := o.requestSchema(op.spec); s != nil {
			sample = sampleValue(o, s, 0)
		}
		sampleBody, _ := json.Marshal(sample)
		leaves := leafPaths(sample, nil)
		for _, who := range [][2]string{root, {}} {
			for _, prm := range op.params {
				if prm["in"] != "path" {
					continue
				}
				for _, h := range hostile {
					send(who, op.method, fill(map[string]string{prm["name"].(string): h}), string(sampleBody))
				}
			}
			for _, prm := range op.params {
				if prm["in"] != "query" {
					continue
				}
				for _, q := range queries {
					send(who, op.method, base+"?"+prm["name"].(string)+"="+q, "")
				}
			}
			if op.method == http.MethodGet || op.method == http.MethodDelete {
				continue
			}
			for _, b := range bodies {
				send(who, op.method, base, b)
			}
			if who[0] == "" {
				continue
			}
			for _, leaf := range leaves {
				for _, v := range wrong {
					send(who, op.method, base, string(replaceAt(sample, leaf, json.RawMessage(v))))
				}
			}
		}
	}
	t.Logf("%d requests, %d answered 5xx; by status %v", requests, fails, statuses)
	if r := w.do("GET", "/api/v1/user/", root[0], root[1], nil); r.StatusCode != 200 {
		t.Fatalf("after the hostile input: GET /api/v1/user/ %d", r.StatusCode)
	}
}

func truncate(s string) string {
	if len(s) > 120 {
		return s[:120] + "..."
	}
	return s
}

// sampleValue is a value of the schema's type: its first enum value,
// an object with every property it names, or an empty value.
func sampleValue(o *openAPI, s map[string]any, depth int) any {
	s = o.resolve(s)
	if e := asSlice(s["enum"]); len(e) > 0 {
		return e[0]
	}
	for _, key := range []string{"oneOf", "anyOf", "allOf"} {
		if alts := asSlice(s[key]); len(alts) > 0 {
			return sampleValue(o, alts[0].(map[string]any), depth)
		}
	}
	ty, _ := s["type"].(string)
	if types := asSlice(s["type"]); len(types) > 0 {
		ty, _ = types[0].(string)
	}
	switch ty {
	case "integer", "number":
		return 1
	case "boolean":
		return true
	case "array":
		if items, ok := s["items"].(map[string]any); ok && depth < 4 {
			return []any{sampleValue(o, items, depth+1)}
		}
		return []any{}
	case "object", "":
		m := map[string]any{}
		if depth < 4 {
			for name, ps := range asMap(s["properties"]) {
				m[name] = sampleValue(o, ps.(map[string]any), depth+1)
			}
		}
		if ty == "" && len(m) == 0 {
			return "x"
		}
		return m
	}
	return "x"
}

// leafPaths lists the paths to every value inside v (object keys and
// array indexes), the containers' own included.
func leafPaths(v any, at []any) [][]any {
	var out [][]any
	if len(at) > 0 {
		out = append(out, slicesClone(at))
	}
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			out = append(out, leafPaths(x[k], append(at, k))...)
		}
	case []any:
		for i, e := range x {
			out = append(out, leafPaths(e, append(at, i))...)
		}
	}
	return out
}

func slicesClone(a []any) []any { return append([]any(nil), a...) }

// replaceAt is v's JSON with the value at path replaced by r.
func replaceAt(v any, path []any, r json.RawMessage) []byte {
	var walk func(v any, path []any) any
	walk = func(v any, path []any) any {
		if len(path) == 0 {
			return r
		}
		switch x := v.(type) {
		case map[string]any:
			m := make(map[string]any, len(x))
			for k, e := range x {
				m[k] = e
			}
			k := path[0].(string)
			m[k] = walk(x[k], path[1:])
			return m
		case []any:
			a := slicesClone(x)
			i := path[0].(int)
			a[i] = walk(x[i], path[1:])
			return a
		}
		return v
	}
	b, _ := json.Marshal(walk(v, path))
	return b
}
