package oci

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// checkKeys refuses a JSON document in which an object names a key twice.
// encoding/json keeps the last of duplicate keys and matches struct fields
// case-insensitively, while other consumers keep the first or match
// exactly: {"layers":[X],"Layers":[]} would be a manifest without layers
// to Berth (nothing checked, nothing kept from garbage collection) and one
// with layer X to a case-sensitive client. So in the objects decoded into
// structs (the manifest, descriptors, platforms), keys that differ only in
// case count as the same; in maps (annotations) only identical keys do.
// body must be valid JSON.
func checkKeys(body []byte) error {
	stack := []*keyFrame{{fold: true}} // the document, a pseudo-array
	dec := json.NewDecoder(bytes.NewReader(body))
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read JSON: %w", err)
		}
		top := stack[len(stack)-1]
		if top.object && top.expectKey {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
				valueDone(stack)
				continue
			}
			k, _ := tok.(string)
			id := k
			if top.fold {
				id = foldKey(k)
			}
			if top.keys == nil {
				top.keys = map[string]struct{}{}
			}
			if _, dup := top.keys[id]; dup {
				return fmt.Errorf("the key %q appears twice in one object", k)
			}
			top.keys[id] = struct{}{}
			top.key, top.expectKey = k, false
			continue
		}
		d, ok := tok.(json.Delim)
		if !ok {
			valueDone(stack)
			continue
		}
		switch d {
		case '{', '[':
			fold := top.fold
			if top.object && foldKey(top.key) == "annotations" {
				fold = false
			}
			stack = append(stack, &keyFrame{object: d == '{', expectKey: d == '{', fold: fold})
		default: // ']' ('}' is read where a key is expected)
			stack = stack[:len(stack)-1]
			valueDone(stack)
		}
	}
}

// keyFrame is an object or array checkKeys is in.
type keyFrame struct {
	object    bool
	expectKey bool
	fold      bool // keys compared as encoding/json matches fields
	key       string
	keys      map[string]struct{}
}

// valueDone notes that a value ended: in an object, a key comes next.
func valueDone(stack []*keyFrame) {
	if top := stack[len(stack)-1]; top.object {
		top.expectKey = true
	}
}

// foldKey maps the keys encoding/json would match to one struct field to
// one string (it folds case the Unicode way: "K" and the Kelvin sign K
// are both "k").
func foldKey(k string) string { return strings.ToLower(strings.ToUpper(k)) }
