package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// MaxTemplateSize caps a custom body template, in bytes.
const MaxTemplateSize = 64 << 10

// MaxRenderedSize caps a rendered body: a template that copies the whole
// payload many times over is refused rather than sent.
const MaxRenderedSize = 1 << 20

// ErrRenderedTooLarge is returned by Render for a body above MaxRenderedSize.
var ErrRenderedTooLarge = fmt.Errorf("rendered body exceeds %d bytes", MaxRenderedSize)

// MaxTemplateDepth caps how deeply a custom body template nests objects
// and lists.
const MaxTemplateDepth = 32

// ErrTemplateTooDeep is returned by ValidateTemplate and Render for a
// template nesting objects and lists more than MaxTemplateDepth levels.
var ErrTemplateTooDeep = fmt.Errorf("template nests objects and lists more than %d levels deep", MaxTemplateDepth)

// missingText stands for a missing value inside a longer string (Quay's).
const missingText = "(none)"

// ValidateTemplate checks a custom body template when a notification is
// created: it must be one JSON document of at most MaxTemplateSize bytes,
// and every ${expression} in its strings (keys included) must be in the
// supported JSONPath subset: $ (the whole payload), $.a.b or a.b, a[0]
// (a negative index counts from the end), a[*] or a.*, and a['key'] or
// a["key"] for keys with dots or spaces.
func ValidateTemplate(template json.RawMessage) error {
	if len(template) > MaxTemplateSize {
		return fmt.Errorf("template is %d bytes, more than the %d allowed", len(template), MaxTemplateSize)
	}
	// Rendering against an empty payload parses every expression and can
	// produce no more output than the template itself (as Quay validates).
	_, err := Render(template, map[string]any{})
	return err
}

// Render evaluates a custom body template against data (the payload) and
// returns the JSON body. A string that is exactly ${expr} becomes the raw
// value (a list stays a list, an object an object, a number a number;
// missing is null). Inside a longer string, and in object keys, a value
// is written as text: a list joined with ",", an object as JSON, and a
// missing value, null or empty list as "(none)". Object member order is
// kept; a key produced twice keeps its first place and its last value.
// A path with a wildcard always yields a list.
func Render(template json.RawMessage, data map[string]any) ([]byte, error) {
	if len(bytes.TrimSpace(template)) == 0 {
		return nil, errors.New("template is empty")
	}
	if !json.Valid(template) {
		var v any
		err := json.Unmarshal(template, &v)
		if err == nil {
			err = errors.New("invalid JSON")
		}
		return nil, fmt.Errorf("template is not valid JSON: %w", err)
	}
	root, err := normalize(data)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(template))
	dec.UseNumber()
	r := renderer{dec: dec, root: root}
	r.enc = json.NewEncoder(&r.out)
	r.enc.SetEscapeHTML(false)
	if err := r.value(); err != nil {
		return nil, err
	}
	return r.out.Bytes(), nil
}

// normalize turns data into plain JSON values (map[string]any, []any,
// string, json.Number, bool, nil) whatever Go types the caller used.
func normalize(data map[string]any) (any, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("template data: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("template data: %w", err)
	}
	return v, nil
}

// renderer writes the whole body into one buffer, so each output byte is
// written once whatever the depth: a buffer per object or list, copied
// into its parent's, cost depth × output. Only an object with a repeated
// key is rewritten at its end (with what it holds), so at most
// MaxTemplateDepth times over for objects nested so.
type renderer struct {
	dec     *json.Decoder
	root    any
	size    int
	depth   int
	out     bytes.Buffer
	enc     *json.Encoder // writes to out, without HTML escaping
	scratch []byte        // reused to rewrite an object with a repeated key
}

func (r *renderer) grow(n int) error {
	r.size += n
	if r.size > MaxRenderedSize {
		return ErrRenderedTooLarge
	}
	return nil
}

// punct writes one byte of JSON punctuation.
func (r *renderer) punct(c byte) error {
	r.out.WriteByte(c)
	return r.grow(1)
}

