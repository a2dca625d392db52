package api_test

import (
	"context"
	"net/http"
	"net/url"
	"testing"
)

// TestCrossSiteRequestsChangeNothing: a browser that holds a user's Basic
// credentials for the API (it asked for them on a 401) sends them with
// whatever a page of another site submits. Such a request, told apart by
// its Sec-Fetch-Site or Origin header, is refused with 403 and changes
// nothing, as is a JSON body sent as text/plain or multipart/form-data (a
// form's encodings). Clients that are not browsers (no such headers,
// application/json, none, or curl -d's form type) and the same site's
// pages keep working.
func TestCrossSiteRequestsChangeNothing(t *testing.T) {
	urDialects(t, func(t *testing.T, e *urEnv) {
		repoFixture(t, e)
		host := mustHost(t, e.url)
		const path = "/api/v1/repository/acme/app/changevisibility"
		visibility := func() string {
			t.Helper()
			ri, err := e.db.Repositories().Repository(context.Background(), "acme/app")
			if err != nil {
				t.Fatal(err)
			}
			return ri.Visibility
		}
		public := []byte(`{"visibility":"public"}`)
		for _, tc := range []struct {
			name    string
			method  string
			body    []byte
			headers []string
			status  int
		}{
			// A <form enctype="text/plain"> of another site: its body is
			// name=value unencoded, which can spell a JSON object (here
			// name {"visibility":"x and value ","visibility":"public"}; of
			// a key given twice the decoder keeps the last).
			{"cross-site text/plain form", http.MethodPost, []byte(`{"visibility":"x=","visibility":"public"}`),
				[]string{"Content-Type", "text/plain", "Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example"}, http.StatusForbidden},
			{"cross-site JSON", http.MethodPost, public, []string{"Content-Type", "application/json", "Sec-Fetch-Site", "cross-site"}, http.StatusForbidden},
			{"same site, another origin", http.MethodPost, public, []string{"Content-Type", "application/json", "Sec-Fetch-Site", "same-site"}, http.StatusForbidden},
			// A browser without Sec-Fetch-Site: its Origin decides.
			{"another Origin", http.MethodPost, public, []string{"Content-Type", "application/json", "Origin", "https://evil.example"}, http.StatusForbidden},
			{"cross-site delete", http.MethodDelete, nil, []string{"Sec-Fetch-Site", "cross-site"}, http.StatusForbidden},
			// Without browser headers, a form's encodings are still no
			// JSON body.
			{"text/plain", http.MethodPost, []byte(`{"visibility":"x=","visibility":"public"}`), []string{"Content-Type", "text/plain"}, http.StatusBadRequest},
			{"multipart", http.MethodPost, public, []string{"Content-Type", "multipart/form-data; boundary=x"}, http.StatusBadRequest},
		} {
			p := path
			if tc.method == http.MethodDelete {
				p = "/api/v1/repository/acme/app"
			}
			res, body := e.env.Do("alice", tc.method, p, tc.body, tc.headers...)
			if res.StatusCode != tc.status {
				t.Errorf("%s: %d %s, want %d", tc.name, res.StatusCode, body, tc.status)
			}
			if v := visibility(); v != "private" {
				t.Fatalf("%s: acme/app is %s", tc.name, v)
			}
		}
		if res, body := e.env.Do("alice", http.MethodGet, "/api/v1/repository/acme/app", nil, "Sec-Fetch-Site", "cross-site"); res.StatusCode != http.StatusOK {
			t.Errorf("a cross-site GET (which the browser does not let the page read): %d %s, want 200", res.StatusCode, body)
		}
		for _, tc := range []struct {
			name, visibility string
			headers          []string
		}{
			{"no Content-Type, no browser headers", "public", nil},
			{"curl -d's form type", "private", []string{"Content-Type", "application/x-www-form-urlencoded"}},
			{"JSON from the same origin", "public", []string{"Content-Type", "application/json; charset=utf-8", "Sec-Fetch-Site", "same-origin"}},
			{"Origin of the API's host", "private", []string{"Content-Type", "application/json", "Origin", "http://" + host}},
		} {
			res, body := e.env.Do("alice", http.MethodPost, path, []byte(`{"visibility":"`+tc.visibility+`"}`), tc.headers...)
			if res.StatusCode != http.StatusOK || visibility() != tc.visibility {
				t.Errorf("%s: %d %s, acme/app %s, want 200 and %s", tc.name, res.StatusCode, body, visibility(), tc.visibility)
			}
		}
	})
}

func mustHost(t *testing.T, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}
