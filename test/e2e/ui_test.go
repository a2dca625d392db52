package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/internal/meta"
)

// uiServer is a berth of the browser test: token mode, webhooks allowed
// on loopback, the advisories of the scan test imported.
type uiServer struct {
	host, dataDir string
	admin         authn.Basic
}

func startUIServer(t *testing.T) *uiServer {
	t.Helper()
	bin := filepath.Join(runDir, "berth")
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	s := &uiServer{host: fmt.Sprintf("127.0.0.1:%d", port), dataDir: t.TempDir(), admin: authn.Basic{Username: "admin", Password: "ui-admin-password"}}
	admin := exec.Command(bin, "admin", "user", "create", "admin", "--password-stdin", "--superuser", "--data-dir", s.dataDir)
	admin.Env, admin.Stdin = berthEnv(), strings.NewReader(s.admin.Password+"\n")
	if out, err := admin.CombinedOutput(); err != nil {
		t.Fatalf("berth admin user create: %v\n%s", err, out)
	}
	p := filepath.Join(t.TempDir(), "advisories.json")
	os.WriteFile(p, []byte("["+osvZlib+"]"), 0o644)
	imp := exec.Command(bin, "admin", "vulndb", "import", p, "--data-dir", s.dataDir)
	imp.Env = berthEnv()
	if out, err := imp.CombinedOutput(); err != nil {
		t.Fatalf("berth admin vulndb import: %v\n%s", err, out)
	}
	logf, err := os.Create(filepath.Join(t.TempDir(), "berth.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "--addr", s.host, "--data-dir", s.dataDir)
	cmd.Env = append(berthEnv(), `BERTH_NOTIFICATIONS_ALLOWED_HOSTS=["loopback"]`)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(os.Interrupt); cmd.Wait(); logf.Close() })
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if resp, err := http.Get("http://" + s.host + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("berth not ready after 30s")
		}
	}
	return s
}

func (s *uiServer) push(t *testing.T, ref string, img v1.Image) string {
	t.Helper()
	r, err := name.ParseReference(s.host+"/"+ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img, remote.WithAuth(&s.admin)); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return digestOf(t, img)
}

func (s *uiServer) api(t *testing.T, method, path string, body any) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(method, "http://"+s.host+path, strings.NewReader(string(b)))
	req.SetBasicAuth(s.admin.Username, s.admin.Password)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		out, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, out)
	}
}

// getJSON GETs an API path as the admin and decodes its answer.
func (s *uiServer) getJSON(t *testing.T, path string, out any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+s.host+path, nil)
	req.SetBasicAuth(s.admin.Username, s.admin.Password)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v", path, resp.StatusCode, err)
	}
}

// artifactDir is where the screenshots go: BERTH_E2E_ARTIFACTS, or a
// directory of the test's.
func artifactDir(t *testing.T) string {
	if d := os.Getenv("BERTH_E2E_ARTIFACTS"); d != "" {
		d = filepath.Join(d, "ui")
		if err := os.MkdirAll(d, 0o755); err == nil {
			return d
		}
	}
	return t.TempDir()
}

