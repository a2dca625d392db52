package scan_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/berth-dev/berth/internal/scan"
	"github.com/berth-dev/berth/internal/scan/index"
)

// TestFetchHidesURLCredentials: credentials in scan.vulndb.baseURL and
// cpeMappingURL (an internal mirror behind basic auth) are sent, but no
// error, result or summary of a fetch carries them: the updater logs
// those every interval and berth admin vulndb fetch prints them. Before,
// a mirror answering 401 put the whole URL, password included, in both.
func TestFetchHidesURLCredentials(t *testing.T) {
	e := newEnv(t, "sqlite", index.Limits{})
	var mu sync.Mutex
	seen := map[string]string{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, _ := r.BasicAuth()
		mu.Lock()
		seen[user] = pass
		mu.Unlock()
		http.Error(w, "who are you?", http.StatusUnauthorized)
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	secrets := []string{"osv-pass-1234", "rh-pass-5678", "osv-user", "rh-user", "@"}
	check := func(what, s string) {
		t.Helper()
		for _, secret := range secrets {
			if strings.Contains(s, secret) {
				t.Errorf("%s carries %q: %s", what, secret, s)
			}
		}
	}

	f := scan.NewFetcher(e.db.VulnDB(), scan.FetchOptions{BaseURL: "http://osv-user:osv-pass-1234@" + host + "/osv",
		CPEMappingURL: "http://rh-user:rh-pass-5678@" + host + "/meta/repository-to-cpe.json", StateDir: t.TempDir()})
	rs, err := f.Fetch(context.Background(), scan.FetchRequest{Ecosystems: []string{"Debian"}, CPEMapping: true})
	if err == nil || len(rs) != 2 {
		t.Fatalf("fetch from a mirror answering 401: %d results, %v", len(rs), err)
	}
	check("the error", err.Error())
	for _, r := range rs {
		if r.Status != scan.FetchFailed || !strings.Contains(r.Error, "401") || !strings.Contains(r.URL, host) {
			t.Fatalf("result %+v: want failed with 401, naming the host", r)
		}
		check("the result's URL", r.URL)
		check("the result's error", r.Error)
		check("the summary", scan.FetchSummary(r))
	}
	if !strings.HasPrefix(rs[0].URL, "http://"+host+"/osv/Debian/all.zip") {
		t.Errorf("result URL %q", rs[0].URL)
	}
	mu.Lock()
	if seen["osv-user"] != "osv-pass-1234" || seen["rh-user"] != "rh-pass-5678" {
		t.Errorf("the credentials were not sent: %v", seen)
	}
	mu.Unlock()

	// Unreachable: the client's own error names the URL too.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	rs, err = scan.NewFetcher(e.db.VulnDB(), scan.FetchOptions{BaseURL: "http://osv-user:osv-pass-1234@" + dead}).
		Fetch(context.Background(), scan.FetchRequest{Ecosystems: []string{"Debian"}})
	if err == nil || len(rs) != 1 || !strings.Contains(rs[0].Error, "unreachable") {
		t.Fatalf("unreachable mirror: %+v %v", rs, err)
	}
	check("the unreachable error", err.Error())
	check("the unreachable result", rs[0].URL+" "+rs[0].Error)
}