// write appends v as JSON.
func (r *renderer) write(v any) error {
	start := r.out.Len()
	if err := r.enc.Encode(v); err != nil {
		r.out.Truncate(start)
		return fmt.Errorf("template: %w", err)
	}
	r.out.Truncate(r.out.Len() - 1) // Encode's newline
	return r.grow(r.out.Len() - start)
}

// member is an object member's key and value, as ranges of out.
type member struct {
	key        string
	keyStart   int // the key's JSON (without the colon)
	keyEnd     int
	valueStart int
	valueEnd   int
}

// value renders the next JSON value of the template.
func (r *renderer) value() error {
	tok, err := r.dec.Token()
	if err != nil {
		return fmt.Errorf("template: %w", err)
	}
	switch t := tok.(type) {
	case json.Delim:
		if t != '{' && t != '[' {
			return fmt.Errorf("template: unexpected %q", t)
		}
		if r.depth >= MaxTemplateDepth {
			return ErrTemplateTooDeep
		}
		r.depth++
		defer func() { r.depth-- }()
		if t == '{' {
			return r.object()
		}
		return r.array()
	case string:
		v, err := r.expand(t)
		if err != nil {
			return err
		}
		return r.write(v)
	default: // numbers, booleans, null
		return r.write(t)
	}
}

// object renders an object's members in place; a key produced again gets
// its new value written after the rest, and the object is rewritten at
// its end with each key in its first place holding its last value.
func (r *renderer) object() error {
	start := r.out.Len()
	if err := r.punct('{'); err != nil {
		return err
	}
	var members []member
	index := map[string]int{}
	repeated := false
	for r.dec.More() {
		tok, err := r.dec.Token()
		if err != nil {
			return fmt.Errorf("template: %w", err)
		}
		rawKey, ok := tok.(string)
		if !ok {
			return fmt.Errorf("template: object key %v is not a string", tok)
		}
		key, err := r.expandText(rawKey)
		if err != nil {
			return err
		}
		i, dup := index[key]
		if !dup {
			if len(members) > 0 {
				if err := r.punct(','); err != nil {
					return err
				}
			}
			i = len(members)
			index[key] = i
			members = append(members, member{key: key, keyStart: r.out.Len()})
			if err := r.write(key); err != nil {
				return err
			}
			members[i].keyEnd = r.out.Len()
			if err := r.punct(':'); err != nil {
				return err
			}
		}
		repeated = repeated || dup
		members[i].valueStart = r.out.Len()
		if err := r.value(); err != nil {
			return err
		}
		members[i].valueEnd = r.out.Len()
	}
	if _, err := r.dec.Token(); err != nil { // '}'
		return fmt.Errorf("template: %w", err)
	}
	if repeated {
		out := r.out.Bytes()
		b := append(r.scratch[:0], '{')
		for i, m := range members {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, out[m.keyStart:m.keyEnd]...)
			b = append(b, ':')
			b = append(b, out[m.valueStart:m.valueEnd]...)
		}
		r.out.Truncate(start)
		r.out.Write(b)
		r.scratch = b
	}
	return r.punct('}')
}

func (r *renderer) array() error {
	if err := r.punct('['); err != nil {
		return err
	}
	for n := 0; r.dec.More(); n++ {
		if n > 0 {
			if err := r.punct(','); err != nil {
				return err
			}
		}
		if err := r.value(); err != nil {
			return err
		}
	}
	if _, err := r.dec.Token(); err != nil { // ']'
		return fmt.Errorf("template: %w", err)
	}
	return r.punct(']')
}

// marshal is json.Marshal without HTML escaping (URLs keep their &).
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// expression finds the first ${...} in s at or after from: the start of
// "${", and the index of its closing "}" (-1, -1 when there is none).
func expression(s string, from int) (start, end int) {
	i := strings.Index(s[from:], "${")
	if i < 0 {
		return -1, -1
	}
	start = from + i
	j := strings.IndexByte(s[start+2:], '}')
	if j < 0 {
		return -1, -1
	}
	return start, start + 2 + j
}

