package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// The TestRefusals* tests check that every refusal says why, as each real
// client prints it: crane, skopeo and oras, logged in to a token-mode berth
// (startAuthServer: default settings, CREATE_NAMESPACE_ON_PUSH off, no
// notifications.allowedHosts) as the ordinary user alice.

// refusalTools are the clients whose output is checked.
var refusalTools = []string{"crane", "skopeo", "oras"}

// toolSession is a client logged in as one identity.
type toolSession struct {
	tool, host, authfile string
	o                    opts
}

func (s *authServer) session(t *testing.T, tool string, id authIdentity) toolSession {
	t.Helper()
	requireTool(t, tool)
	env, home := clientEnv(t)
	in := opts{Env: env, Stdin: []byte(id.pass)}
	c := toolSession{tool: tool, host: s.host, o: opts{Env: env, Dir: t.TempDir()}}
	switch tool {
	case "crane":
		mustRun(t, in, "crane", "auth", "login", s.host, "-u", id.user, "--password-stdin")
	case "skopeo":
		c.authfile = filepath.Join(home, "auth.json")
		mustRun(t, in, "skopeo", "login", "--tls-verify=false", "--authfile", c.authfile, "-u", id.user, "--password-stdin", s.host)
	case "oras":
		mustRun(t, in, "oras", "login", "--plain-http", "-u", id.user, "--password-stdin", s.host)
	default:
		t.Fatalf("no session for %s", tool)
	}
	return c
}

