package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/auth"
)

// openAPIDoc is the served document, decoded.
func openAPIDoc(t *testing.T) map[string]any {
	t.Helper()
	raw, err := openAPIJSON()
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

var pathParam = regexp.MustCompile(`\{[^}]*\}`)

// routeKey names an operation: the method and the path with every
// parameter written {} (and ServeMux's {$} dropped). Loose keys also drop
// a trailing slash, which several routes are served both with and without.
func routeKey(method, path string, loose bool) string {
	path = pathParam.ReplaceAllString(strings.TrimSuffix(path, "{$}"), "{}")
	if loose && len(path) > 1 {
		path = strings.TrimSuffix(path, "/")
	}
	return method + " " + path
}

// servedRoutes lists the operations the API serves, by exact key: the
// patterns registered on its mux, and the endpoints its repository
// dispatcher serves under /api/v1/repository/{repository}/.
func servedRoutes(t *testing.T, a *API) map[string]bool {
	t.Helper()
	served := map[string]bool{}
	for _, p := range a.patterns {
		method, path, ok := strings.Cut(p, " ")
		if !ok {
			if p != "/api/v1/repository/" {
				t.Errorf("pattern %q has no method: register routes with one, so the document can name them", p)
				continue
			}
			// The dispatcher: the repository list and creation with a
			// trailing slash, and every endpoint under a repository.
			served[routeKey(http.MethodGet, p, false)] = true
			served[routeKey(http.MethodPost, p, false)] = true
			for _, ep := range a.repositoryEndpoints() {
				path := "/api/v1/repository/{repository}"
				if ep.suffix != "" {
					path += "/" + ep.suffix
				}
				served[routeKey(ep.method, path, false)] = true
			}
			continue
		}
		served[routeKey(method, path, false)] = true
	}
	return served
}

var operationMethods = []string{"get", "put", "post", "delete", "patch", "head", "options", "trace"}

// documentedRoutes lists the document's operations by exact key.
func documentedRoutes(doc map[string]any) map[string]bool {
	out := map[string]bool{}
	for path, item := range doc["paths"].(map[string]any) {
		for method := range item.(map[string]any) {
			if slices.Contains(operationMethods, method) {
				out[routeKey(strings.ToUpper(method), path, false)] = true
			}
		}
	}
	return out
}

// TestOpenAPIMatchesRoutes fails when a route is served without an
// operation in openapi.yaml, or the document has an operation that no
// route serves (a wrong path, method or trailing slash).
func TestOpenAPIMatchesRoutes(t *testing.T) {
	served := servedRoutes(t, New(Stores{}, Open{}, Options{}))
	documented := documentedRoutes(openAPIDoc(t))
	looseDocumented := map[string]bool{}
	for k := range documented {
		method, path, _ := strings.Cut(k, " ")
		looseDocumented[routeKey(method, path, true)] = true
	}
	var missing, unserved []string
	for k := range served {
		method, path, _ := strings.Cut(k, " ")
		if !looseDocumented[routeKey(method, path, true)] {
			missing = append(missing, k)
		}
	}
	for k := range documented {
		if !served[k] {
			unserved = append(unserved, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(unserved)
	for _, k := range missing {
		t.Errorf("route %s is served but not documented in internal/api/openapi.yaml", k)
	}
	for _, k := range unserved {
		t.Errorf("openapi.yaml documents %s, which no route serves (check the method, the path and its trailing slash)", k)
	}
	if len(served) < 80 {
		t.Errorf("only %d routes found: the enumeration is broken", len(served))
	}
	t.Logf("%d routes served, %d operations documented", len(served), len(documented))
}

// TestOpenAPIDriftDetected proves the comparison sees a change on either
// side: a route nobody documented, and an operation nobody serves.
func TestOpenAPIDriftDetected(t *testing.T) {
	a := New(Stores{}, Open{}, Options{})
	a.handle("GET /api/v1/organization/{org}/undocumented", func(http.ResponseWriter, *http.Request, auth.Identity) error { return nil })
	served := servedRoutes(t, a)
	documented := documentedRoutes(openAPIDoc(t))
	if documented[routeKey("GET", "/api/v1/organization/{orgname}/undocumented", false)] || !served[routeKey("GET", "/api/v1/organization/{x}/undocumented", false)] {
		t.Fatal("an undocumented route is not seen")
	}
	documented[routeKey("PATCH", "/api/v1/repository/{repository}", false)] = true
	if served[routeKey("PATCH", "/api/v1/repository/{repository}", false)] {
		t.Fatal("an unserved operation is seen as served")
	}
	if served[routeKey("POST", "/api/v1/superuser/users", false)] || !served[routeKey("POST", "/api/v1/superuser/users/", false)] {
		t.Fatal("the trailing slash of a route that needs one is lost")
	}
}

// TestOpenAPIWellFormed checks the document's structure: what a validator
// of OpenAPI 3.1 would refuse, and the mistakes a hand-written document
// makes (a dangling $ref, an undeclared path parameter, a required field
// that is not a property).
func TestOpenAPIWellFormed(t *testing.T) {
	doc := openAPIDoc(t)
	if v, _ := doc["openapi"].(string); !strings.HasPrefix(v, "3.1.") {
		t.Errorf("openapi = %q, want 3.1.x", v)
	}
	info, _ := doc["info"].(map[string]any)
	if info["title"] == "" || info["version"] == "" || info["title"] == nil || info["version"] == nil {
		t.Error("info needs a title and a version")
	}
	for k := range doc {
		if !slices.Contains([]string{"openapi", "info", "servers", "security", "tags", "paths", "components", "jsonSchemaDialect", "webhooks", "externalDocs"}, k) && !strings.HasPrefix(k, "x-") {
			t.Errorf("unknown top-level field %q", k)
		}
	}
	// Every $ref resolves.
	walk(doc, "#", func(at string, m map[string]any) {
		if _, ok := m["$ref"].(string); ok {
			if _, err := resolve(doc, m); err != nil {
				t.Errorf("%s: %v", at, err)
			}
		}
	})
	comps := doc["components"].(map[string]any)
	schemes := comps["securitySchemes"].(map[string]any)
	checkSecurity := func(at string, v any) {
		reqs, ok := v.([]any)
		if !ok {
			t.Errorf("%s: security must be a list", at)
			return
		}
		for _, r := range reqs {
			for name := range r.(map[string]any) {
				if schemes[name] == nil {
					t.Errorf("%s: security scheme %q is not declared", at, name)
				}
			}
		}
	}
	checkSecurity("security", doc["security"])
	tags := map[string]bool{}
	for _, tg := range doc["tags"].([]any) {
		tags[tg.(map[string]any)["name"].(string)] = true
	}
	ids := map[string]string{}
	for path, it := range doc["paths"].(map[string]any) {
		item := it.(map[string]any)
		if !strings.HasPrefix(path, "/api/v1/") {
			t.Errorf("path %s is outside /api/v1", path)
		}
		for key := range item {
			if !slices.Contains(operationMethods, key) && key != "parameters" && key != "summary" && key != "description" {
				t.Errorf("%s: unknown field %q", path, key)
			}
		}
		pathLevel, _ := item["parameters"].([]any)
		for _, method := range operationMethods {
			o, ok := item[method]
			if !ok {
				continue
			}
			at := strings.ToUpper(method) + " " + path
			op := o.(map[string]any)
			id, _ := op["operationId"].(string)
			if id == "" {
				t.Errorf("%s: no operationId", at)
			} else if other, dup := ids[id]; dup {
				t.Errorf("%s: operationId %s is also %s's", at, id, other)
			}
			ids[id] = at
			if s, _ := op["summary"].(string); s == "" {
				t.Errorf("%s: no summary", at)
			}
			for _, tg := range op["tags"].([]any) {
				if !tags[tg.(string)] {
					t.Errorf("%s: tag %v is not declared", at, tg)
				}
			}
			if sec, ok := op["security"]; ok {
				checkSecurity(at, sec)
			}
			if _, ok := op["requestBody"]; ok && method != "post" && method != "put" && method != "patch" {
				t.Errorf("%s: a request body on %s", at, method)
			}
			checkParameters(t, doc, at, path, append(slices.Clone(pathLevel), asList(op["parameters"])...))
			checkResponses(t, doc, at, op)
		}
	}
	// Schemas: known types, and required fields that are properties.
	walk(doc, "#", func(at string, m map[string]any) {
		for _, key := range []string{"schema", "items", "additionalProperties"} {
			if s, ok := m[key].(map[string]any); ok {
				checkSchema(t, at+"/"+key, s)
			}
		}
	})
	for name, s := range comps["schemas"].(map[string]any) {
		checkSchema(t, "#/components/schemas/"+name, s.(map[string]any))
	}
}

// checkParameters requires each {name} of the path to be declared once as
// a required path parameter, and nothing else to be declared in the path.
func checkParameters(t *testing.T, doc map[string]any, at, path string, params []any) {
	t.Helper()
	declared := map[string]int{}
	for _, p := range params {
		pm, err := resolve(doc, p)
		if err != nil {
			t.Errorf("%s: %v", at, err)
			continue
		}
		if pm["in"] == "path" {
			declared[pm["name"].(string)]++
			if pm["required"] != true {
				t.Errorf("%s: path parameter %v must be required", at, pm["name"])
			}
		}
		if _, ok := pm["schema"]; !ok {
			t.Errorf("%s: parameter %v has no schema", at, pm["name"])
		}
	}
	for _, m := range pathParam.FindAllString(path, -1) {
		name := strings.Trim(m, "{}")
		if declared[name] != 1 {
			t.Errorf("%s: path parameter %s declared %d times", at, name, declared[name])
		}
		delete(declared, name)
	}
	for name := range declared {
		t.Errorf("%s: parameter %s is not in the path", at, name)
	}
}

// checkResponses requires a success answer, valid status codes, and a
// description for each answer.
func checkResponses(t *testing.T, doc map[string]any, at string, op map[string]any) {
	t.Helper()
	responses, _ := op["responses"].(map[string]any)
	success := false
	for code, r := range responses {
		if code != "default" && !regexp.MustCompile(`^[1-5][0-9][0-9]$`).MatchString(code) {
			t.Errorf("%s: response key %q", at, code)
		}
		success = success || strings.HasPrefix(code, "2")
		rm, err := resolve(doc, r)
		if err != nil {
			t.Errorf("%s %s: %v", at, code, err)
			continue
		}
		if d, _ := rm["description"].(string); d == "" {
			t.Errorf("%s %s: no description", at, code)
		}
		if code == "204" && rm["content"] != nil {
			t.Errorf("%s: a 204 answer has no content", at)
		}
	}
	if !success {
		t.Errorf("%s: no 2xx answer", at)
	}
}

var schemaTypes = []string{"object", "array", "string", "integer", "number", "boolean", "null"}

func checkSchema(t *testing.T, at string, s map[string]any) {
	t.Helper()
	if _, ref := s["$ref"]; ref {
		return
	}
	var types []any
	switch v := s["type"].(type) {
	case string:
		types = []any{v}
	case []any:
		types = v
	case nil:
	default:
		t.Errorf("%s: type %v", at, v)
	}
	for _, ty := range types {
		if !slices.Contains(schemaTypes, fmt.Sprint(ty)) {
			t.Errorf("%s: unknown type %v", at, ty)
		}
	}
	props, hasProps := s["properties"].(map[string]any)
	for _, r := range asList(s["required"]) {
		if _, ok := props[r.(string)]; hasProps && !ok {
			t.Errorf("%s: required %v is not a property", at, r)
		}
	}
	for name, p := range props {
		if pm, ok := p.(map[string]any); ok {
			checkSchema(t, at+"/properties/"+name, pm)
		} else {
			t.Errorf("%s: property %s is not a schema", at, name)
		}
	}
	for _, key := range []string{"allOf", "oneOf", "anyOf"} {
		for i, sub := range asList(s[key]) {
			checkSchema(t, fmt.Sprintf("%s/%s/%d", at, key, i), sub.(map[string]any))
		}
	}
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

// walk calls f on every object of the document, with its JSON pointer.
func walk(v any, at string, f func(at string, m map[string]any)) {
	switch x := v.(type) {
	case map[string]any:
		f(at, x)
		for k, e := range x {
			walk(e, at+"/"+k, f)
		}
	case []any:
		for i, e := range x {
			walk(e, fmt.Sprintf("%s/%d", at, i), f)
		}
	}
}

// resolve follows a local $ref (or returns the object itself).
func resolve(doc map[string]any, v any) (map[string]any, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%v is not an object", v)
	}
	ref, ok := m["$ref"].(string)
	if !ok {
		return m, nil
	}
	if !strings.HasPrefix(ref, "#/") {
		return nil, fmt.Errorf("$ref %s is not local", ref)
	}
	var cur any = doc
	for _, part := range strings.Split(ref[2:], "/") {
		part = strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")
		cm, ok := cur.(map[string]any)
		if !ok || cm[part] == nil {
			return nil, fmt.Errorf("$ref %s does not resolve", ref)
		}
		cur = cm[part]
	}
	return resolve(doc, cur)
}

// TestOpenAPIServed: the document is served as JSON to anyone, with an
// ETag that a client may revalidate.
func TestOpenAPIServed(t *testing.T) {
	a := New(Stores{}, Open{}, Options{})
	want, err := openAPIJSON()
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	a.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/openapi.json", nil))
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/json" || rec.Body.String() != string(want) {
		t.Fatalf("GET: %d %q, %d bytes", rec.Code, rec.Header().Get("Content-Type"), rec.Body.Len())
	}
	etag := rec.Header().Get("ETag")
	req := httptest.NewRequest(http.MethodGet, "/api/v1/openapi.json", nil)
	req.Header.Set("If-None-Match", etag)
	rec = httptest.NewRecorder()
	a.ServeHTTP(rec, req)
	if etag == "" || rec.Code != http.StatusNotModified {
		t.Errorf("If-None-Match %s: %d, want 304", etag, rec.Code)
	}
	rec = httptest.NewRecorder()
	a.ServeHTTP(rec, httptest.NewRequest(http.MethodHead, "/api/v1/openapi.json", nil))
	if rec.Code != http.StatusOK || rec.Body.Len() != 0 {
		t.Errorf("HEAD: %d with %d bytes", rec.Code, rec.Body.Len())
	}
}
