package server_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// openAPI is the served OpenAPI document, enough of it to find an
// operation and check a JSON value against a schema.
type openAPI struct {
	doc map[string]any
}

func fetchOpenAPI(t *testing.T, base string) *openAPI {
	t.Helper()
	resp, err := http.Get(base + "/api/v1/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /api/v1/openapi.json: %d, %v", resp.StatusCode, err)
	}
	return &openAPI{doc: doc}
}

var templateParam = regexp.MustCompile(`\\\{[^}]*\\\}`)

// operation finds the operation that serves a request: of the templates
// that match the path ({repository} spans segments, other parameters one),
// the one with the most literal text.
func (o *openAPI) operation(method, path string) map[string]any {
	var best map[string]any
	bestLiteral := -1
	for tmpl, item := range o.doc["paths"].(map[string]any) {
		op, ok := item.(map[string]any)[strings.ToLower(method)].(map[string]any)
		if !ok {
			continue
		}
		re := templateParam.ReplaceAllStringFunc(regexp.QuoteMeta(tmpl), func(p string) string {
			if p == `\{repository\}` {
				return `.+`
			}
			return `[^/]+`
		})
		if !regexp.MustCompile("^" + re + "$").MatchString(path) {
			continue
		}
		if n := len(pathParam.ReplaceAllString(tmpl, "")); n > bestLiteral {
			best, bestLiteral = op, n
		}
	}
	return best
}

var pathParam = regexp.MustCompile(`\{[^}]*\}`)

func (o *openAPI) requestSchema(op map[string]any) map[string]any {
	rb, _ := op["requestBody"].(map[string]any)
	if rb == nil {
		return nil
	}
	rb = o.resolve(rb)
	return o.jsonSchema(rb)
}

func (o *openAPI) responseSchema(op map[string]any, status int) map[string]any {
	rs, _ := op["responses"].(map[string]any)
	r, ok := rs[strconv.Itoa(status)].(map[string]any)
	if !ok {
		r, _ = rs["default"].(map[string]any)
	}
	if r == nil {
		return nil
	}
	return o.jsonSchema(o.resolve(r))
}

func (o *openAPI) jsonSchema(withContent map[string]any) map[string]any {
	content, _ := withContent["content"].(map[string]any)
	mt, _ := content["application/json"].(map[string]any)
	s, _ := mt["schema"].(map[string]any)
	return s
}

func (o *openAPI) resolve(m map[string]any) map[string]any {
	for {
		ref, ok := m["$ref"].(string)
		if !ok {
			return m
		}
		var cur any = o.doc
		for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
			cur = cur.(map[string]any)[part]
		}
		m = cur.(map[string]any)
	}
}

// declared lists the properties a schema names, through $ref and allOf,
// and whether it says what other properties may hold.
func (o *openAPI) declared(s map[string]any) (props map[string]bool, open bool) {
	s = o.resolve(s)
	props = map[string]bool{}
	for k := range asMap(s["properties"]) {
		props[k] = true
	}
	_, open = s["additionalProperties"]
	for _, sub := range asSlice(s["allOf"]) {
		p, op := o.declared(sub.(map[string]any))
		for k := range p {
			props[k] = true
		}
		open = open || op
	}
	return props, open
}

// validate checks v against a schema: the subset of JSON Schema the
// document uses. Stricter than JSON Schema in one way: an object may hold
// only the properties its schema names (when it names any), so a field the
// server adds must be documented.
func (o *openAPI) validate(s map[string]any, v any, at string) error {
	return o.validateIn(s, v, at, nil)
}

// names is what an object may hold: the properties named, unless open.
type names struct {
	props map[string]bool
	open  bool
}

