package authz_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/berth-dev/berth/internal/authz"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestUnstorableUsername: a user name with a NUL byte or invalid UTF-8 is
// refused as bad credentials (401), on /v2 and at the token endpoint, and
// never reaches the database (PostgreSQL answered 500).
func TestUnstorableUsername(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, dialect, authz.Options{CreatePrivateRepoOnPush: true})
			for _, name := range []string{"ali\x00ce", "\xff\xfe"} {
				for _, u := range []string{e.url + "/v2/", e.url + authz.TokenPath + "?" + url.Values{"service": {"berth"}}.Encode()} {
					req, _ := http.NewRequest("GET", u, nil)
					req.SetBasicAuth(name, alicePW)
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					resp.Body.Close()
					if resp.StatusCode != http.StatusUnauthorized {
						t.Fatalf("GET %s as %q: %d, want 401", u, name, resp.StatusCode)
					}
				}
			}
		})
	}
}
