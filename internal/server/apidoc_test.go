package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/meta"
)

// TestAPIDocExamples runs the curl examples of docs/api.md, in order,
// against a real server in token mode (the newcomer's setup: ordinary
// users alice and bob), and fails when an answer differs from the one the
// document shows, or from the OpenAPI document's schema of that answer.
//
// The document's conventions: every ```sh block that holds curl is run,
// each command as curl would send it; a "# → 201" comment gives the
// expected status of the command before it (any 2xx otherwise); a ```json
// block right after the sh block is the answer of its last command, where
// a string "<...>" stands for any value. $BERTH and $AUTH are the setup's;
// a "uuid" or "token" in an answer is kept as $UUID or $TOKEN.
func TestAPIDocExamples(t *testing.T) {
	raw, err := os.ReadFile("../../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	examples := parseDocExamples(t, string(raw))
	if len(examples) < 15 {
		t.Fatalf("docs/api.md: %d curl examples found; the parser lost them", len(examples))
	}

	ctx := context.Background()
	_, hs, db := startServer(t, func(*config.Config) {})
	hash, _ := auth.HashPassword(pw)
	for _, name := range []string{"alice", "bob"} {
		if _, err := db.Users().CreateUser(ctx, meta.User{Username: name, SecretHash: hash}); err != nil {
			t.Fatal(err)
		}
	}
	runDocExamples(t, "docs/api.md", examples, hs.URL, map[string]string{"BERTH": hs.URL, "AUTH": "alice:" + pw})
}

// runDocExamples runs a document's examples in order against the server at
// base, with the variables of env (to which it adds $UUID and $TOKEN as
// answers show them), checking each answer's status, its fit to the
// OpenAPI document and the answer the document shows.
func runDocExamples(t *testing.T, doc string, examples []*docExample, base string, env map[string]string) {
	t.Helper()
	spec := fetchOpenAPI(t, base)
	for _, ex := range examples {
		req, err := ex.request(env)
		if err != nil {
			t.Fatalf("%s:%d: %v", doc, ex.line, err)
		}
		at := fmt.Sprintf("%s:%d: %s %s", doc, ex.line, req.Method, strings.TrimPrefix(req.URL.String(), base))
		op := spec.operation(req.Method, req.URL.Path)
		if op == nil {
			t.Errorf("%s: no operation of the OpenAPI document serves it", at)
		}
		if op != nil && len(ex.body) > 0 {
			if s := spec.requestSchema(op); s != nil {
				var body any
				if err := json.Unmarshal(ex.body, &body); err != nil {
					t.Errorf("%s: the body is not JSON: %v", at, err)
				} else if err := spec.validate(s, body, "body"); err != nil {
					t.Errorf("%s: the body does not fit the OpenAPI schema: %v", at, err)
				}
			}
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", at, err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if ex.status != 0 && resp.StatusCode != ex.status || ex.status == 0 && resp.StatusCode/100 != 2 {
			want := "2xx"
			if ex.status != 0 {
				want = strconv.Itoa(ex.status)
			}
			t.Errorf("%s: status %d, the document says %s; answer: %s", at, resp.StatusCode, want, got)
			continue
		}
		var answer any
		if len(bytes.TrimSpace(got)) > 0 && !ex.discard {
			if err := json.Unmarshal(got, &answer); err != nil {
				t.Errorf("%s: the answer is not JSON: %v", at, err)
				continue
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("%s: Content-Type %q", at, ct)
			}
		}
		if op != nil && !ex.discard {
			if s := spec.responseSchema(op, resp.StatusCode); s != nil {
				if err := spec.validate(s, answer, "answer"); err != nil {
					t.Errorf("%s: the answer does not fit the OpenAPI schema: %v\n%s", at, err, got)
				}
			}
		}
		if ex.answer != nil {
			var want any
			if err := json.Unmarshal(ex.answer, &want); err != nil {
				t.Fatalf("%s:%d: the answer block is not JSON: %v", doc, ex.answerLine, err)
			}
			if err := matchAnswer(want, answer, "answer"); err != nil {
				pretty, _ := json.MarshalIndent(answer, "", "  ")
				t.Errorf("%s: %v; the server answered:\n%s", at, err, pretty)
			}
		}
		if m, ok := answer.(map[string]any); ok {
			for _, k := range []string{"uuid", "token"} {
				if s, ok := m[k].(string); ok {
					env[strings.ToUpper(k)] = s
				}
			}
		}
	}
}

// TestOpenAPIServedWithoutCredentials: the real server hands the document
// to anyone, even with wrong credentials, while every other call refuses
// them.
func TestOpenAPIServedWithoutCredentials(t *testing.T) {
	w := newWorld(t)
	for _, creds := range [][2]string{{"", ""}, {"nobody", "wrong"}} {
		resp := w.do(http.MethodGet, "/api/v1/openapi.json", creds[0], creds[1], nil)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("as %q: %d %q", creds[0], resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
	if resp := w.do(http.MethodGet, "/api/v1/user/", "nobody", "wrong", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /api/v1/user/ with wrong credentials: %d", resp.StatusCode)
	}
}

// docExample is one curl command of the document.
type docExample struct {
	line       int
	args       []word // curl's arguments, unexpanded
	status     int    // expected, 0 for any 2xx
	answer     []byte // the expected answer, if the document shows one
	answerLine int
	discard    bool // -o: the answer is written to a file, not shown
	body       []byte
}

var fenceRE = regexp.MustCompile("^```(\\w*)")

// parseDocExamples reads the curl commands of the ```sh blocks, their
// "# → NNN" statuses and the ```json answers that follow.
func parseDocExamples(t *testing.T, doc string) []*docExample {
	t.Helper()
	lines := strings.Split(doc, "\n")
	var out []*docExample
	var lastBlock []*docExample // the examples of the previous sh block, while only blank lines follow it
	for i := 0; i < len(lines); i++ {
		m := fenceRE.FindStringSubmatch(lines[i])
		if m == nil {
			if strings.TrimSpace(lines[i]) != "" {
				lastBlock = nil
			}
			continue
		}
		start := i
		var body []string
		for i++; i < len(lines) && !strings.HasPrefix(lines[i], "```"); i++ {
			body = append(body, lines[i])
		}
		switch {
		case m[1] == "json" && len(lastBlock) > 0:
			ex := lastBlock[len(lastBlock)-1]
			ex.answer, ex.answerLine = []byte(strings.Join(body, "\n")), start+2
			lastBlock = nil
			continue
		case m[1] != "sh" || !strings.Contains(strings.Join(body, "\n"), "curl"):
			lastBlock = nil
			continue
		}
		lastBlock = nil
		for j := 0; j < len(body); j++ {
			lineNo := start + 2 + j
			cmd := body[j]
			for strings.HasSuffix(cmd, "\\") && j+1 < len(body) {
				j++
				cmd = strings.TrimSuffix(cmd, "\\") + " " + body[j]
			}
			trimmed := strings.TrimSpace(cmd)
			switch {
			case trimmed == "":
			case strings.HasPrefix(trimmed, "# →"):
				if len(lastBlock) == 0 {
					t.Fatalf("docs/api.md:%d: a status with no curl before it", lineNo)
				}
				f := strings.Fields(strings.TrimPrefix(trimmed, "# →"))
				n, err := strconv.Atoi(f[0])
				if err != nil {
					t.Fatalf("docs/api.md:%d: %q: want \"# → <status>\"", lineNo, trimmed)
				}
				lastBlock[len(lastBlock)-1].status = n
			case strings.HasPrefix(trimmed, "#"):
			default:
				words, err := shellWords(trimmed)
				for err != nil && strings.HasPrefix(err.Error(), "unterminated") && j+1 < len(body) {
					// A quoted string goes on to the next line.
					j++
					cmd += "\n" + body[j]
					for strings.HasSuffix(cmd, "\\") && j+1 < len(body) {
						j++
						cmd = strings.TrimSuffix(cmd, "\\") + " " + body[j]
					}
					trimmed = strings.TrimSpace(cmd)
					words, err = shellWords(trimmed)
				}
				if err != nil || len(words) == 0 || words[0].literal() != "curl" {
					t.Fatalf("docs/api.md:%d: %q: a block with curl holds only curl commands and comments (%v)", lineNo, trimmed, err)
				}
				ex := &docExample{line: lineNo, args: words[1:]}
				lastBlock = append(lastBlock, ex)
				out = append(out, ex)
			}
		}
	}
	return out
}

// word is a shell word: its text, and whether $NAME in it is expanded.
type word struct {
	parts []wordPart
}

type wordPart struct {
	text   string
	expand bool
}

// shellWords splits a command as sh would: '...' is literal, "..." and
// bare text expand $NAME and ${NAME}, # starts a comment.
func shellWords(s string) ([]word, error) {
	var words []word
	var cur *word
	add := func(text string, expand bool) {
		if cur == nil {
			words = append(words, word{})
			cur = &words[len(words)-1]
		}
		cur.parts = append(cur.parts, wordPart{text, expand})
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			cur = nil
		case c == '#' && cur == nil:
			return words, nil
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("unterminated '")
			}
			add(s[i+1:i+1+j], false)
			i += j + 1
		case c == '"':
			var b strings.Builder
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte(`"\$`, s[i+1]) >= 0 {
					i++
				}
				b.WriteByte(s[i])
			}
			if i == len(s) {
				return nil, fmt.Errorf("unterminated \"")
			}
			add(b.String(), true)
		case c == '\\' && i+1 < len(s):
			add(s[i+1:i+2], false)
			i++
		default:
			j := i
			for j < len(s) && strings.IndexByte(" \t'\"\\", s[j]) < 0 {
				j++
			}
			add(s[i:j], true)
			i = j - 1
		}
	}
	return words, nil
}