// validateIn validates v; within an allOf, allowed is what the whole
// allOf names.
func (o *openAPI) validateIn(s map[string]any, v any, at string, allowed *names) error {
	s = o.resolve(s)
	if allowed == nil {
		props, open := o.declared(s)
		allowed = &names{props, open}
	}
	for _, sub := range asSlice(s["allOf"]) {
		if err := o.validateIn(sub.(map[string]any), v, at, allowed); err != nil {
			return err
		}
	}
	for _, key := range []string{"oneOf", "anyOf"} {
		if alts := asSlice(s[key]); len(alts) > 0 {
			var errs []string
			for _, alt := range alts {
				err := o.validate(alt.(map[string]any), v, at)
				if err == nil {
					errs = nil
					break
				}
				errs = append(errs, err.Error())
			}
			if errs != nil {
				return fmt.Errorf("%s: fits no %s: %s", at, key, strings.Join(errs, "; "))
			}
		}
	}
	if c, ok := s["const"]; ok && fmt.Sprint(c) != fmt.Sprint(v) {
		return fmt.Errorf("%s: %v, want %v", at, v, c)
	}
	if e, ok := s["enum"]; ok && !slices.ContainsFunc(asSlice(e), func(x any) bool { return fmt.Sprint(x) == fmt.Sprint(v) }) {
		return fmt.Errorf("%s: %v is not one of %v", at, v, e)
	}
	if ty, ok := s["type"]; ok {
		types := asSlice(ty)
		if str, ok := ty.(string); ok {
			types = []any{str}
		}
		if !slices.ContainsFunc(types, func(x any) bool { return jsonType(v, x.(string)) }) {
			return fmt.Errorf("%s: %v is not of type %v", at, v, ty)
		}
	}
	switch x := v.(type) {
	case map[string]any:
		for _, r := range asSlice(s["required"]) {
			if _, ok := x[r.(string)]; !ok {
				return fmt.Errorf("%s: required %v is missing", at, r)
			}
		}
		if n, ok := s["maxProperties"].(float64); ok && float64(len(x)) > n {
			return fmt.Errorf("%s: over %v properties", at, n)
		}
		for k, e := range x {
			if ps, ok := asMap(s["properties"])[k].(map[string]any); ok {
				if err := o.validate(ps, e, at+"."+k); err != nil {
					return err
				}
				continue
			}
			switch ap := s["additionalProperties"].(type) {
			case bool:
				if !ap {
					return fmt.Errorf("%s.%s: not allowed", at, k)
				}
			case map[string]any:
				if err := o.validate(ap, e, at+"."+k); err != nil {
					return err
				}
			default:
				if len(allowed.props) > 0 && !allowed.open && !allowed.props[k] {
					return fmt.Errorf("%s.%s: the server answers a field the OpenAPI schema does not name", at, k)
				}
			}
		}
	case []any:
		if items, ok := s["items"].(map[string]any); ok {
			for i, e := range x {
				if err := o.validate(items, e, fmt.Sprintf("%s[%d]", at, i)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func jsonType(v any, ty string) bool {
	switch ty {
	case "null":
		return v == nil
	case "object":
		_, ok := v.(map[string]any)
		return ok
	case "array":
		_, ok := v.([]any)
		return ok
	case "string":
		_, ok := v.(string)
		return ok
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "number":
		_, ok := v.(float64)
		return ok
	case "integer":
		f, ok := v.(float64)
		return ok && f == math.Trunc(f)
	}
	return false
}

func asMap(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

func asSlice(v any) []any {
	s, _ := v.([]any)
	return s
}

// TestSecurityAnswersFitOpenAPI: the scanned answers of the security
// endpoint (an image with a vulnerability, and an index of it) and the
// vulnerability database's status fit the OpenAPI document's schemas,
// Berth's additions included.
func TestSecurityAnswersFitOpenAPI(t *testing.T) {
	w := newWorld(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.srv.Serve(ctx, ln) }() // the scanner runs in the background
	t.Cleanup(func() { cancel(); <-done })
	spec := fetchOpenAPI(t, w.url)
	check := func(method, path string, status int, raw string) {
		t.Helper()
		var v any
		if err := json.Unmarshal([]byte(raw), &v); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		op := spec.operation(method, strings.Split(path, "?")[0])
		if op == nil {
			t.Fatalf("%s %s: no operation", method, path)
		}
		if err := spec.validate(spec.responseSchema(op, status), v, "answer"); err != nil {
			t.Errorf("%s %s: %v\n%s", method, path, err, raw)
		}
	}
	advisory := `{"id":"ALPINE-CVE-2026-1000","modified":"2026-01-01T00:00:00Z","aliases":["CVE-2026-1000"],
	  "severity":[{"type":"CVSS_V3","score":"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
	  "affected":[{"package":{"ecosystem":"Alpine:v3.19","name":"openssl"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"3.1.4-r6"}]}]}]}`
	if status, _, raw := w.call("POST", "/api/v1/superuser/vulndb", "root", advisory); status != 200 {
		t.Fatalf("import: %d %s", status, raw)
	} else {
		check("POST", "/api/v1/superuser/vulndb", status, raw)
	}
	status, _, raw := w.call("GET", "/api/v1/superuser/vulndb", "root", "")
	check("GET", "/api/v1/superuser/vulndb", status, raw)

	// An Alpine image whose libcrypto3 comes from a vulnerable openssl, and
	// an index of it.
	layer := tarGz(t, map[string]string{
		"etc/os-release":       "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.19.1\n",
		"lib/apk/db/installed": "C:Q1def=\nP:libcrypto3\nV:3.1.4-r5\nA:x86_64\no:openssl\nT:Crypto library\n\n",
	})
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	for _, b := range [][]byte{layer, cfg} {
		if r := w.do("POST", "/v2/acme/scanned/blobs/uploads/?digest="+digestOf(b), "root", pw, b); r.StatusCode != 201 {
			t.Fatalf("push blob: %d", r.StatusCode)
		}
	}
	image := w.manifest(cfg, layer)
	if r := w.do("PUT", "/v2/acme/scanned/manifests/v1", "root", pw, image, "Content-Type", "application/vnd.oci.image.manifest.v1+json"); r.StatusCode != 201 {
		t.Fatalf("push image: %d", r.StatusCode)
	}
	index := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%d,"platform":{"architecture":"amd64","os":"linux"}}]}`,
		digestOf(image), len(image)))
	if r := w.do("PUT", "/v2/acme/scanned/manifests/multi", "root", pw, index, "Content-Type", "application/vnd.oci.image.index.v1+json"); r.StatusCode != 201 {
		t.Fatalf("push index: %d", r.StatusCode)
	}
	for _, d := range []string{digestOf(image), digestOf(index)} {
		path := "/api/v1/repository/acme/scanned/manifest/" + d + "/security?vulnerabilities=true"
		deadline := time.Now().Add(30 * time.Second)
		var m map[string]any
		for {
			status, m, raw = w.call("GET", path, "root", "")
			if status != 200 || m["status"] != "queued" || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if m["status"] != "scanned" || !strings.Contains(raw, "CVE-2026-1000") && d == digestOf(image) || !strings.Contains(raw, "vulnerability_data") {
			t.Fatalf("%s: %d %s", path, status, raw)
		}
		check("GET", path, status, raw)
	}
}

func digestOf(b []byte) string { return digest.FromBytes(b).String() }

// tarGz is a gzipped tar of the given files.
func tarGz(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, name := range slices.Sorted(maps.Keys(files)) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(files[name])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(files[name]))
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}