// push pushes a fresh image (an artifact for oras) to repo:tag.
func (c toolSession) push(t *testing.T, repoTag string) cmdResult {
	t.Helper()
	ref := c.host + "/" + repoTag
	switch c.tool {
	case "crane":
		dir := filepath.Join(t.TempDir(), "layout")
		writeLayout(t, dir, map[string]v1.Image{"v1": newImage(t, true, "linux/amd64")})
		return tryRun(t, c.o, "crane", "push", dir, ref, "--insecure")
	case "skopeo":
		src := filepath.Join(t.TempDir(), "src")
		writeLayout(t, src, map[string]v1.Image{"v1": newImage(t, true, "linux/amd64")})
		return tryRun(t, c.o, "skopeo", "copy", "--authfile", c.authfile, "--dest-tls-verify=false", "oci:"+src+":v1", "docker://"+ref)
	default:
		if err := os.WriteFile(filepath.Join(c.o.Dir, "file.txt"), []byte("pushed at "+time.Now().String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return tryRun(t, c.o, "oras", "push", "--plain-http", "--artifact-type", orasArtifactType, ref, "file.txt:text/plain")
	}
}

// pull reads repo:tag's manifest the way each client pulls (oras: manifest
// fetch, a GET; `oras pull` starts with a HEAD, which carries no reason).
func (c toolSession) pull(t *testing.T, repoTag string) cmdResult {
	t.Helper()
	ref := c.host + "/" + repoTag
	switch c.tool {
	case "crane":
		return tryRun(t, c.o, "crane", "pull", ref, filepath.Join(t.TempDir(), "img.tar"), "--insecure")
	case "skopeo":
		return tryRun(t, c.o, "skopeo", "inspect", "--raw", "--authfile", c.authfile, "--tls-verify=false", "docker://"+ref)
	default:
		return tryRun(t, c.o, "oras", "manifest", "fetch", "--plain-http", ref)
	}
}

// requireSays checks that a command failed and that what it printed holds
// every phrase (case and quotes aside: clients print the spec's code in
// either case, and some quote the server's message).
func requireSays(t *testing.T, what string, r cmdResult, phrases ...string) {
	t.Helper()
	if r.Err == nil {
		t.Fatalf("%s succeeded, want it refused:\nstdout:\n%s\nstderr:\n%s", what, r.Stdout, r.Stderr)
	}
	unquote := strings.NewReplacer(`\"`, "", `"`, "")
	out := strings.ToLower(unquote.Replace(r.Stdout + r.Stderr))
	for _, p := range phrases {
		if !strings.Contains(out, strings.ToLower(unquote.Replace(p))) {
			t.Fatalf("%s was refused, but its output does not say %q:\nstdout:\n%s\nstderr:\n%s", what, p, r.Stdout, r.Stderr)
		}
	}
	t.Logf("%s printed the reason: %s", what, strings.TrimSpace(r.Stderr+r.Stdout))
}

// api calls /api/v1 as id with a JSON body.
func (s *authServer) api(t *testing.T, id *authIdentity, method, path, body string) httpResult {
	t.Helper()
	var b []byte
	if body != "" {
		b = []byte(body)
	}
	r := s.do(t, id, method, path, map[string]string{"Content-Type": "application/json"}, b)
	t.Logf("%s %s %s as %s: HTTP %d %s", method, path, body, idName(id), r.Status, strings.TrimSpace(string(r.Body)))
	return r
}

// TestRefusalsMissingNamespace: the README's first push, into a namespace
// that does not exist, as an ordinary user: every client prints the
// spec's DENIED with "namespace X does not exist (create it, or enable
// CREATE_NAMESPACE_ON_PUSH)" (not a bare 401), and so does a superuser's
// push; nothing is created (no phantom namespace). Once alice creates the
// organization, the same push works.
func TestRefusalsMissingNamespace(t *testing.T) {
	begin(t)
	s := startAuthServer(t)
	const want = "namespace quickstart does not exist (create it, or enable CREATE_NAMESPACE_ON_PUSH)"
	for _, tool := range refusalTools {
		t.Run(tool, func(t *testing.T) {
			c := s.session(t, tool, s.alice)
			requireSays(t, tool+" push into a missing namespace as alice", c.push(t, "quickstart/app:v1"), "denied", want)
		})
	}
	t.Run("superuser", func(t *testing.T) {
		c := s.session(t, "crane", s.admin)
		requireSays(t, "crane push into a missing namespace as the superuser", c.push(t, "quickstart/app:v1"), "DENIED", want)
	})
	// An import into the missing namespace says the same, and creates nothing.
	r := s.api(t, &s.alice, http.MethodPost, "/api/v1/import", `{"source":"registry.example/library/app:v1","repository":"quickstart/imported"}`)
	if !strings.Contains(string(r.Body), want) || r.Status != http.StatusNotFound {
		t.Fatalf("an import into a missing namespace: %s, want 404 saying %q", r, want)
	}
	if tags := s.tags(t, "quickstart/app"); tags != nil {
		t.Fatalf("refused pushes created quickstart/app with tags %v", tags)
	}
	if r := s.api(t, &s.admin, http.MethodGet, "/api/v1/organization/quickstart", ""); r.Status != http.StatusNotFound {
		t.Fatalf("GET /api/v1/organization/quickstart after refused pushes: %s, want 404 (no namespace)", r)
	}
	if r := s.api(t, &s.alice, http.MethodPost, "/api/v1/organization/", `{"name":"quickstart"}`); r.Status != http.StatusCreated {
		t.Fatalf("alice creates the organization: %s", r)
	}
	c := s.session(t, "crane", s.alice)
	if r := c.push(t, "quickstart/app:v1"); r.Err != nil {
		t.Fatalf("crane push into the organization alice created: %v", r.Err)
	}
}

// TestRefusalsRepositoryState: a push to a mirror says it is a mirror, a
// push to a read-only repository says it is read-only, as each client
// prints it, to alice who administers both; nothing changes.
func TestRefusalsRepositoryState(t *testing.T) {
	begin(t)
	s := startAuthServer(t)
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	s.push(t, s.alice, "alice/mirrored:seed", newImage(t, true, "linux/amd64"))
	s.push(t, s.alice, "alice/frozen:seed", newImage(t, true, "linux/amd64"))
	mirror := fmt.Sprintf(`{"is_enabled":true,"external_reference":"127.0.0.1:%d/library/app","sync_interval":3600,`+
		`"root_rule":{"rule_kind":"tag_glob_csv","rule_value":["latest"]},"robot_username":"alice+ci",`+
		`"external_registry_config":{"verify_tls":false}}`, port)
	if r := s.api(t, &s.alice, http.MethodPost, "/api/v1/repository/alice/mirrored/mirror", mirror); r.Status != http.StatusCreated {
		t.Fatalf("alice makes alice/mirrored a mirror: %s", r)
	}
	if r := s.api(t, &s.alice, http.MethodPut, "/api/v1/repository/alice/frozen/changestate", `{"state":"READ_ONLY"}`); r.Status != http.StatusOK {
		t.Fatalf("alice makes alice/frozen read-only: %s", r)
	}
	for _, tool := range refusalTools {
		t.Run(tool, func(t *testing.T) {
			c := s.session(t, tool, s.alice)
			requireSays(t, tool+" push to a mirror", c.push(t, "alice/mirrored:v1"),
				"denied", "alice/mirrored is a mirror (repository state MIRROR): it takes no pushes")
			requireSays(t, tool+" push to a read-only repository", c.push(t, "alice/frozen:v1"),
				"denied", "alice/frozen is read-only (repository state READ_ONLY): it takes no pushes")
		})
	}
	for _, repo := range []string{"alice/mirrored", "alice/frozen"} {
		if tags := s.tags(t, repo); len(tags) != 1 || tags[0] != "seed" {
			t.Fatalf("tags of %s after refused pushes: %v, want [seed]", repo, tags)
		}
	}
}

// TestRefusalsSSRF: targets on the registry's own network are refused by
// the SSRF guard, and every refusal names notifications.allowedHosts and
// the keyword that would allow the target: a webhook (at creation, 400),
// an import source (502), a mirror's upstream (the sync's last_error) and
// a proxy cache's upstream (as crane, skopeo and oras print a pull).
func TestRefusalsSSRF(t *testing.T) {
	begin(t)
	s := startAuthServer(t)
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	up := fmt.Sprintf("127.0.0.1:%d", port) // nothing listens: the guard refuses before connecting
	loopback := []string{"refusing to connect to 127.0.0.1: a loopback address", `add "loopback" to notifications.allowedHosts`,
		`keywords "loopback" and "private"`}
	s.push(t, s.alice, "alice/app:v1", newImage(t, true, "linux/amd64"))
	message := func(r httpResult) string {
		var b struct {
			ErrorMessage string `json:"error_message"`
			Message      string `json:"message"`
		}
		json.Unmarshal(r.Body, &b)
		return b.ErrorMessage + b.Message
	}
	requireMessage := func(what string, r httpResult, status int, phrases ...string) {
		t.Helper()
		if r.Status != status {
			t.Fatalf("%s: %s, want HTTP %d", what, r, status)
		}
		for _, p := range phrases {
			if !strings.Contains(message(r), p) {
				t.Fatalf("%s: %s, want its message to say %q", what, r, p)
			}
		}
	}

	t.Run("webhook", func(t *testing.T) {
		for url, phrases := range map[string][]string{
			"http://" + up + "/hook":  loopback,
			"http://10.11.12.13/hook": {"refusing to connect to 10.11.12.13: a private address", `add "private" to notifications.allowedHosts`},
		} {
			r := s.api(t, &s.alice, http.MethodPost, "/api/v1/repository/alice/app/notification/",
				`{"event":"repo_push","method":"webhook","config":{"url":"`+url+`"}}`)
			requireMessage("a webhook to "+url, r, http.StatusBadRequest, phrases...)
		}
	})
	t.Run("import", func(t *testing.T) {
		r := s.api(t, &s.alice, http.MethodPost, "/api/v1/import",
			`{"source":"`+up+`/library/app:v1","repository":"alice/imported","tags":["v1"],"insecure":true}`)
		requireMessage("an import from "+up, r, http.StatusBadGateway, loopback...)
	})
	t.Run("mirror", func(t *testing.T) {
		s.push(t, s.alice, "alice/mirror:seed", newImage(t, true, "linux/amd64"))
		body := `{"is_enabled":true,"external_reference":"` + up + `/library/app","sync_interval":3600,` +
			`"root_rule":{"rule_kind":"tag_glob_csv","rule_value":["latest"]},"robot_username":"alice+ci",` +
			`"external_registry_config":{"verify_tls":false}}`
		if r := s.api(t, &s.alice, http.MethodPost, "/api/v1/repository/alice/mirror/mirror", body); r.Status != http.StatusCreated {
			t.Fatalf("create the mirror: %s", r)
		}
		s.api(t, &s.alice, http.MethodPost, "/api/v1/repository/alice/mirror/mirror/sync-now", "")
		deadline := time.Now().Add(time.Minute)
		for {
			r := s.do(t, &s.alice, http.MethodGet, "/api/v1/repository/alice/mirror/mirror", nil, nil)
			var m struct {
				SyncStatus string `json:"sync_status"`
				LastError  string `json:"last_error"`
			}
			json.Unmarshal(r.Body, &m)
			if m.SyncStatus == "FAIL" {
				for _, p := range loopback {
					if !strings.Contains(m.LastError, p) {
						t.Fatalf("the failed sync's last_error %q does not say %q", m.LastError, p)
					}
				}
				t.Logf("the mirror's last_error: %s", m.LastError)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the mirror of %s did not fail within a minute: %s", up, r)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
	t.Run("proxy-cache", func(t *testing.T) {
		if r := s.api(t, &s.alice, http.MethodPost, "/api/v1/organization/", `{"name":"hubcache"}`); r.Status != http.StatusCreated {
			t.Fatalf("create the proxy organization: %s", r)
		}
		if r := s.api(t, &s.alice, http.MethodPost, "/api/v1/organization/hubcache/proxycache",
			`{"upstream_registry":"`+up+`","insecure":true}`); r.Status != http.StatusCreated {
			t.Fatalf("configure the proxy cache: %s", r)
		}
		for _, tool := range refusalTools {
			t.Run(tool, func(t *testing.T) {
				c := s.session(t, tool, s.alice)
				requireSays(t, tool+" pull through a proxy cache of "+up, c.pull(t, "hubcache/library/app:v1"),
					append([]string{"denied", "the proxy cache's upstream registry is not allowed"}, loopback...)...)
			})
		}
	})
}
