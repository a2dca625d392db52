package server_test

import (
	"io"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"testing"

	"golang.org/x/net/html"
)

// webForm is a form found on a page: where it posts and its fields with
// the values the page gave them.
type webForm struct {
	page, action string
	fields       url.Values
	editable     []string // the fields a person types or picks
}

// TestHostileWebInputs crawls the web UI as the superuser and as an
// organization's admin, following every link, then sends every page
// hostile query values and submits every form with hostile values in each
// field a person could edit (with the page's CSRF token, so the values
// reach the handlers). No answer may be a 5xx,
// a redirect to nowhere or a refusal of the method the page itself used,
// and markup sent in never comes back unescaped.
func TestHostileWebInputs(t *testing.T) {
	// The superuser sees every page and form; an organization's admin
	// sees them as a non-superuser does.
	for _, who := range []string{"root", "orgadmin"} {
		t.Run(who, func(t *testing.T) { hostileWebCrawl(t, who) })
	}
}

func hostileWebCrawl(t *testing.T, who string) {
	w := newWorld(t)
	w.pushTagged("acme/public", "latest", "hostile web layer")
	// Something in every section the pages show: a mirror, a notification,
	// a gate with a candidate, tag policies.
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/api/v1/repository/acme/mirror/mirror", `{"external_reference":"upstream.example.com/library/app","robot_username":"acme+mirror",
			"sync_interval":3600,"sync_start_date":"2030-01-01T00:00:00Z","root_rule":{"rule_kind":"tag_glob_csv","rule_value":["*"]}}`},
		{"POST", "/api/v1/repository/acme/private/notification/", `{"event":"repo_push","method":"webhook","config":{"url":"https://ci.example.com/hook"},"eventConfig":{}}`},
		{"PUT", "/api/v1/repository/acme/private/gate", `{"tags":["15-*"],"policy":"scan.counts.critical == 0"}`},
		{"POST", "/api/v1/repository/acme/private/immutabilitypolicy/", `{"tagPattern":"^v[0-9]+$","tagPatternMatches":true}`},
		{"POST", "/api/v1/repository/acme/public/autoprunepolicy/", `{"method":"number_of_tags","value":10}`},
	} {
		if st, _, raw := w.call(c.method, c.path, "root", c.body); st >= 300 {
			t.Fatalf("%s %s: %d %s", c.method, c.path, st, raw)
		}
	}
	w.pushTagged("acme/private", "15-candidate", "hostile web candidate")
	b := newBrowser(t, w.url)
	b.signIn(who, pw)
	const marker = `<img src=x onerror=alert(1)>`
	hostile := []string{"", ".", "..", "-1", "0", "99999999999999999999999", strings.Repeat("a", 5000), "\x00", "%ff", "ü",
		"sha256:", "' OR 1=1 --", marker, "javascript:alert(1)", "//evil.example/", "a/../../b", "acme/public/../private"}
	requests, fails := 0, 0
	statuses := map[int]int{}
	check := func(method, path string, status int, body string) {
		t.Helper()
		requests++
		statuses[status]++
		// The client follows redirects: a 3xx that reaches it has no
		// Location to follow.
		if status >= 500 || status >= 300 && status < 400 || status == http.StatusMethodNotAllowed {
			fails++
			if fails <= 40 {
				t.Errorf("%s %s: %d", method, truncate(path), status)
			}
		}
		if strings.Contains(body, marker) {
			t.Errorf("%s %s: the answer holds the markup sent in, unescaped", method, truncate(path))
		}
	}
	fetch := func(method, path string, form url.Values) (int, string) {
		var resp *http.Response
		var err error
		if method == http.MethodPost {
			resp, err = b.c.PostForm(b.base+path, form)
		} else {
			resp, err = b.c.Get(b.base + path)
		}
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		check(method, path, resp.StatusCode, string(body))
		return resp.StatusCode, string(body)
	}

	// Crawl.
	seen := map[string]bool{}
	queue := []string{"/"}
	var forms []webForm
	for len(queue) > 0 && len(seen) < 400 {
		p := queue[0]
		queue = queue[1:]
		if seen[p] {
			continue
		}
		seen[p] = true
		status, body := fetch(http.MethodGet, p, nil)
		if status != http.StatusOK {
			t.Errorf("a link of the UI leads to %s, which answers %d", p, status)
		}
		links, fs := parsePage(t, p, body)
		for _, l := range links {
			if !seen[l] && !strings.HasPrefix(l, "/static/") && !strings.HasPrefix(l, "/v2/") && !strings.HasPrefix(l, "/api/") {
				queue = append(queue, l)
			}
		}
		forms = append(forms, fs...)
	}
	t.Logf("crawled %d pages, %d forms", len(seen), len(forms))
	if len(seen) < 10 || len(forms) < 5 {
		t.Fatalf("the crawl found %d pages and %d forms; the UI links to more", len(seen), len(forms))
	}

	// Hostile query values on every page crawled: each path once, with
	// the query names its links use and the common ones.
	queryNames := map[string]map[string]bool{}
	for p := range seen {
		u, _ := url.Parse(p)
		if queryNames[u.Path] == nil {
			queryNames[u.Path] = map[string]bool{"page": true, "filter": true, "sort": true, "next": true}
		}
		for k := range u.Query() {
			queryNames[u.Path][k] = true
		}
	}
	paths := make([]string, 0, len(queryNames))
	for p := range queryNames {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		for name := range queryNames[p] {
			for _, h := range hostile {
				fetch(http.MethodGet, p+"?"+url.Values{name: {h}}.Encode(), nil)
			}
		}
	}

	// Every form, with hostile values one field at a time; forms that
	// delete go last, so the others find what they name. The page's
	// CSRF token (the session's) goes with each.
	sort.SliceStable(forms, func(i, j int) bool {
		return !strings.Contains(forms[i].action, "delete") && strings.Contains(forms[j].action, "delete")
	})
	done := map[string]bool{}
	for _, f := range forms {
		// One repository's forms stand for the others' of the same shape.
		key := repoSegment.ReplaceAllString(f.action, "/repository/R/") + "?" + strings.Join(f.editable, ",")
		if done[key] {
			continue
		}
		done[key] = true
		for _, field := range f.editable {
			for _, h := range hostile {
				v := url.Values{}
				for k, x := range f.fields {
					v[k] = x
				}
				v.Set(field, h)
				fetch(http.MethodPost, f.action, v)
			}
		}
	}
	t.Logf("%d requests, %d failed; by status %v", requests, fails, statuses)
	if status, _ := b.get("/repository"); status != http.StatusOK {
		t.Fatalf("after the hostile input: GET /repository %d", status)
	}
}

// parsePage finds a page's same-origin links and its POST forms.
func parsePage(t *testing.T, page, body string) (links []string, forms []webForm) {
	t.Helper()
	doc, err := html.Parse(strings.NewReader(body))
	if err != nil {
		t.Fatalf("%s: %v", page, err)
	}
	resolve := func(ref string) (string, bool) {
		base, _ := url.Parse(page)
		u, err := base.Parse(ref)
		if err != nil || u.Host != "" || u.Scheme != "" {
			return "", false
		}
		u.Fragment = ""
		return u.RequestURI(), true
	}
	var cur *webForm
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			switch n.Data {
			case "a":
				if href, ok := attr(n, "href"); ok {
					if l, ok := resolve(href); ok {
						links = append(links, l)
					}
				}
			case "form":
				method, _ := attr(n, "method")
				action, _ := attr(n, "action")
				if action == "" {
					action = page
				}
				a, ok := resolve(action)
				if strings.EqualFold(method, "post") && ok && a != "/signout" {
					forms = append(forms, webForm{page: page, action: a, fields: url.Values{}})
					cur = &forms[len(forms)-1]
					for c := n.FirstChild; c != nil; c = c.NextSibling {
						walk(c)
					}
					cur = nil
					return
				}
			case "input", "select", "textarea":
				if cur != nil {
					name, _ := attr(n, "name")
					typ, _ := attr(n, "type")
					value, _ := attr(n, "value")
					_, checked := attr(n, "checked")
					if name != "" {
						if typ != "checkbox" && typ != "radio" || checked {
							cur.fields.Add(name, value)
						}
						if typ != "hidden" && typ != "submit" || name != "csrf" && typ == "hidden" {
							cur.editable = append(cur.editable, name)
						}
					}
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	return links, forms
}

var repoSegment = regexp.MustCompile(`^/repository/[^/]+/[^/]+/`)

// attr is an element's attribute, and whether it has it.
func attr(n *html.Node, key string) (string, bool) {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val, true
		}
	}
	return "", false
}