// expand evaluates a string in value position.
func (r *renderer) expand(s string) (any, error) {
	if start, end := expression(s, 0); start == 0 && end == len(s)-1 {
		v, ok, err := r.eval(s[2:end])
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, nil
		}
		return v, nil
	}
	return r.expandText(s)
}

// expandText replaces every ${expr} in s by the text of its value.
func (r *renderer) expandText(s string) (string, error) {
	var b strings.Builder
	pos := 0
	for {
		start, end := expression(s, pos)
		if start < 0 {
			break
		}
		v, ok, err := r.eval(s[start+2 : end])
		if err != nil {
			return "", err
		}
		b.WriteString(s[pos:start])
		if ok {
			b.WriteString(text(v))
		} else {
			b.WriteString(missingText)
		}
		pos = end + 1
		// Bounded as it grows: a short string of many ${$} would
		// otherwise build copies of the whole payload before the size
		// of the result is counted.
		if r.size+b.Len() > MaxRenderedSize {
			return "", ErrRenderedTooLarge
		}
	}
	if pos == 0 {
		return s, nil
	}
	b.WriteString(s[pos:])
	return b.String(), nil
}

func (r *renderer) eval(expr string) (any, bool, error) {
	p, err := parsePath(expr)
	if err != nil {
		return nil, false, err
	}
	v, ok := p.eval(r.root)
	return v, ok, nil
}

// text is a value as it appears inside a longer string.
func text(v any) string {
	switch x := v.(type) {
	case nil:
		return missingText
	case string:
		return x
	case json.Number:
		return x.String()
	case bool:
		return strconv.FormatBool(x)
	case []any:
		if len(x) == 0 {
			return missingText
		}
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = text(e)
		}
		return strings.Join(parts, ",")
	}
	b, err := marshal(v)
	if err != nil {
		return missingText
	}
	return string(b)
}

type segKind int

const (
	segKey segKind = iota
	segIndex
	segWildcard
)

type segment struct {
	kind  segKind
	key   string
	index int
}

type jsonPath struct {
	expr string
	segs []segment
}

// PathError is an expression outside the supported JSONPath subset.
type PathError struct {
	Expr   string
	Offset int
	Msg    string
}

func (e *PathError) Error() string {
	return fmt.Sprintf("expression ${%s}: %s at offset %d (supported: $.a.b, a.b, a[0], a[*], a['key'])", e.Expr, e.Msg, e.Offset)
}

// parsePath parses the supported JSONPath subset.
func parsePath(expr string) (jsonPath, error) {
	p := jsonPath{expr: expr}
	s := strings.TrimSpace(expr)
	lead := strings.Index(expr, s)
	fail := func(i int, format string, args ...any) (jsonPath, error) {
		return jsonPath{}, &PathError{Expr: expr, Offset: lead + i, Msg: fmt.Sprintf(format, args...)}
	}
	if s == "" {
		return fail(0, "empty expression")
	}
	i := 0
	switch {
	case s[0] == '$':
		i = 1
		if i < len(s) && s[i] != '.' && s[i] != '[' {
			return fail(i, "expected . or [ after $")
		}
	case s[0] == '[':
	case isIdent(s[0]):
		j := identEnd(s, 0)
		p.segs = append(p.segs, segment{kind: segKey, key: s[:j]})
		i = j
	default:
		return fail(0, "unexpected %q", s[0])
	}
	for i < len(s) {
		switch s[i] {
		case '.':
			i++
			if i >= len(s) {
				return fail(i, "missing name after .")
			}
			switch {
			case s[i] == '.':
				return fail(i, "recursive descent (..) is not supported")
			case s[i] == '*':
				p.segs = append(p.segs, segment{kind: segWildcard})
				i++
			case isIdent(s[i]):
				j := identEnd(s, i)
				p.segs = append(p.segs, segment{kind: segKey, key: s[i:j]})
				i = j
			default:
				return fail(i, "unexpected %q after . (quote odd keys: ['key'])", s[i])
			}
		case '[':
			seg, n, msg := parseBracket(s[i:])
			if msg != "" {
				return fail(i, "%s", msg)
			}
			p.segs = append(p.segs, seg)
			i += n
		default:
			return fail(i, "unexpected %q", s[i])
		}
	}
	return p, nil
}

