package testenv_test

import (
	"encoding/json"
	"errors"
	"io"
	stdlog "log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/proxy"
	"github.com/berth-dev/berth/internal/testenv"
)

func ref(t *testing.T, host, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(host+"/"+s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func basic(e *testenv.Env, user string) remote.Option {
	return remote.WithAuth(&authn.Basic{Username: user, Password: e.Secret(user)})
}

func status(err error) int {
	var te *transport.Error
	if errors.As(err, &te) {
		return te.StatusCode
	}
	return 0
}

// TestTokenMode: in token mode the registry sends clients through the
// token endpoint, refuses anonymous pushes, and lets the admin, a user in
// its own namespace and a robot with a permission push; the API knows the
// same accounts.
func TestTokenMode(t *testing.T) {
	testenv.ForDialects(t, testenv.Options{}, func(t *testing.T, e *testenv.Env) {
		if e.Authz == nil || e.Tokens == nil {
			t.Fatal("token mode without an authorizer")
		}
		img, err := random.Image(256, 1)
		if err != nil {
			t.Fatal(err)
		}
		err = remote.Write(ref(t, e.Host, "alice/app:1"), img, remote.WithAuth(authn.Anonymous))
		if status(err) != http.StatusUnauthorized {
			t.Fatalf("anonymous push: %v, want 401", err)
		}
		admin := e.Admin()
		if e.Admin() != admin || e.Secret(admin) == "" {
			t.Fatal("Admin is not one account with a known secret")
		}
		e.User("alice", false)
		if err := remote.Write(ref(t, e.Host, "alice/app:1"), img, basic(e, "alice")); err != nil {
			t.Fatalf("alice pushes to her namespace: %v", err)
		}
		e.Org("acme", "alice")
		robot := e.Robot("acme", "ci")
		if robot.Username != "acme+ci" || !strings.HasPrefix(e.Secret("acme+ci"), "berth_") {
			t.Fatalf("robot %q with secret %q", robot.Username, e.Secret("acme+ci"))
		}
		if err := remote.Write(ref(t, e.Host, "acme/app:1"), img, basic(e, "acme+ci")); status(err) != http.StatusForbidden && status(err) != http.StatusUnauthorized {
			t.Fatalf("robot without a permission pushes: %v, want a refusal", err)
		}
		if err := remote.Write(ref(t, e.Host, "acme/app:1"), img, basic(e, admin)); err != nil {
			t.Fatalf("admin pushes: %v", err)
		}
		if _, err := remote.Image(ref(t, e.Host, "acme/app:1"), basic(e, "alice")); err != nil {
			t.Fatalf("alice, an owner of acme, pulls: %v", err)
		}
		res, body := e.Do("alice", "GET", "/api/v1/user/", nil)
		var me struct{ Username string }
		if res.StatusCode != http.StatusOK || json.Unmarshal(body, &me) != nil || me.Username != "alice" {
			t.Fatalf("GET /api/v1/user/ as alice: %d %s", res.StatusCode, body)
		}
		if res, _ := e.Do("", "GET", "/api/v1/user/", nil); res.StatusCode != http.StatusUnauthorized {
			t.Fatalf("GET /api/v1/user/ anonymously: %d, want 401", res.StatusCode)
		}
		secret := e.AccessToken("reader", admin, []auth.TokenScope{{Repository: "acme/*", Actions: []string{auth.TokenContentRead}}})
		if e.Secret("reader") != secret {
			t.Fatal("the access token's secret is not remembered")
		}
		if _, err := remote.Image(ref(t, e.Host, "acme/app:1"), remote.WithAuth(&authn.Basic{Username: "reader", Password: secret})); err != nil {
			t.Fatalf("pull with a read token: %v", err)
		}
	})
}

// TestOpenMode: with Open, anyone pushes and pulls, and the API treats
// an anonymous caller as a superuser.
func TestOpenMode(t *testing.T) {
	e := testenv.New(t, testenv.Options{Open: true})
	if e.Authz != nil || e.Tokens != nil {
		t.Fatal("open mode with an authorizer")
	}
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	r := ref(t, e.Host, "any/app:1")
	if err := remote.Write(r, img); err != nil {
		t.Fatalf("anonymous push: %v", err)
	}
	if _, err := remote.Image(r); err != nil {
		t.Fatalf("anonymous pull: %v", err)
	}
	if res, body := e.Do("", "GET", "/api/v1/repository/any/app", nil); res.StatusCode != http.StatusOK {
		t.Fatalf("GET the repository anonymously: %d %s", res.StatusCode, body)
	}
}

// TestProxy: with Proxy, an organization configured as a proxy cache
// through the API serves an upstream image it never had pushed.
func TestProxy(t *testing.T) {
	up := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(stdlog.New(io.Discard, "", 0))))
	t.Cleanup(up.Close)
	upHost := strings.TrimPrefix(up.URL, "http://")
	img, err := random.Image(512, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref(t, upHost, "library/app:1"), img); err != nil {
		t.Fatal(err)
	}
	e := testenv.New(t, testenv.Options{Proxy: &proxy.Options{}})
	if e.Proxy == nil {
		t.Fatal("no proxy service")
	}
	e.User("alice", false)
	if res, body := e.Do("alice", "POST", "/api/v1/organization/", []byte(`{"name":"hub"}`), "Content-Type", "application/json"); res.StatusCode != http.StatusCreated {
		t.Fatalf("create organization: %d %s", res.StatusCode, body)
	}
	cfg := `{"upstream_registry":"` + upHost + `","insecure":true}`
	if res, body := e.Do("alice", "POST", "/api/v1/organization/hub/proxycache", []byte(cfg), "Content-Type", "application/json"); res.StatusCode != http.StatusCreated {
		t.Fatalf("configure the proxy cache: %d %s", res.StatusCode, body)
	}
	got, err := remote.Image(ref(t, e.Host, "hub/library/app:1"), basic(e, "alice"))
	if err != nil {
		t.Fatalf("pull through the cache: %v", err)
	}
	want, _ := img.Digest()
	if d, err := got.Digest(); err != nil || d != want {
		t.Fatalf("pulled %v (%v), want %v", d, err, want)
	}
}
