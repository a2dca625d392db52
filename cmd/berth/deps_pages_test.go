package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// TestDepsFollowsNextPage: `berth deps` lists the dependents of every
// page the API answers (next_page), not only the first: a tenant's
// dependent past 1,000 others' is printed. It stops after depsMaxPages
// pages, saying that more may follow (truncated in --json, a note in the
// table). Before, it printed the first page only, and said nothing of
// the rest.
func TestDepsFollowsNextPage(t *testing.T) {
	const dg = "sha256:0000000000000000000000000000000000000000000000000000000000000001"
	var requests atomic.Int64
	endless := false
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case strings.HasSuffix(r.URL.Path, "/bases"):
			fmt.Fprint(w, `{"bases":[]}`)
		case strings.HasSuffix(r.URL.Path, "/dependents"):
			n := requests.Add(1)
			if r.URL.Query().Get("transitive") != "true" {
				t.Errorf("page %d asked without transitive=true: %s", n, r.URL.RawQuery)
			}
			if want := fmt.Sprintf("p%d", n-1); n > 1 && r.URL.Query().Get("next_page") != want {
				t.Errorf("page %d asked with next_page %q, want %q", n, r.URL.Query().Get("next_page"), want)
			}
			page := map[string]any{"dependents": []any{}, "truncated": true, "next_page": fmt.Sprintf("p%d", n)}
			switch {
			case endless:
			case n == 2:
				page["dependents"] = []any{map[string]any{"repository": "team/app", "digest": dg, "tags": []string{"v1"}, "level": 1, "method": "layers"}}
			case n == 3:
				page = map[string]any{"dependents": []any{map[string]any{"repository": "team/tool", "digest": dg, "tags": []string{}, "level": 2, "method": "layers"}}, "truncated": false}
			}
			_ = json.NewEncoder(w).Encode(page)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	ref := host + "/pub/base@" + dg

	out, err := runIn(t, "", "deps", ref, "--insecure", "--json")
	if err != nil {
		t.Fatalf("deps: %v\n%s", err, out)
	}
	var rep depsReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("deps --json: %v\n%s", err, out)
	}
	if len(rep.Dependents) != 2 || rep.Dependents[0].Repository != "team/app" || rep.Dependents[1].Repository != "team/tool" || rep.Truncated {
		t.Fatalf("deps over three pages: %+v, truncated %v; want team/app and team/tool, not truncated", rep.Dependents, rep.Truncated)
	}
	if n := requests.Load(); n != 3 {
		t.Errorf("%d dependents pages asked, want 3", n)
	}

	endless = true
	requests.Store(0)
	out, err = runIn(t, "", "deps", ref, "--insecure", "--json")
	if err != nil {
		t.Fatalf("deps: %v\n%s", err, out)
	}
	rep = depsReport{}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("deps --json: %v\n%s", err, out)
	}
	if n := requests.Load(); n != depsMaxPages || !rep.Truncated {
		t.Errorf("an endless listing: %d pages asked, truncated %v; want %d, truncated", n, rep.Truncated, depsMaxPages)
	}
	requests.Store(0)
	out, err = runIn(t, "", "deps", ref, "--insecure")
	if err != nil {
		t.Fatalf("deps: %v\n%s", err, out)
	}
	if !strings.Contains(out, "more may follow") {
		t.Errorf("the table of a listing cut short does not say so:\n%s", out)
	}
}