// parseBracket parses [N], [*], ['key'] or ["key"] at the start of s and
// returns the segment, its length, or a message saying what is wrong.
func parseBracket(s string) (segment, int, string) {
	if len(s) < 3 {
		return segment{}, 0, "unterminated ["
	}
	switch c := s[1]; {
	case c == '*':
		if s[2] != ']' {
			return segment{}, 0, "expected ] after [*"
		}
		return segment{kind: segWildcard}, 3, ""
	case c == '\'' || c == '"':
		var key strings.Builder
		for i := 2; i < len(s); i++ {
			switch s[i] {
			case '\\':
				if i+1 >= len(s) {
					return segment{}, 0, "unterminated quoted key"
				}
				i++
				key.WriteByte(s[i])
			case c:
				if i+1 >= len(s) || s[i+1] != ']' {
					return segment{}, 0, "expected ] after quoted key"
				}
				return segment{kind: segKey, key: key.String()}, i + 2, ""
			default:
				key.WriteByte(s[i])
			}
		}
		return segment{}, 0, "unterminated quoted key"
	case c == '-' || c >= '0' && c <= '9':
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return segment{}, 0, "unterminated ["
		}
		n, err := strconv.Atoi(s[1:end])
		if err != nil || strings.HasPrefix(s[1:end], "+") {
			return segment{}, 0, fmt.Sprintf("unsupported index %q (slices and unions are not supported)", s[1:end])
		}
		return segment{kind: segIndex, index: n}, end + 1, ""
	case c == '?' || c == '(':
		return segment{}, 0, "filter and script expressions are not supported"
	}
	return segment{}, 0, "expected a number, * or a quoted key inside [ ]"
}

func isIdent(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '@'
}

func identEnd(s string, i int) int {
	for i < len(s) && isIdent(s[i]) {
		i++
	}
	return i
}

// eval applies the path to root. Without a wildcard it finds one value
// or nothing. With one, it finds a list (maybe empty) unless the part of
// the path before the first wildcard is missing or not a list or object.
func (p jsonPath) eval(root any) (any, bool) {
	nodes := []any{root}
	multi := false
	for _, seg := range p.segs {
		if !multi {
			if seg.kind == segWildcard {
				kids, ok := children(nodes[0])
				if !ok {
					return nil, false
				}
				nodes, multi = kids, true
				continue
			}
			v, ok := step(nodes[0], seg)
			if !ok {
				return nil, false
			}
			nodes[0] = v
			continue
		}
		next := []any{}
		for _, n := range nodes {
			if seg.kind == segWildcard {
				kids, _ := children(n)
				next = append(next, kids...)
			} else if v, ok := step(n, seg); ok {
				next = append(next, v)
			}
		}
		nodes = next
	}
	if multi {
		return nodes, true
	}
	return nodes[0], true
}

// step applies a key or index segment to one value.
func step(n any, seg segment) (any, bool) {
	switch seg.kind {
	case segKey:
		if obj, ok := n.(map[string]any); ok {
			v, ok := obj[seg.key]
			return v, ok
		}
	case segIndex:
		if list, ok := n.([]any); ok {
			i := seg.index
			if i < 0 {
				i += len(list)
			}
			if i >= 0 && i < len(list) {
				return list[i], true
			}
		}
	}
	return nil, false
}

// children are a list's elements or an object's values in key order.
func children(n any) ([]any, bool) {
	switch x := n.(type) {
	case []any:
		return append([]any{}, x...), true
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		out := make([]any, 0, len(keys))
		for _, k := range keys {
			out = append(out, x[k])
		}
		return out, true
	}
	return nil, false
}
