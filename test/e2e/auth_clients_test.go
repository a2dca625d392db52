package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Each client logs in to the token-mode berth of startAuthServer as each
// kind of identity (user alice, robot alice+ci, access token ci-token),
// pushes, pulls and lists, and is refused where the identity has no right.

// clientEnv is a fresh set of client configuration files for one login:
// HOME, the Docker config (crane, oras, cosign), the containers auth file
// (skopeo, podman), helm's registry config and regctl's config. It returns
// the environment to add to toolEnv and the directory.
func clientEnv(t *testing.T) ([]string, string) {
	t.Helper()
	home := t.TempDir()
	files := map[string]string{
		".docker/config.json": "{}\n",
		// skopeo and podman look for a policy under HOME first.
		".config/containers/policy.json": `{"default":[{"type":"insecureAcceptAnything"}]}` + "\n",
	}
	for f, content := range files {
		mkdir(t, filepath.Dir(filepath.Join(home, f)))
		if err := os.WriteFile(filepath.Join(home, f), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return []string{
		"HOME=" + home,
		"DOCKER_CONFIG=" + filepath.Join(home, ".docker"),
		"REGISTRY_AUTH_FILE=" + filepath.Join(home, "auth.json"),
		"HELM_REGISTRY_CONFIG=" + filepath.Join(home, "helm-registry.json"),
		"REGCTL_CONFIG=" + filepath.Join(home, "regctl.json"),
	}, home
}

// requireLoggedIn checks that a client saved credentials of user for host
// in a Docker-style auth file (never printing them).
func requireLoggedIn(t *testing.T, file, host, user string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("the login saved no credentials: %v", err)
	}
	var cfg struct {
		Auths map[string]struct {
			Auth string `json:"auth"`
		} `json:"auths"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	for k, a := range cfg.Auths {
		k = strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(k, "https://"), "http://"), "/")
		dec, _ := base64.StdEncoding.DecodeString(a.Auth)
		if u, _, _ := strings.Cut(string(dec), ":"); k == host && u == user {
			return
		}
	}
	t.Fatalf("%s holds no credentials of %s for %s (%d entries)", file, user, host, len(cfg.Auths))
}

func requireTarballLayers(t *testing.T, tarPath string, img v1.Image) {
	t.Helper()
	pulled, err := tarball.ImageFromPath(tarPath, nil)
	if err != nil {
		t.Fatalf("read pulled tarball: %v", err)
	}
	if got, want := layerDigests(t, pulled), layerDigests(t, img); !slices.Equal(got, want) {
		t.Fatalf("pulled tarball layers %v, want %v", got, want)
	}
}

// authWriter is an identity and a repository it may push to.
type authWriter struct {
	id   authIdentity
	repo string
}

func (s *authServer) writers(tool string) []authWriter {
	return []authWriter{
		{s.alice, "alice/" + tool + "-app"},    // her namespace: a push creates it
		{s.robot, "alice/robotrepo"},           // granted write by alice
		{s.token, "alice/ci/" + tool + "-app"}, // inside the scope alice/ci/*
	}
}

// prepare gives the identity its rights on the repository: the robot gets
// write access through Quay's API.
func (s *authServer) prepare(t *testing.T, w authWriter) {
	t.Helper()
	if w.id.kind == "robot" {
		s.grantRobot(t, w.repo)
	}
}

// authRefusal is a push that must be refused.
type authRefusal struct {
	name string
	id   authIdentity
	repo string
}

func (s *authServer) refusals() []authRefusal {
	return []authRefusal{
		{"user-to-foreign-repository", s.alice, "bob/private"},
		{"token-outside-its-scope", s.token, "alice/other"},
	}
}

// unchanged returns a check that the repository's tags are what they are now.
func (s *authServer) unchanged(t *testing.T, repo string) func() {
	t.Helper()
	before := s.tags(t, repo)
	return func() {
		t.Helper()
		if after := s.tags(t, repo); !slices.Equal(after, before) {
			t.Fatalf("tags of %s changed by a refused push: %v, before %v", repo, after, before)
		}
	}
}

func (s *authServer) hasTag(t *testing.T, repo, tag string) {
	t.Helper()
	if tags := s.tags(t, repo); !slices.Contains(tags, tag) {
		t.Fatalf("tags of %s: %v, want %s among them", repo, tags, tag)
	}
}

func TestAuthCrane(t *testing.T) {
	begin(t)
	requireTool(t, "crane")
	s := startAuthServer(t)
	login := func(t *testing.T, id authIdentity) opts {
		t.Helper()
		env, home := clientEnv(t)
		mustRun(t, opts{Env: env, Stdin: []byte(id.pass)}, "crane", "auth", "login", s.host, "-u", id.user, "--password-stdin")
		requireLoggedIn(t, filepath.Join(home, ".docker", "config.json"), s.host, id.user)
		return opts{Env: env}
	}
	for _, w := range s.writers("crane") {
		t.Run(w.id.kind, func(t *testing.T) {
			o := login(t, w.id)
			s.prepare(t, w)
			img := newImage(t, true, "linux/amd64")
			want := digestOf(t, img)
			dir := filepath.Join(t.TempDir(), "layout")
			writeLayout(t, dir, map[string]v1.Image{"v1": img})
			ref := s.host + "/" + w.repo + ":v1"
			mustRun(t, o, "crane", "push", dir, ref, "--insecure")
			raw := s.manifest(t, w.repo, "v1", want)

			if got := strings.TrimSpace(mustRun(t, o, "crane", "digest", ref, "--insecure")); got != want {
				t.Fatalf("crane digest %s = %s, want %s", ref, got, want)
			}
			if got := mustRun(t, o, "crane", "manifest", ref, "--insecure"); got != string(raw) {
				t.Fatalf("crane manifest returned other bytes:\n%s\nwant:\n%s", got, raw)
			}
			tarPath := filepath.Join(t.TempDir(), "img.tar")
			mustRun(t, o, "crane", "pull", ref, tarPath, "--insecure")
			requireTarballLayers(t, tarPath, img)
			if tags := strings.Fields(mustRun(t, o, "crane", "ls", s.host+"/"+w.repo, "--insecure")); !slices.Contains(tags, "v1") {
				t.Fatalf("crane ls %s = %v, want v1 among them", w.repo, tags)
			}
		})
	}
	for _, rf := range s.refusals() {
		t.Run(rf.name, func(t *testing.T) {
			o := login(t, rf.id)
			check := s.unchanged(t, rf.repo)
			dir := filepath.Join(t.TempDir(), "layout")
			writeLayout(t, dir, map[string]v1.Image{"evil": newImage(t, true, "linux/amd64")})
			requireRefused(t, "crane push as "+rf.id.user+" to "+rf.repo,
				tryRun(t, o, "crane", "push", dir, s.host+"/"+rf.repo+":evil", "--insecure"))
			check()
		})
	}
	t.Run("user-pulls-foreign-private", func(t *testing.T) {
		o := login(t, s.alice)
		ref := s.host + "/bob/private:v1"
		requireRefused(t, "crane manifest of bob/private as alice", tryRun(t, o, "crane", "manifest", ref, "--insecure"))
		requireRefused(t, "crane pull of bob/private as alice", tryRun(t, o, "crane", "pull", ref, filepath.Join(t.TempDir(), "x.tar"), "--insecure"))
	})
}

func TestAuthSkopeo(t *testing.T) {
	begin(t)
	requireTool(t, "skopeo")
	s := startAuthServer(t)
	login := func(t *testing.T, id authIdentity) (opts, string) {
		t.Helper()
		env, home := clientEnv(t)
		authfile := filepath.Join(home, "auth.json")
		mustRun(t, opts{Env: env, Stdin: []byte(id.pass)}, "skopeo", "login", "--tls-verify=false", "--authfile", authfile,
			"-u", id.user, "--password-stdin", s.host)
		requireLoggedIn(t, authfile, s.host, id.user)
		return opts{Env: env}, authfile
	}
	for _, w := range s.writers("skopeo") {
		t.Run(w.id.kind, func(t *testing.T) {
			o, authfile := login(t, w.id)
			s.prepare(t, w)
			img := newImage(t, true, "linux/amd64")
			want := digestOf(t, img)
			rawManifest, _ := img.RawManifest()
			src := filepath.Join(t.TempDir(), "src")
			writeLayout(t, src, map[string]v1.Image{"v1": img})
			ref := "docker://" + s.host + "/" + w.repo + ":v1"
			mustRun(t, o, "skopeo", "copy", "--preserve-digests", "--authfile", authfile, "--dest-tls-verify=false", "oci:"+src+":v1", ref)
			s.manifest(t, w.repo, "v1", want)

			if raw := mustRun(t, o, "skopeo", "inspect", "--raw", "--authfile", authfile, "--tls-verify=false", ref); raw != string(rawManifest) {
				t.Fatalf("skopeo inspect --raw returned other bytes:\n%s\nwant:\n%s", raw, rawManifest)
			}
			var tags struct{ Tags []string }
			out := mustRun(t, o, "skopeo", "list-tags", "--authfile", authfile, "--tls-verify=false", "docker://"+s.host+"/"+w.repo)
			if err := json.Unmarshal([]byte(out), &tags); err != nil || !slices.Contains(tags.Tags, "v1") {
				t.Fatalf("skopeo list-tags (%v): %s, want v1 among them", err, out)
			}
			back := filepath.Join(t.TempDir(), "back")
			mustRun(t, o, "skopeo", "copy", "--authfile", authfile, "--src-tls-verify=false", ref, "oci:"+back+":v1")
			lp, err := layout.FromPath(back)
			if err != nil {
				t.Fatal(err)
			}
			got, err := lp.Image(mustHash(t, want))
			if err != nil {
				t.Fatalf("the layout skopeo copied back has no image %s: %v", want, err)
			}
			if err := validateImage(got); err != nil {
				t.Fatalf("copied-back image: %v", err)
			}
		})
	}
	for _, rf := range s.refusals() {
		t.Run(rf.name, func(t *testing.T) {
			o, authfile := login(t, rf.id)
			check := s.unchanged(t, rf.repo)
			src := filepath.Join(t.TempDir(), "src")
			writeLayout(t, src, map[string]v1.Image{"evil": newImage(t, true, "linux/amd64")})
			requireRefused(t, "skopeo copy as "+rf.id.user+" to "+rf.repo, tryRun(t, o, "skopeo", "copy", "--authfile", authfile,
				"--dest-tls-verify=false", "oci:"+src+":evil", "docker://"+s.host+"/"+rf.repo+":evil"))
			check()
		})
	}
}

func TestAuthRegctl(t *testing.T) {
	begin(t)
	requireTool(t, "regctl")
	s := startAuthServer(t)
	login := func(t *testing.T, id authIdentity) opts {
		t.Helper()
		env, home := clientEnv(t)
		mustRun(t, opts{Env: env}, "regctl", "registry", "set", s.host, "--tls", "disabled", "--skip-check")
		mustRun(t, opts{Env: env, Stdin: []byte(id.pass)}, "regctl", "registry", "login", s.host, "-u", id.user, "--pass-stdin")
		b, err := os.ReadFile(filepath.Join(home, "regctl.json"))
		if err != nil || !bytes.Contains(b, []byte(`"`+id.user+`"`)) {
			t.Fatalf("regctl registry login saved no credentials of %s in REGCTL_CONFIG (%v)", id.user, err)
		}
		return opts{Env: env, Dir: t.TempDir()}
	}
	for _, w := range s.writers("regctl") {
		t.Run(w.id.kind, func(t *testing.T) {
			o := login(t, w.id)
			s.prepare(t, w)
			img := newImage(t, true, "linux/amd64")
			want := digestOf(t, img)
			writeLayout(t, filepath.Join(o.Dir, "src"), map[string]v1.Image{"v1": img})
			ref := s.host + "/" + w.repo + ":v1"
			mustRun(t, o, "regctl", "image", "copy", "ocidir://src:v1", ref)
			raw := s.manifest(t, w.repo, "v1", want)

			if got := strings.TrimSpace(mustRun(t, o, "regctl", "image", "digest", ref)); got != want {
				t.Fatalf("regctl image digest = %s, want %s", got, want)
			}
			if got := mustRun(t, o, "regctl", "manifest", "get", "--format", "raw-body", ref); got != string(raw) {
				t.Fatalf("regctl manifest get returned other bytes:\n%s\nwant:\n%s", got, raw)
			}
			if tags := strings.Fields(mustRun(t, o, "regctl", "tag", "ls", s.host+"/"+w.repo)); !slices.Contains(tags, "v1") {
				t.Fatalf("regctl tag ls = %v, want v1 among them", tags)
			}
			mustRun(t, o, "regctl", "image", "copy", ref, "ocidir://back:v1")
			lp, err := layout.FromPath(filepath.Join(o.Dir, "back"))
			if err != nil {
				t.Fatal(err)
			}
			got, err := lp.Image(mustHash(t, want))
			if err != nil {
				t.Fatalf("the layout regctl copied back has no image %s: %v", want, err)
			}
			if err := validateImage(got); err != nil {
				t.Fatalf("copied-back image: %v", err)
			}
		})
	}
	for _, rf := range s.refusals() {
		t.Run(rf.name, func(t *testing.T) {
			o := login(t, rf.id)
			check := s.unchanged(t, rf.repo)
			writeLayout(t, filepath.Join(o.Dir, "src"), map[string]v1.Image{"evil": newImage(t, true, "linux/amd64")})
			requireRefused(t, "regctl image copy as "+rf.id.user+" to "+rf.repo,
				tryRun(t, o, "regctl", "image", "copy", "ocidir://src:evil", s.host+"/"+rf.repo+":evil"))
			check()
		})
	}
}

func TestAuthOras(t *testing.T) {
	begin(t)
	requireTool(t, "oras")
	s := startAuthServer(t)
	login := func(t *testing.T, id authIdentity) opts {
		t.Helper()
		env, home := clientEnv(t)
		mustRun(t, opts{Env: env, Stdin: []byte(id.pass)}, "oras", "login", "--plain-http", "-u", id.user, "--password-stdin", s.host)
		requireLoggedIn(t, filepath.Join(home, ".docker", "config.json"), s.host, id.user)
		dir := t.TempDir()
		return opts{Env: env, Dir: dir}
	}
	for _, w := range s.writers("oras") {
		t.Run(w.id.kind, func(t *testing.T) {
			o := login(t, w.id)
			s.prepare(t, w)
			content := "pushed by " + w.id.user + " with oras\n"
			if err := os.WriteFile(filepath.Join(o.Dir, "file.txt"), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			ref := s.host + "/" + w.repo + ":v1"
			out := mustRun(t, o, "oras", "push", "--plain-http", "--format", "json", "--artifact-type", orasArtifactType, ref, "file.txt:text/plain")
			var pushed orasDescriptor
			if err := json.Unmarshal([]byte(out), &pushed); err != nil || pushed.Digest == "" {
				t.Fatalf("oras push output (%v):\n%s", err, out)
			}
			body := s.manifest(t, w.repo, "v1", pushed.Digest)
			var man v1.Manifest
			if err := json.Unmarshal(body, &man); err != nil || string(man.ArtifactType) != orasArtifactType || len(man.Layers) != 1 ||
				man.Layers[0].Digest.String() != sha256Digest([]byte(content)) {
				t.Fatalf("pushed artifact manifest: %s", body)
			}
			if raw := mustRun(t, o, "oras", "manifest", "fetch", "--plain-http", ref); raw != string(body) {
				t.Fatalf("oras manifest fetch: %s\nwant: %s", raw, body)
			}
			pulled := mkdir(t, filepath.Join(o.Dir, "out"))
			mustRun(t, o, "oras", "pull", "--plain-http", "-o", pulled, ref)
			if got, err := os.ReadFile(filepath.Join(pulled, "file.txt")); err != nil || string(got) != content {
				t.Fatalf("oras pull: file.txt = %q (%v), want %q", got, err, content)
			}
			if tags := strings.Fields(mustRun(t, o, "oras", "repo", "tags", "--plain-http", s.host+"/"+w.repo)); !slices.Contains(tags, "v1") {
				t.Fatalf("oras repo tags = %v, want v1 among them", tags)
			}
		})
	}
	for _, rf := range s.refusals() {
		t.Run(rf.name, func(t *testing.T) {
			o := login(t, rf.id)
			check := s.unchanged(t, rf.repo)
			if err := os.WriteFile(filepath.Join(o.Dir, "file.txt"), []byte("refused\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			requireRefused(t, "oras push as "+rf.id.user+" to "+rf.repo, tryRun(t, o, "oras", "push", "--plain-http",
				"--artifact-type", orasArtifactType, s.host+"/"+rf.repo+":evil", "file.txt:text/plain"))
			check()
		})
	}
}

var helmDigest = regexp.MustCompile(`Digest: (sha256:[0-9a-f]{64})`)

func TestAuthHelm(t *testing.T) {
	begin(t)
	requireTool(t, "helm")
	s := startAuthServer(t)
	login := func(t *testing.T, id authIdentity) opts {
		t.Helper()
		env, home := clientEnv(t)
		mustRun(t, opts{Env: env, Stdin: []byte(id.pass)}, "helm", "registry", "login", s.host, "--plain-http", "-u", id.user, "--password-stdin")
		requireLoggedIn(t, filepath.Join(home, "helm-registry.json"), s.host, id.user)
		return opts{Env: env, Dir: t.TempDir()}
	}
	// chart packages a chart named after the repository's last component:
	// helm pushes it to <namespace>/<chart name>.
	chart := func(t *testing.T, o opts, repo string) (tgz, base string) {
		t.Helper()
		n := path.Base(repo)
		mustRun(t, o, "helm", "create", n)
		mustRun(t, o, "helm", "package", n)
		return filepath.Join(o.Dir, n+"-0.1.0.tgz"), "oci://" + s.host + "/" + path.Dir(repo)
	}
	for _, w := range s.writers("helm") {
		t.Run(w.id.kind, func(t *testing.T) {
			o := login(t, w.id)
			s.prepare(t, w)
			tgz, base := chart(t, o, w.repo)
			pushed, err := os.ReadFile(tgz)
			if err != nil {
				t.Fatal(err)
			}
			r := tryRun(t, o, "helm", "push", tgz, base, "--plain-http")
			if r.Err != nil {
				t.Fatalf("helm push as %s: %v", w.id.user, r.Err)
			}
			m := helmDigest.FindStringSubmatch(r.Stdout + r.Stderr)
			if m == nil {
				t.Fatalf("helm push printed no digest:\n%s%s", r.Stdout, r.Stderr)
			}
			body := s.manifest(t, w.repo, "0.1.0", m[1])
			var man v1.Manifest
			if err := json.Unmarshal(body, &man); err != nil || len(man.Layers) != 1 || man.Layers[0].Digest.String() != sha256Digest(pushed) {
				t.Fatalf("chart manifest: %s; want one layer %s", body, sha256Digest(pushed))
			}
			out := mkdir(t, filepath.Join(o.Dir, "pulled"))
			mustRun(t, o, "helm", "pull", "oci://"+s.host+"/"+w.repo, "--version", "0.1.0", "--plain-http", "-d", out)
			got, err := os.ReadFile(filepath.Join(out, path.Base(w.repo)+"-0.1.0.tgz"))
			if err != nil || !bytes.Equal(got, pushed) {
				t.Fatalf("pulled chart: %d bytes %s (%v), pushed %d bytes %s", len(got), sha256Digest(got), err, len(pushed), sha256Digest(pushed))
			}
		})
	}
	for _, rf := range s.refusals() {
		t.Run(rf.name, func(t *testing.T) {
			o := login(t, rf.id)
			check := s.unchanged(t, rf.repo)
			tgz, base := chart(t, o, rf.repo)
			requireRefused(t, "helm push as "+rf.id.user+" to "+rf.repo, tryRun(t, o, "helm", "push", tgz, base, "--plain-http"))
			check()
		})
	}
}

func TestAuthCosign(t *testing.T) {
	begin(t)
	requireTool(t, "cosign")
	s := startAuthServer(t)
	keys := cosignKeys(t)
	login := func(t *testing.T, id authIdentity) opts {
		t.Helper()
		env, home := clientEnv(t)
		mustRun(t, opts{Env: env, Stdin: []byte(id.pass)}, "cosign", "login", s.host, "-u", id.user, "--password-stdin")
		requireLoggedIn(t, filepath.Join(home, ".docker", "config.json"), s.host, id.user)
		return opts{Env: env, Dir: keys}
	}
	for _, w := range s.writers("cosign") {
		t.Run(w.id.kind, func(t *testing.T) {
			o := login(t, w.id)
			s.prepare(t, w)
			img := newImage(t, true, "linux/amd64")
			dig := digestOf(t, img)
			s.push(t, w.id, w.repo+":v1", img)
			ref := s.host + "/" + w.repo + "@" + dig
			mustRun(t, o, "cosign", append(append([]string{"sign", "--key", "cosign.key"}, cosignSignFlags...), ref)...)
			s.hasTag(t, w.repo, "sha256-"+strings.TrimPrefix(dig, "sha256:")+".sig")
			out := mustRun(t, o, "cosign", append(append([]string{"verify", "--key", "cosign.pub"}, cosignVerifyFlags...), ref)...)
			checkVerified(t, out, dig)
		})
	}
	for _, rf := range s.refusals() {
		t.Run(rf.name, func(t *testing.T) {
			dig := s.bobDigest
			if rf.repo != "bob/private" { // an image of alice's, outside the token's scope
				img := newImage(t, true, "linux/amd64")
				s.push(t, s.alice, rf.repo+":v1", img)
				dig = digestOf(t, img)
			}
			o := login(t, rf.id)
			check := s.unchanged(t, rf.repo)
			requireRefused(t, "cosign sign as "+rf.id.user+" in "+rf.repo, tryRun(t, o, "cosign",
				append(append([]string{"sign", "--key", "cosign.key"}, cosignSignFlags...), s.host+"/"+rf.repo+"@"+dig)...))
			check()
		})
	}
}

// shortTempDir is a temporary directory with a short path: podman refuses
// a runroot longer than 50 characters, and t.TempDir holds the test name.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "e2e-pm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func TestAuthPodman(t *testing.T) {
	begin(t)
	requireTool(t, "podman")
	s := startAuthServer(t)
	podmanIn := func(t *testing.T, o opts, store string, args ...string) cmdResult {
		t.Helper()
		global := []string{
			"--root", filepath.Join(store, "root"), "--runroot", filepath.Join(store, "runroot"),
			"--tmpdir", filepath.Join(store, "tmp"), "--storage-driver", "vfs",
			"--cgroup-manager=cgroupfs", "--events-backend=file",
		}
		o.Dir = store
		return tryRun(t, o, "podman", append(global, args...)...)
	}
	podman := func(t *testing.T, env []string, store string, args ...string) cmdResult {
		t.Helper()
		return podmanIn(t, opts{Env: env}, store, args...)
	}
	must := func(t *testing.T, r cmdResult) string {
		t.Helper()
		if r.Err != nil {
			t.Fatalf("podman: %v", r.Err)
		}
		return r.Stdout
	}
	// login logs in and loads a new image into a fresh store, as
	// localhost/e2e-auth:v1.
	login := func(t *testing.T, id authIdentity) (env []string, store string) {
		t.Helper()
		env, home := clientEnv(t)
		store = shortTempDir(t)
		must(t, podmanIn(t, opts{Env: env, Stdin: []byte(id.pass)}, store, "login", "--tls-verify=false", "-u", id.user, "--password-stdin", s.host))
		requireLoggedIn(t, filepath.Join(home, "auth.json"), s.host, id.user)
		return env, store
	}
	load := func(t *testing.T, env []string, store string) {
		t.Helper()
		tag, err := name.NewTag("localhost/e2e-auth:v1")
		if err != nil {
			t.Fatal(err)
		}
		tarPath := filepath.Join(store, "img.tar")
		if err := tarball.WriteToFile(tarPath, tag, newImage(t, false, "linux/amd64")); err != nil {
			t.Fatal(err)
		}
		must(t, podman(t, env, store, "load", "-i", tarPath))
	}
	for _, w := range s.writers("podman") {
		t.Run(w.id.kind, func(t *testing.T) {
			env, store := login(t, w.id)
			s.prepare(t, w)
			load(t, env, store)
			digestFile := filepath.Join(store, "digest")
			ref := "docker://" + s.host + "/" + w.repo + ":v1"
			must(t, podman(t, env, store, "push", "--tls-verify=false", "--digestfile", digestFile, "localhost/e2e-auth:v1", ref))
			b, err := os.ReadFile(digestFile)
			if err != nil {
				t.Fatal(err)
			}
			dig := strings.TrimSpace(string(b))
			s.manifest(t, w.repo, "v1", dig)

			// Pulled into an empty store with the same login.
			fresh := shortTempDir(t)
			must(t, podman(t, env, fresh, "pull", "--tls-verify=false", ref))
			if got := strings.TrimSpace(must(t, podman(t, env, fresh, "image", "inspect", "--format", "{{.Digest}}", s.host+"/"+w.repo+":v1"))); got != dig {
				t.Fatalf("pulled image digest %s, want %s", got, dig)
			}
		})
	}
	for _, rf := range s.refusals() {
		t.Run(rf.name, func(t *testing.T) {
			env, store := login(t, rf.id)
			load(t, env, store)
			check := s.unchanged(t, rf.repo)
			requireRefused(t, "podman push as "+rf.id.user+" to "+rf.repo, podman(t, env, store, "push", "--tls-verify=false",
				"localhost/e2e-auth:v1", "docker://"+s.host+"/"+rf.repo+":evil"))
			check()
		})
	}
}