// TestUIBrowser drives the web UI in a headless Chromium against a
// served berth with content pushed by go-containerregistry: sign in, find
// a repository, open a tag, see its vulnerabilities and its signature,
// follow the homepage link of a received webhook, delete a tag, and post
// a form without its CSRF token.
func TestUIBrowser(t *testing.T) {
	begin(t)
	chromium := requireTool(t, "chromium")
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	s := startUIServer(t)
	base := "http://" + s.host

	// A webhook on every push to the repository.
	hooks := newHookReceiver(t, "/push")
	repo := "admin/debian"
	seed := s.push(t, repo+":seed", newImage(t, true, "linux/amd64"))
	s.api(t, http.MethodPost, "/api/v1/repository/"+repo+"/notification/", map[string]any{"event": "repo_push", "method": "webhook",
		"title": "ui e2e", "config": map[string]any{"url": hooks.URL + "/push"}})
	// A notification whose receiver answers 500: its deliveries fail from
	// the pushes below on, while the scan runs (see the reset below).
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusInternalServerError) }))
	defer down.Close()
	s.api(t, http.MethodPost, "/api/v1/repository/"+repo+"/notification/", map[string]any{"event": "repo_push", "method": "webhook",
		"title": "down receiver", "config": map[string]any{"url": down.URL + "/hook"}})
	s.api(t, http.MethodPost, "/api/v1/organization/", map[string]any{"name": "uiorg"})

	// The Debian fixture of the scan tests (zlib with DEBIAN-CVE-2026-9001).
	layer, err := tarball.LayerFromFile(filepath.Join(root, "internal/scan/index/testdata/debian-layer.tar.gz"), tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layer)
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	dg := s.push(t, repo+":12", img)
	s.push(t, repo+":old", newImage(t, true, "linux/arm64"))
	// A signature in cosign's tag layout.
	sigLayer := static.NewLayer([]byte(`{"critical":{"image":{"docker-manifest-digest":"`+dg+`"}}}`), "application/vnd.dev.cosign.simplesigning.v1+json")
	sig, _ := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), sigLayer)
	sig = mutate.ConfigMediaType(sig, types.OCIConfigJSON)
	s.push(t, repo+":"+strings.Replace(dg, ":", "-", 1)+".sig", sig)
	d := hooks.next(t, "/push", "repo_push webhook")
	homepage, _ := d.body["homepage"].(string)
	if !strings.HasPrefix(homepage, base+"/repository/"+repo) {
		t.Fatalf("webhook homepage %q, want %s/repository/%s", homepage, base, repo)
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-component-update", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelA()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	shots := artifactDir(t)
	if err := chromedp.Do(ctx); err != nil { // starts the browser, without a timeout
		t.Fatalf("start chromium: %v", err)
	}
	run := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if err := chromedp.Do(sctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	shot := func(file string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG, as the file names say
		if err != nil {
			t.Fatalf("screenshot %s: %v", file, err)
		}
		if err := os.WriteFile(filepath.Join(shots, file), png, 0o644); err != nil {
			t.Fatalf("screenshot %s: %v", file, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("read %s: %v", sel, err)
		}
		return s
	}
	css := func(sel string) chromedp.CSS { return chromedp.CSS(sel) }
	// waitFor waits until sel's text holds want: the page a click leads to
	// when the page before it has the same element.
	waitFor := func(what, sel, want string) {
		t.Helper()
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			got, err := chromedp.Run(sctx, chromedp.Text(chromedp.CSS(sel)))
			cancel()
			if err == nil && strings.Contains(got, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s never showed %q (last %q, %v)", what, sel, want, got, err)
			}
		}
	}

	// Anonymous: the private repository is not listed.
	run("open the listing", chromedp.Navigate(base+"/repository"), chromedp.WaitVisible(css("main")))
	if strings.Contains(text("main"), repo) {
		t.Error("an anonymous visitor sees the private repository")
	}
	run("sign-in form", chromedp.Navigate(base+"/signin"), chromedp.WaitVisible(css("#username")),
		chromedp.SendKeys(css("#username"), "admin"), chromedp.SendKeys(css("#password"), s.admin.Password))
	shot("signin.png")
	run("sign in", chromedp.Submit(css("#password")), chromedp.WaitVisible(css(".who strong")))
	if who := text(".who strong"); who != "admin" {
		t.Fatalf("signed in as %q", who)
	}
	run("search", chromedp.Navigate(base+"/repository"), chromedp.WaitVisible(css("#q")),
		chromedp.SendKeys(css("#q"), "debian"), chromedp.Submit(css("#q")),
		// the page of the search (the listing before it shows the link too)
		chromedp.WaitVisible(css(`#q[value="debian"]`)), chromedp.WaitVisible(css(`a[href="/repository/`+repo+`"]`)))
	shot("repositories.png")
	run("open the repository", chromedp.Click(css(`a[href="/repository/`+repo+`"]`)), chromedp.WaitVisible(css("table.tags")))
	tags := text("table.tags")
	for _, want := range []string{"12", "old", "seed", "signed"} {
		if !strings.Contains(tags, want) {
			t.Errorf("the tags table lacks %q:\n%s", want, tags)
		}
	}
	// The scan is asynchronous: reload until the tag shows its Critical.
	for deadline := time.Now().Add(scanDeadline); !strings.Contains(text("table.tags"), "Critical 1"); {
		if time.Now().After(deadline) {
			t.Fatalf("the tag never showed its Critical vulnerability:\n%s", text("table.tags"))
		}
		time.Sleep(time.Second)
		run("reload", chromedp.Reload(), chromedp.WaitVisible(css("table.tags")))
	}
	shot("tags.png")
	run("open the tag", chromedp.Click(css(`th a[href$="`+dg+`"]`)), chromedp.WaitVisible(css("#vulnerabilities")))
	shot("manifest.png")
	if v := text("#vulnerabilities"); !strings.Contains(v, "DEBIAN-CVE-2026-9001") || !strings.Contains(v, "zlib1g") {
		t.Errorf("the manifest page lacks the vulnerability:\n%s", v)
	}
	if refs := text("table.referrers"); !strings.Contains(refs, "signature") || !strings.Contains(refs, ".sig") {
		t.Errorf("the manifest page lacks the signature:\n%s", refs)
	}
	// Put another tag on the image, then set when it expires: the
	// browser's own datetime-local field, read as UTC.
	addTag := css(`form[action$="/add-tag"] input[name=tag]`)
	run("put a tag on the manifest", chromedp.SendKeys(addTag, "ui-added"), chromedp.Submit(addTag),
		chromedp.WaitVisible(css(`#tags a[href$="?filter=ui-added"]`)))
	expires := css(`form[action$="/tag-expiration"] input[name=tag][value="ui-added"] ~ input[name=expires]`)
	at := time.Now().Add(72 * time.Hour).UTC().Truncate(time.Minute)
	run("set its expiration", chromedp.SetValue(expires, at.Format("2006-01-02T15:04")), chromedp.Submit(expires),
		chromedp.WaitVisible(css(`#tags time`)))
	shot("manifest-tags.png")
	var added struct {
		Tags []struct {
			ManifestDigest string `json:"manifest_digest"`
			EndTS          int64  `json:"end_ts"`
		} `json:"tags"`
	}
	s.getJSON(t, "/api/v1/repository/"+repo+"/tag/?specificTag=ui-added&onlyActiveTags=true", &added)
	if len(added.Tags) != 1 || added.Tags[0].ManifestDigest != dg || added.Tags[0].EndTS != at.Unix() {
		t.Errorf("the tag put on through the page: %+v, want %s expiring at %d", added.Tags, dg, at.Unix())
	}

	// The homepage link of the webhook lands on the repository's page.
	run("follow the webhook's homepage", chromedp.Navigate(homepage), chromedp.WaitVisible(css("h1")))
	if h := text("h1"); !strings.Contains(h, repo) {
		t.Errorf("homepage %s shows %q", homepage, h)
	}
	run("activity", chromedp.Navigate(base+"/repository/"+repo+"/activity"), chromedp.WaitVisible(css("main")))
	shot("activity.png")
	if a := text("main"); !strings.Contains(a, "ui e2e") {
		t.Errorf("the activity page lacks the notification:\n%s", a)
	}

	// A form posted without its CSRF token is refused and deletes nothing.
	run("open the tags", chromedp.Navigate(base+"/repository/"+repo), chromedp.WaitVisible(css("table.tags")),
		chromedp.Click(css(`input[value="old"]`)))
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.querySelector('#del input[name=csrf]').remove(), true`)); err != nil {
		t.Fatal(err)
	}
	run("post without the token", chromedp.Click(css(`button[form="del"]`)))
	waitFor("post without the token", "h1", "403")
	// Delete a tag.
	run("delete a tag", chromedp.Navigate(base+"/repository/"+repo), chromedp.WaitVisible(css("table.tags")),
		chromedp.Click(css(`input[value="old"]`)), chromedp.Click(css(`button[form="del"]`)))
	waitFor("delete a tag", "main h1", "Deleting tags")
	shot("deleted.png")
	if out := text("main table"); !strings.Contains(out, "old") || !strings.Contains(out, "deleted") {
		t.Errorf("delete outcome: %s", out)
	}
	run("tags after", chromedp.Navigate(base+"/repository/"+repo), chromedp.WaitVisible(css("table.tags")))
	if strings.Contains(text("table.tags tbody"), "old") {
		t.Error("the deleted tag is still listed")
	}
	// Put it back from the activity page, then delete it again.
	restore := css(`#deleted-tags form input[name=tag][value="old"] ~ button`)
	run("deleted tags", chromedp.Navigate(base+"/repository/"+repo+"/activity"), chromedp.WaitVisible(restore))
	run("restore a tag", chromedp.Click(restore), chromedp.WaitNotPresent(restore))
	run("tags restored", chromedp.Navigate(base+"/repository/"+repo), chromedp.WaitVisible(css("table.tags")))
	if !strings.Contains(text("table.tags tbody"), "old") {
		t.Error("the restored tag is not listed")
	}
	run("delete it again", chromedp.Click(css(`input[value="old"]`)), chromedp.Click(css(`button[form="del"]`)))
	waitFor("delete it again", "main h1", "Deleting tags")

	// Reset the notification its receiver's failures disabled. The first
	// failure is real: the receiver answers 500 and the fifth attempt of
	// an event counts one (meta.NotifyTries). The events of one
	// notification and repository are delivered in order, so the next
	// failures would take minutes of doubling backoff; they are counted
	// through the store call the delivery worker makes
	// (NotificationFailed), on the running server's database.
	var notes struct {
		Notifications []struct {
			UUID     string `json:"uuid"`
			Title    string `json:"title"`
			Failures int    `json:"number_of_failures"`
			Disabled bool   `json:"disabled"`
		} `json:"notifications"`
	}
	downUUID := ""
	for deadline := time.Now().Add(2 * time.Minute); downUUID == ""; time.Sleep(time.Second) {
		if time.Now().After(deadline) {
			t.Fatal("the failing receiver's notification counted no failure in 2 minutes")
		}
		s.getJSON(t, "/api/v1/repository/"+repo+"/notification/", &notes)
		for _, n := range notes.Notifications {
			if n.Title == "down receiver" && n.Failures >= 1 {
				downUUID = n.UUID
			}
		}
	}
	db, err := meta.Open(context.Background(), filepath.Join(s.dataDir, "berth.db"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := db.Notifications().NotificationByUUID(context.Background(), meta.ScopeRepository, repo, downUUID)
	for err == nil && !n.Disabled() {
		n, err = db.Notifications().NotificationFailed(context.Background(), n.ID, meta.NotificationFailure{Reason: "HTTP 500 from the receiver"})
	}
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	resetBtn := css(`form[action$="/notification/` + downUUID + `/reset"] button`)
	run("activity with a disabled notification", chromedp.Navigate(base+"/repository/"+repo+"/activity"), chromedp.WaitVisible(resetBtn))
	shot("activity-disabled.png")
	run("reset it", chromedp.Click(resetBtn), chromedp.WaitNotPresent(resetBtn))
	s.getJSON(t, "/api/v1/repository/"+repo+"/notification/", &notes)
	for _, n := range notes.Notifications {
		if n.UUID == downUUID && n.Disabled {
			t.Error("the notification is still disabled after the reset")
		}
	}

	// Organization page: create a robot; its token is shown once.
	// A superuser finds every organization on the admin page.
	run("organization", chromedp.Navigate(base+"/admin"), chromedp.WaitVisible(css(`a[href="/organization/uiorg"]`)),
		chromedp.Click(css(`a[href="/organization/uiorg"]`)), chromedp.WaitVisible(css(`form[action$="/robots/create"]`)))
	shot("organization.png")
	run("create a robot", chromedp.SendKeys(css(`form[action$="/robots/create"] input[name=name]`), "deploy"),
		chromedp.Submit(css(`form[action$="/robots/create"] input[name=name]`)), chromedp.WaitVisible(css("#secret")))
	token := text("#secret")
	if !strings.HasPrefix(token, "berth_") {
		t.Errorf("the robot's token shown is %q", token)
	}
	req, _ := http.NewRequest(http.MethodGet, base+"/v2/", nil)
	req.SetBasicAuth("uiorg+deploy", token)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("the robot's token does not sign in to /v2/: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	run("organization again", chromedp.Navigate(base+"/organization/uiorg"), chromedp.WaitVisible(css("main")))
	if m := text("main"); !strings.Contains(m, "uiorg+deploy") || strings.Contains(m, token) {
		t.Errorf("the organization page lists the robot %v, shows its token again %v", strings.Contains(m, "uiorg+deploy"), strings.Contains(m, token))
	}

	// Settings: make the repository public; an anonymous visitor then sees it.
	// Reached as an admin does: the link on the repository's page.
	run("settings", chromedp.Navigate(base+"/repository/"+repo), chromedp.WaitVisible(css(`a[href="/repository/`+repo+`/settings"]`)),
		chromedp.Click(css(`a[href="/repository/`+repo+`/settings"]`)), chromedp.WaitVisible(css("#toggle-visibility")))
	shot("settings.png")
	if v := text("#visibility-now"); v != "private" {
		t.Fatalf("visibility shown %q", v)
	}
	// The page after the change offers the opposite: "make private".
	run("make public", chromedp.Click(css("#toggle-visibility")), chromedp.WaitReady(css(`form[action$="/settings/visibility"] input[value="private"]`)))
	if v := text("#visibility-now"); v != "public" {
		t.Errorf("after the change the visibility shown is %q", v)
	}
	if resp, err := http.Get(base + "/repository/" + repo); err != nil || resp.StatusCode != 200 {
		t.Errorf("anonymous visitor on the repository made public: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	run("admin", chromedp.Navigate(base+"/admin"), chromedp.WaitVisible(css("main h1")))
	shot("admin.png")
	if a := text("main"); !strings.Contains(a, "Debian") || !strings.Contains(a, "Job queues") {
		t.Errorf("the admin page lacks the vulnerability database or the queues:\n%s", a)
	}
	// A user created on the admin page signs in with the password shown
	// once; disabled there, it no longer does.
	newUser := css(`form[action="/admin/users/create"] input[name=username]`)
	run("create a user", chromedp.SendKeys(newUser, "uiuser"), chromedp.Submit(newUser), chromedp.WaitVisible(css("#secret")))
	password := text("#secret")
	v2 := func() int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+"/v2/", nil)
		req.SetBasicAuth("uiuser", password)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := v2(); st != 200 {
		t.Errorf("the new user's password on /v2/: %d", st)
	}
	disable := css(`form[action="/admin/users/uiuser/disable"] button`)
	run("disable the user", chromedp.Navigate(base+"/admin"), chromedp.WaitVisible(disable),
		chromedp.SendKeys(css(`form[action="/admin/users/uiuser/disable"] input[name=confirm]`), "uiuser"), chromedp.Click(disable),
		chromedp.WaitVisible(css(`form[action="/admin/users/uiuser/enable"] button`)))
	if st := v2(); st != http.StatusUnauthorized {
		t.Errorf("the disabled user's password on /v2/: %d, want 401", st)
	}
	_ = seed
	t.Logf("screenshots in %s", shots)
}
