package server_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/config"
)

// TestTokenRealmFollowsExternalURL: with externalURL set and auth.realm
// not, the challenge names externalURL's token endpoint, whatever Host
// and scheme the request came with (behind a load balancer that ends TLS,
// the request is plain HTTP: clients were sent to an http:// realm);
// auth.realm, when set, wins.
func TestTokenRealmFollowsExternalURL(t *testing.T) {
	for _, c := range []struct {
		externalURL, realm, want string
	}{
		{"https://registry.example.com", "", `realm="https://registry.example.com/v2/auth"`},
		{"https://registry.example.com/", "https://login.example.com/token", `realm="https://login.example.com/token"`},
		{"", "", `realm="http://registry.internal:5000/v2/auth"`},
	} {
		_, hs, _ := startServer(t, func(cfg *config.Config) {
			cfg.ExternalURL, cfg.Auth.Realm = c.externalURL, c.realm
		})
		req, _ := http.NewRequest("GET", hs.URL+"/v2/", nil)
		req.Host = "registry.internal:5000"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("WWW-Authenticate"); resp.StatusCode != 401 || !strings.Contains(got, c.want) {
			t.Errorf("externalURL %q, auth.realm %q: %d %s, want %s", c.externalURL, c.realm, resp.StatusCode, got, c.want)
		}
	}
}