// literal is the word's text before expansion.
func (w word) literal() string {
	var b strings.Builder
	for _, p := range w.parts {
		b.WriteString(p.text)
	}
	return b.String()
}

var varRE = regexp.MustCompile(`\$(\w+|\{\w+\})`)

func (w word) expand(env map[string]string) (string, error) {
	var b strings.Builder
	var missing error
	for _, p := range w.parts {
		if !p.expand {
			b.WriteString(p.text)
			continue
		}
		b.WriteString(varRE.ReplaceAllStringFunc(p.text, func(v string) string {
			name := strings.Trim(v, "${}")
			val, ok := env[name]
			if !ok {
				missing = fmt.Errorf("$%s is not set", name)
			}
			return val
		}))
	}
	return b.String(), missing
}

// request builds the request curl would send for the example's arguments.
func (ex *docExample) request(env map[string]string) (*http.Request, error) {
	var method, user, url string
	var data *string
	headers := http.Header{}
	for i := 0; i < len(ex.args); i++ {
		arg, err := ex.args[i].expand(env)
		if err != nil {
			return nil, err
		}
		value := func() (string, error) {
			i++
			if i == len(ex.args) {
				return "", fmt.Errorf("curl %s needs a value", arg)
			}
			return ex.args[i].expand(env)
		}
		var v string
		switch arg {
		case "-s", "-S", "-sS", "-f", "-fsS", "--fail", "--silent", "--show-error":
		case "-o", "--output":
			_, err = value()
			ex.discard = true
		case "-u", "--user":
			user, err = value()
		case "-X", "--request":
			method, err = value()
		case "-H", "--header":
			if v, err = value(); err == nil {
				name, val, ok := strings.Cut(v, ":")
				if !ok {
					return nil, fmt.Errorf("header %q", v)
				}
				headers.Set(strings.TrimSpace(name), strings.TrimSpace(val))
			}
		case "-d", "--data", "--data-raw":
			if v, err = value(); err == nil {
				data = &v
			}
		default:
			if strings.HasPrefix(arg, "-") {
				return nil, fmt.Errorf("curl option %s: the test does not know it (teach request)", arg)
			}
			if url != "" {
				return nil, fmt.Errorf("two URLs: %s and %s", url, arg)
			}
			url = arg
		}
		if err != nil {
			return nil, err
		}
	}
	var body io.Reader
	if data != nil {
		// As curl: -d sends a form content type and makes the request a POST.
		body = strings.NewReader(*data)
		ex.body = []byte(*data)
		if method == "" {
			method = http.MethodPost
		}
		if headers.Get("Content-Type") == "" {
			headers.Set("Content-Type", "application/x-www-form-urlencoded")
		}
	}
	if method == "" {
		method = http.MethodGet
	}
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return nil, err
	}
	req.Header = headers
	if user != "" {
		name, secret, _ := strings.Cut(user, ":")
		req.SetBasicAuth(name, secret)
	}
	return req, nil
}

// matchAnswer compares an answer with the document's: the same fields,
// the same values, except where the document shows "<...>".
func matchAnswer(want, got any, at string) error {
	if s, ok := want.(string); ok && strings.HasPrefix(s, "<") && strings.HasSuffix(s, ">") {
		return nil
	}
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: the document shows an object, the server answered %v", at, got)
		}
		for k := range g {
			if _, ok := w[k]; !ok {
				return fmt.Errorf("%s.%s: the server answers it; the document does not show it", at, k)
			}
		}
		for k, wv := range w {
			gv, ok := g[k]
			if !ok {
				return fmt.Errorf("%s.%s: the document shows it; the server does not answer it", at, k)
			}
			if err := matchAnswer(wv, gv, at+"."+k); err != nil {
				return err
			}
		}
		return nil
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return fmt.Errorf("%s: the document shows %d items, the server answered %v", at, len(w), got)
		}
		for i := range w {
			if err := matchAnswer(w[i], g[i], fmt.Sprintf("%s[%d]", at, i)); err != nil {
				return err
			}
		}
		return nil
	}
	if fmt.Sprint(want) != fmt.Sprint(got) {
		return fmt.Errorf("%s: the document shows %v, the server answered %v", at, want, got)
	}
	return nil
}
