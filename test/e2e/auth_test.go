package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// The TestAuth* tests run against a berth of their own in token mode (the
// default: no --auth flag), with accounts made beforehand by `berth admin`
// on its data directory: a superuser admin, users alice and bob, a robot
// alice+ci and an access token ci-token scoped to alice/ci/*. Each test
// starts its own server, so that the throttling of failed logins and the
// repositories of one test do not leak into another.

// authIdentity is a name and secret to log in with.
type authIdentity struct {
	kind, user, pass string
}

type authServer struct {
	bin, dataDir, host, logPath string
	cmd                         *exec.Cmd
	done                        chan struct{}

	realm, service                  string
	admin, alice, bob, robot, token authIdentity
	// bobDigest is the manifest bob pushed to bob/private:v1.
	bobDigest string
	// secrets holds every secret handed out or tried; none may reach the log.
	secrets map[string]string
	// env is added to the server's environment (settings of one test).
	env []string
}

// newSecret is a random secret, registered so that the log check looks
// for it.
func (s *authServer) newSecret(t *testing.T, what, prefix string) string {
	t.Helper()
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	v := prefix + hex.EncodeToString(b)
	s.secrets[what] = v
	return v
}

// berthEnv is the environment of berth commands: no BERTH_* setting of the
// machine (or of the e2e harness) changes the server under test.
func berthEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BERTH_") {
			env = append(env, kv)
		}
	}
	return env
}

