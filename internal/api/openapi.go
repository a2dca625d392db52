package api

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"
)

// openAPIYAML is the OpenAPI document of /api/v1. It is written in YAML
// (its anchors share the notification answers of the three scopes) and
// served as JSON.
//
//go:embed openapi.yaml
var openAPIYAML []byte

// openAPIPattern serves the document.
const openAPIPattern = "GET /api/v1/openapi.json"

// openAPIRoutes serves the document without authentication: it holds no
// secret, and a client reads it before it has credentials. Credentials
// sent with it are not checked.
func (a *API) openAPIRoutes() {
	var (
		once sync.Once
		doc  []byte
		tag  string
		err  error
	)
	a.patterns = append(a.patterns, openAPIPattern)
	a.mux.HandleFunc(openAPIPattern, func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() {
			if doc, err = openAPIJSON(); err == nil {
				sum := sha256.Sum256(doc)
				tag = `"` + hex.EncodeToString(sum[:16]) + `"`
			}
		})
		if err != nil {
			a.fail(w, r, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("ETag", tag)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(doc))
	})
}

// openAPIJSON converts the embedded document to indented JSON.
func openAPIJSON() ([]byte, error) {
	var doc any
	if err := yaml.Unmarshal(openAPIYAML, &doc); err != nil {
		return nil, fmt.Errorf("openapi.yaml: %w", err)
	}
	v, err := jsonValue(doc)
	if err != nil {
		return nil, fmt.Errorf("openapi.yaml: %w", err)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("openapi.yaml: %w", err)
	}
	return buf.Bytes(), nil
}

// jsonValue copies a decoded YAML value into one JSON can encode: every
// mapping key must be a string.
func jsonValue(v any) (any, error) {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			c, err := jsonValue(e)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", k, err)
			}
			out[k] = c
		}
		return out, nil
	case map[any]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			s, ok := k.(string)
			if !ok {
				return nil, fmt.Errorf("key %v is a %T, not a string (quote it)", k, k)
			}
			c, err := jsonValue(e)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", s, err)
			}
			out[s] = c
		}
		return out, nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			c, err := jsonValue(e)
			if err != nil {
				return nil, fmt.Errorf("[%d]: %w", i, err)
			}
			out[i] = c
		}
		return out, nil
	}
	return v, nil
}