// runAdmin runs `berth admin ARGS --data-dir DIR` and returns its stdout,
// which is not logged: it may hold a secret.
func (s *authServer) runAdmin(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	args = append(append([]string{"admin"}, args...), "--data-dir", s.dataDir)
	cmd := exec.Command(s.bin, args...)
	cmd.Env = berthEnv()
	cmd.Dir = filepath.Dir(s.logPath)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	t.Logf("$ berth %s  [%s]", strings.Join(args, " "), exitText(err))
	if err != nil {
		t.Fatalf("berth %s: %v\nstderr:\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

// printedField finds "KEY: VALUE" in the output of berth admin.
func printedField(t *testing.T, out, key string) string {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), key+": "); ok && v != "" {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("berth admin printed no %q line (%d bytes of output)", key+":", len(out))
	return ""
}

// startAuthServer makes the accounts with `berth admin` on a fresh data
// directory, starts berth in token mode on it and has bob push
// bob/private:v1. The server stops when the test ends, and its log is then
// searched for every secret.
func startAuthServer(t *testing.T) *authServer {
	t.Helper()
	return startAuthServerBin(t, filepath.Join(runDir, "berth"))
}

// startAuthServerBin is startAuthServer with another build of berth (the
// memory tests measure a build without the race detector).
func startAuthServerBin(t *testing.T, bin string, env ...string) *authServer {
	t.Helper()
	if os.Getenv("BERTH_E2E_REGISTRY") != "" {
		t.Skip("the auth tests start their own berth in token mode; skipped with BERTH_E2E_REGISTRY")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("berth binary: %v", err)
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	s := &authServer{bin: bin, dataDir: t.TempDir(), host: fmt.Sprintf("127.0.0.1:%d", port),
		logPath: filepath.Join(t.TempDir(), "berth.log"), secrets: map[string]string{}, env: env}
	s.admin = authIdentity{"superuser", "admin", s.newSecret(t, "admin's password", "admin-pw-")}
	s.alice = authIdentity{"user", "alice", s.newSecret(t, "alice's password", "alice-pw-")}
	s.bob = authIdentity{"user", "bob", s.newSecret(t, "bob's password", "bob-pw-")}
	s.runAdmin(t, s.admin.pass+"\n", "user", "create", "admin", "--password-stdin", "--superuser")
	s.runAdmin(t, s.alice.pass+"\n", "user", "create", "alice", "--password-stdin")
	s.runAdmin(t, s.bob.pass+"\n", "user", "create", "bob", "--password-stdin")
	s.robot = authIdentity{"robot", "alice+ci", printedField(t, s.runAdmin(t, "", "robot", "create", "alice+ci"), "token")}
	s.secrets["the robot token of alice+ci"] = s.robot.pass
	s.token = authIdentity{"token", "ci-token", printedField(t,
		s.runAdmin(t, "", "token", "create", "ci-token", "--scope", "alice/ci/*=content/read,content/write"), "secret")}
	s.secrets["the secret of access token ci-token"] = s.token.pass
	s.start(t)

	img := newImage(t, true, "linux/amd64")
	s.push(t, s.bob, "bob/private:v1", img)
	s.bobDigest = digestOf(t, img)
	return s
}

func (s *authServer) start(t *testing.T) {
	t.Helper()
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	// No --auth flag: token mode is the default.
	s.cmd = exec.Command(s.bin, "serve", "--addr", s.host, "--data-dir", s.dataDir, "--log-level", "debug")
	s.cmd.Env = append(berthEnv(), s.env...)
	s.cmd.Dir = filepath.Dir(s.logPath)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	t.Logf("started %s", strings.Join(s.cmd.Args, " "))
	s.done = make(chan struct{})
	go func() { s.cmd.Wait(); logf.Close(); close(s.done) }()
	t.Cleanup(func() {
		s.stop()
		s.checkLog(t)
	})

	deadline := time.Now().Add(30 * time.Second)
	client := http.Client{Timeout: 5 * time.Second}
	for {
		select {
		case <-s.done:
			t.Fatalf("berth exited before it became ready")
		default:
		}
		resp, err := client.Get("http://" + s.host + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("berth not ready after 30s: GET /healthz: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Token mode: an anonymous GET /v2/ is challenged to the token endpoint.
	r := s.do(t, nil, http.MethodGet, "/v2/", nil, nil)
	ch := parseChallenge(r.Header.Get("WWW-Authenticate"))
	if r.Status != http.StatusUnauthorized || ch["scheme"] != "Bearer" {
		t.Fatalf("berth started without --auth is not in token mode: anonymous GET /v2/: %s, WWW-Authenticate %q",
			r, r.Header.Get("WWW-Authenticate"))
	}
	s.realm, s.service = ch["realm"], ch["service"]
	if want := "http://" + s.host + "/v2/auth"; s.realm != want || s.service == "" {
		t.Fatalf("GET /v2/ challenge %q: realm %q (want %q), service %q", r.Header.Get("WWW-Authenticate"), s.realm, want, s.service)
	}
}

func (s *authServer) stop() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// checkLog fails the test when any secret, or a Basic Authorization
// header made of one, is in the server's log; the end of the log is shown
// when the test failed.
func (s *authServer) checkLog(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		t.Errorf("berth log: %v", err)
		return
	}
	for what, secret := range s.secrets {
		if bytes.Contains(b, []byte(secret)) {
			t.Errorf("the berth log %s contains %s", s.logPath, what)
		}
	}
	for _, id := range []authIdentity{s.admin, s.alice, s.bob, s.robot, s.token} {
		if basic := base64.StdEncoding.EncodeToString([]byte(id.user + ":" + id.pass)); bytes.Contains(b, []byte(basic)) {
			t.Errorf("the berth log %s contains the Basic credentials of %s", s.logPath, id.user)
		}
	}
	if bytes.Contains(b, []byte("WARNING: DATA RACE")) {
		t.Errorf("the race detector found a data race in the berth of this test (log %s)", s.logPath)
	}
	if t.Failed() {
		const max = 48 << 10
		if len(b) > max {
			b = append([]byte("...(cut)...\n"), b[len(b)-max:]...)
		}
		t.Logf("---- berth log (%s) ----\n%s\n---- end of berth log ----", s.logPath, b)
	}
}

// do sends one request to the server, with Basic credentials when id is
// not nil.
func (s *authServer) do(t *testing.T, id *authIdentity, method, path string, header map[string]string, body []byte) httpResult {
	t.Helper()
	if id == nil {
		return hostDo(t, s.host, "", "", method, path, header, body)
	}
	return hostDo(t, s.host, id.user, id.pass, method, path, header, body)
}

func bearer(tok string) map[string]string {
	return map[string]string{"Authorization": "Bearer " + tok, "Accept": acceptAll}
}

var challengeParam = regexp.MustCompile(`([a-z_]+)="([^"]*)"`)

// parseChallenge reads `Scheme k="v",k="v"` into a map, the scheme under
// "scheme".
func parseChallenge(h string) map[string]string {
	scheme, rest, _ := strings.Cut(h, " ")
	m := map[string]string{"scheme": scheme}
	for _, p := range challengeParam.FindAllStringSubmatch(rest, -1) {
		m[p[1]] = p[2]
	}
	return m
}

// errorCodes are the codes of a distribution-spec error body.
func errorCodes(body []byte) []string {
	var e struct {
		Errors []struct{ Code string } `json:"errors"`
	}
	json.Unmarshal(body, &e)
	var codes []string
	for _, x := range e.Errors {
		codes = append(codes, x.Code)
	}
	return codes
}

// requireStatusCode checks an answer's status and its error code.
func requireStatusCode(t *testing.T, what string, r httpResult, status int, code string) {
	t.Helper()
	if r.Status != status || !slices.Contains(errorCodes(r.Body), code) {
		t.Fatalf("%s: %s, WWW-Authenticate %q; want HTTP %d with error code %s", what, r, r.Header.Get("WWW-Authenticate"), status, code)
	}
}

type tokenAccess struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// registryToken asks the token endpoint for a token (as id, or
// anonymously) and returns it with the access it grants.
func (s *authServer) registryToken(t *testing.T, id *authIdentity, scopes ...string) (string, []tokenAccess) {
	t.Helper()
	q := url.Values{"service": {s.service}}
	for _, sc := range scopes {
		q.Add("scope", sc)
	}
	path := "/v2/auth?" + q.Encode()
	r := s.do(t, id, http.MethodGet, path, nil, nil)
	var tr struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &tr) != nil || tr.Token == "" {
		t.Fatalf("GET %s as %s: %s, want 200 with a token", path, idName(id), r)
	}
	parts := strings.Split(tr.Token, ".")
	if len(parts) != 3 {
		t.Fatalf("GET %s: the token is not a JWT", path)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	var claims struct {
		Access []tokenAccess `json:"access"`
	}
	if err != nil || json.Unmarshal(payload, &claims) != nil {
		t.Fatalf("GET %s: cannot read the JWT claims (%v): %s", path, err, payload)
	}
	return tr.Token, claims.Access
}

// granted lists the actions a token grants on a repository.
func granted(access []tokenAccess, repo string) []string {
	var acts []string
	for _, a := range access {
		if a.Type == "repository" && a.Name == repo {
			acts = append(acts, a.Actions...)
		}
	}
	slices.Sort(acts)
	return acts
}

func idName(id *authIdentity) string {
	if id == nil {
		return "anonymous"
	}
	return id.user
}

// push writes an image with go-containerregistry's client, logged in as id
// (the Docker token flow with Basic credentials).
func (s *authServer) push(t *testing.T, id authIdentity, repoTag string, img v1.Image) {
	t.Helper()
	ref, err := name.ParseReference(s.host+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithAuth(&authn.Basic{Username: id.user, Password: id.pass})); err != nil {
		t.Fatalf("push %s as %s: %v", repoTag, id.user, err)
	}
}

// tags lists a repository's tags as the superuser; nil when it does not
// exist.
func (s *authServer) tags(t *testing.T, repo string) []string {
	t.Helper()
	r := s.do(t, &s.admin, http.MethodGet, "/v2/"+repo+"/tags/list", nil, nil)
	if r.Status == http.StatusNotFound {
		return nil
	}
	var tl struct{ Tags []string }
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &tl) != nil {
		t.Fatalf("GET /v2/%s/tags/list as admin: %s", repo, r)
	}
	slices.Sort(tl.Tags)
	return tl.Tags
}

// manifest fetches a manifest as the superuser and checks it has the
// digest.
func (s *authServer) manifest(t *testing.T, repo, ref, digest string) []byte {
	t.Helper()
	r := s.do(t, &s.admin, http.MethodGet, "/v2/"+repo+"/manifests/"+ref, map[string]string{"Accept": acceptAll}, nil)
	if r.Status != http.StatusOK || sha256Digest(r.Body) != digest {
		t.Fatalf("GET /v2/%s/manifests/%s as admin: %s (body digest %s), want the manifest %s", repo, ref, r, sha256Digest(r.Body), digest)
	}
	return r.Body
}

// quayAPI calls /api/v1 as alice with a JSON body and fails the test,
// naming the endpoint, when it is missing.
func (s *authServer) quayAPI(t *testing.T, method, path, body, purpose string) {
	t.Helper()
	r := s.do(t, &s.alice, method, path, map[string]string{"Content-Type": "application/json"}, []byte(body))
	t.Logf("%s %s %s as alice: HTTP %d %s", method, path, body, r.Status, bytes.TrimSpace(r.Body))
	switch {
	case r.Status == http.StatusNotFound || r.Status == http.StatusMethodNotAllowed:
		t.Fatalf("the Quay API endpoint %s %s is missing (%s): it is needed to %s", method, path, r, purpose)
	case r.Status/100 != 2:
		t.Fatalf("%s %s %s as alice: %s, want 200 (to %s)", method, path, body, r, purpose)
	}
}

// grantRobot gives alice+ci write access to one of alice's repositories:
// a robot has no rights by itself. Alice creates the repository by pushing
// to it, then grants the robot the write role with Quay's API.
func (s *authServer) grantRobot(t *testing.T, repo string) {
	t.Helper()
	if s.tags(t, repo) == nil {
		s.push(t, s.alice, repo+":seed", newImage(t, true, "linux/amd64"))
	}
	s.quayAPI(t, http.MethodPut, "/api/v1/repository/"+repo+"/permissions/user/"+s.robot.user, `{"role":"write"}`,
		"let alice grant her robot "+s.robot.user+" write access to "+repo)
}

// makePublic has alice make one of her repositories public.
func (s *authServer) makePublic(t *testing.T, repo string) {
	t.Helper()
	s.quayAPI(t, http.MethodPost, "/api/v1/repository/"+repo+"/changevisibility", `{"visibility":"public"}`,
		"let alice make "+repo+" public")
}

var refusalText = regexp.MustCompile(`(?i)\b(unauthorized|denied)\b`)

// requireRefused checks that a tool failed and that its output names the
// spec's error code (UNAUTHORIZED or DENIED).
func requireRefused(t *testing.T, what string, r cmdResult) {
	t.Helper()
	if r.Err == nil {
		t.Fatalf("%s succeeded, want it refused:\nstdout:\n%s\nstderr:\n%s", what, r.Stdout, r.Stderr)
	}
	if !refusalText.MatchString(r.Stdout + r.Stderr) {
		t.Fatalf("%s failed, but its output names neither UNAUTHORIZED nor DENIED:\nstdout:\n%s\nstderr:\n%s", what, r.Stdout, r.Stderr)
	}
}

// loginRefusal is how clients report a 401 at login: the code, the
// status, or (skopeo and podman, which map 401 to it) "invalid
// username/password".
var loginRefusal = regexp.MustCompile(`(?i)\bunauthorized\b|\b401\b|invalid username/password`)

// requireLoginRefused checks that a login failed because of a 401.
func requireLoginRefused(t *testing.T, what string, r cmdResult) {
	t.Helper()
	if r.Err == nil {
		t.Fatalf("%s succeeded, want it refused:\nstdout:\n%s\nstderr:\n%s", what, r.Stdout, r.Stderr)
	}
	if !loginRefusal.MatchString(r.Stdout + r.Stderr) {
		t.Fatalf("%s failed, but not with 401/UNAUTHORIZED:\nstdout:\n%s\nstderr:\n%s", what, r.Stdout, r.Stderr)
	}
}
