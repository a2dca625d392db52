package e2e

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// gateDeadline bounds every wait for an asynchronous outcome of the gate
// test (a sync, a scan, an evaluation, a delivery).
const gateDeadline = 2 * time.Minute

// eventListener stands in for a Tekton EventListener: every delivery is
// answered 202 Accepted with {"eventListenerUID", "eventID"} and queued by
// its event kind; a kind nobody waits for is kept as a stray.
type eventListener struct {
	*httptest.Server
	got   map[string]chan hookDelivery
	mu    sync.Mutex
	n     int
	stray []string
}

func newEventListener(t *testing.T, kinds ...string) *eventListener {
	t.Helper()
	l := &eventListener{got: map[string]chan hookDelivery{}}
	for _, k := range kinds {
		l.got[k] = make(chan hookDelivery, 50)
	}
	l.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := new(bytes.Buffer)
		b.ReadFrom(r.Body)
		var body map[string]any
		json.Unmarshal(b.Bytes(), &body)
		kind, _ := body["event"].(string)
		l.mu.Lock()
		l.n++
		id := l.n
		ch, ok := l.got[kind]
		if !ok || r.Header.Get("X-Berth-Event") != kind {
			l.stray = append(l.stray, fmt.Sprintf("%s %s (X-Berth-Event %q): %s", r.Method, r.URL.Path, r.Header.Get("X-Berth-Event"), b))
		}
		l.mu.Unlock()
		if ok {
			ch <- hookDelivery{event: kind, body: body, raw: b.String()}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, `{"eventListenerUID":"berth-e2e-listener","eventID":"event-%d"}`, id)
	}))
	t.Cleanup(l.Close)
	return l
}

// next waits for the next delivery of kind, which must be about digest
// (for base_image_updated: the base's new digest).
func (l *eventListener) next(t *testing.T, kind, digest, what string) hookDelivery {
	t.Helper()
	select {
	case d := <-l.got[kind]:
		t.Logf("the listener received %s: %s", kind, d.raw)
		got, _ := d.body["digest"].(string)
		if kind == "base_image_updated" {
			b, _ := d.body["base"].(map[string]any)
			got, _ = b["new_digest"].(string)
		}
		if got != digest {
			t.Fatalf("%s: the next %s is about %s, want %s: %s", what, kind, got, digest, d.raw)
		}
		return d
	case <-time.After(gateDeadline):
		t.Fatalf("%s: no %s delivery within %s", what, kind, gateDeadline)
	}
	return hookDelivery{}
}

// none checks that no delivery of kind is waiting.
func (l *eventListener) none(t *testing.T, kind, why string) {
	t.Helper()
	select {
	case d := <-l.got[kind]:
		t.Errorf("%s: the listener got %s: %s", why, kind, d.raw)
	default:
	}
}

func (l *eventListener) strays() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.stray)
}

// TestGatedPromotion is ACR's "consuming public content" walkthrough,
// with a Berth gate instead of a staging registry and real tools: a CNCF
// Distribution upstream holds library/node:15-alpine (a Debian-based
// image, so the scanner has packages); Berth (token mode) mirrors it into
// the gated org/node, whose policy wants a clean scan, a cosign signature
// by the test's key and a passing "functional" check. Each upstream
// change arrives as a candidate: promotion_pending reaches the Tekton
// stand-in, an ordinary reader cannot see it by tag, by digest or by its
// blobs, and the pipeline robot org+ci pulls it, signs it with cosign and
// posts the check; promotion moves the tag, makes an immutable rollback
// tag and only then fires base_image_updated for an application built on
// the base. A failing check and a signature by an unknown key block (with
// reasons), a later good change is promoted as 15-alpine-2, and a restore
// puts the tag back on the first version.
//
// The application org/app:1 is built on the first promoted version: the
// first promotion creates 15-alpine, and nothing can be built on a tag
// before it exists (a new tag fires no base_image_updated). So "fired on
// promotion, not on a candidate's arrival" is checked where the tag first
// moves: not for v2, v3 or v4's arrival, once for v4's promotion.
//
// Every sync must succeed: the rollback tags are the gate's own, not
// tags the mirror may remove because upstream lacks them. The mirror
// robot is the pipeline's robot: a mirrored repository takes pushes (the
// cosign signatures) and tag changes (the restore) from it alone.
func TestGatedPromotion(t *testing.T) {
	begin(t)
	if os.Getenv("BERTH_E2E_REGISTRY") != "" {
		t.Skip("starts its own berth in token mode; skipped with BERTH_E2E_REGISTRY")
	}
	began := time.Now()
	defer func() { t.Logf("TestGatedPromotion took %s", time.Since(began).Round(time.Second)) }()
	for _, tool := range []string{"docker-registry", "crane", "cosign"} {
		requireTool(t, tool)
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	debLayer, err := tarball.LayerFromFile(filepath.Join(root, "internal/scan/index/testdata/debian-layer.tar.gz"),
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	step := func(n int, what string) {
		t.Logf("---- step %d (%s in): %s", n, time.Since(began).Round(time.Second), what)
	}

	// 1. The upstream: each version of node:15-alpine is the Debian
	// fixture layer (a dpkg status file) and a layer of its own.
	step(1, "upstream library/node:15-alpine v1")
	up := startDistribution(t, "up", "upstream-pw")
	upAuth := remote.WithAuth(&authn.Basic{Username: "up", Password: "upstream-pw"})
	pushUp := func(version string) (manifest, ownLayer string) {
		t.Helper()
		own, err := random.Layer(4096, types.OCILayer)
		if err != nil {
			t.Fatal(err)
		}
		base := mutate.MediaType(mutate.ConfigMediaType(empty.Image, types.OCIConfigJSON), types.OCIManifestSchema1)
		img, err := mutate.AppendLayers(base, debLayer, own)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture = "linux", "amd64"
		cf.Config.Labels = map[string]string{"org.opencontainers.image.version": version}
		if img, err = mutate.ConfigFile(img, cf); err != nil {
			t.Fatal(err)
		}
		ref, _ := name.ParseReference(up+"/library/node:15-alpine", name.Insecure)
		if err := remote.Write(ref, img, upAuth); err != nil {
			t.Fatal(err)
		}
		d, _ := own.Digest()
		return digestOf(t, img), d.String()
	}
	v1Digest, _ := pushUp("v1")

	// 2. Berth: the organization, its pipeline robot, a reader, the
	// webhooks, the vulnerability data.
	step(2, "berth: organization, robot org+ci, reader bob, listener, vulnerability data")
	s := startProxyServer(t)
	// call sends a JSON request to /api/v1 and checks the status: want, any
	// 2xx for 0, anything for -1.
	call := func(id *authIdentity, method, path string, body any, want int) httpResult {
		t.Helper()
		var b string
		if body != nil {
			raw, _ := json.Marshal(body)
			b = string(raw)
		}
		r := s.api(t, id, method, path, b)
		if want == 0 && r.Status/100 != 2 || want > 0 && r.Status != want {
			t.Fatalf("%s %s as %s: %s, want HTTP %d", method, path, idName(id), r, want)
		}
		return r
	}
	const repo = "org/node"
	call(&s.alice, "POST", "/api/v1/organization/", map[string]any{"name": "org"}, http.StatusCreated)
	var robot struct {
		Name, Token string
	}
	r := call(&s.alice, "PUT", "/api/v1/organization/org/robots/ci", map[string]any{"description": "Tekton pipeline"}, 0)
	if json.Unmarshal(r.Body, &robot) != nil || robot.Name != "org+ci" || robot.Token == "" {
		t.Fatalf("create robot org+ci: %s", r)
	}
	ci := authIdentity{"robot", robot.Name, robot.Token}
	s.robot, s.secrets["the token of robot org+ci"] = ci, ci.pass
	call(&s.alice, "POST", "/api/v1/repository", map[string]any{"namespace": "org", "repository": "node", "visibility": "private",
		"description": "node, mirrored from upstream behind a gate"}, http.StatusCreated)
	call(&s.alice, "PUT", "/api/v1/repository/"+repo+"/permissions/user/org+ci", map[string]any{"role": "write"}, 0)
	call(&s.alice, "PUT", "/api/v1/repository/"+repo+"/permissions/user/bob", map[string]any{"role": "read"}, 0)

	listener := newEventListener(t, "promotion_pending", "promotion_succeeded", "promotion_blocked", "base_image_updated")
	for _, ev := range []string{"promotion_pending", "promotion_succeeded", "promotion_blocked"} {
		call(&s.alice, "POST", "/api/v1/repository/"+repo+"/notification/", map[string]any{"event": ev, "method": "webhook",
			"title": "tekton " + ev, "config": map[string]any{"url": listener.URL + "/tekton"}}, http.StatusCreated)
	}

	// Debian data: zlib's advisory is fixed in the installed version, xz's
	// is High. The scan is "scanned" with no Critical finding.
	var zb bytes.Buffer
	zw := zip.NewWriter(&zb)
	for file, rec := range map[string]string{"DEBIAN-CVE-2026-9002.json": osvZlibFixed, "DEBIAN-CVE-2026-9003.json": osvXz} {
		f, _ := zw.Create(file)
		f.Write([]byte(rec))
	}
	zw.Close()
	if r := s.do(t, &s.admin, "POST", "/api/v1/superuser/vulndb", map[string]string{"Content-Type": "application/zip"}, zb.Bytes()); r.Status != http.StatusOK {
		t.Fatalf("POST /api/v1/superuser/vulndb: %s", r)
	}

	// The tools: crane as the reader, the robot and alice; cosign as the
	// robot (it reads the robot's Docker config).
	bob, ciC, alice := s.session(t, "crane", s.bob), s.session(t, "crane", ci), s.session(t, "crane", s.alice)
	var bobSkopeo *toolSession
	if st := tools["skopeo"]; st != nil && st.err == nil {
		c := s.session(t, "skopeo", s.bob)
		bobSkopeo = &c
	}
	node := s.host + "/" + repo
	craneAs := func(c toolSession, args ...string) cmdResult {
		t.Helper()
		return tryRun(t, c.o, "crane", append(args, "--insecure")...)
	}
	requireDigest := func(c toolSession, who, ref, want string) {
		t.Helper()
		r := craneAs(c, "digest", ref)
		if r.Err != nil || strings.TrimSpace(r.Stdout) != want {
			t.Fatalf("crane digest %s as %s: %q (%v), want %s", ref, who, strings.TrimSpace(r.Stdout), r.Err, want)
		}
	}
	// hidden checks that the reader cannot see a candidate: by digest with
	// crane (and skopeo), and its own blob.
	hidden := func(what, candidate, blob string) {
		t.Helper()
		requireSays(t, "bob: crane digest of the "+what+" by digest", craneAs(bob, "digest", node+"@"+candidate), "MANIFEST_UNKNOWN")
		if bobSkopeo != nil {
			requireSays(t, "bob: skopeo inspect of the "+what+" by digest", tryRun(t, bobSkopeo.o, "skopeo", "inspect", "--raw",
				"--authfile", bobSkopeo.authfile, "--tls-verify=false", "docker://"+node+"@"+candidate), "manifest unknown")
		}
		if blob != "" {
			requireSays(t, "bob: crane blob of a layer only the "+what+" has", craneAs(bob, "blob", node+"@"+blob), "BLOB_UNKNOWN")
			if r := craneAs(ciC, "blob", node+"@"+blob); r.Err != nil {
				t.Fatalf("the robot cannot read the %s's own layer: %v", what, r.Err)
			}
		}
	}

	// 3. The gated mirror.
	step(3, "gate and mirror of upstream into org/node")
	keys := cosignKeys(t)
	otherKeys := cosignKeys(t)
	pub, err := os.ReadFile(filepath.Join(keys, "cosign.pub"))
	if err != nil {
		t.Fatal(err)
	}
	const policy = `scan.status == "scanned" && scan.counts.critical == 0 && signatures.exists(s, s.verified) && checks["functional"] == "pass"`
	r = call(&s.alice, "PUT", "/api/v1/repository/"+repo+"/gate", map[string]any{"tags": []string{"15-alpine"}, "policy": policy,
		"keys": []string{string(pub)}, "checkers": []string{ci.user}, "rollback_tag": "{tag}-{n}"}, http.StatusOK)
	var gate struct {
		Policy string   `json:"policy"`
		KeyIDs []string `json:"key_ids"`
	}
	if json.Unmarshal(r.Body, &gate) != nil || gate.Policy != policy || len(gate.KeyIDs) != 1 {
		t.Fatalf("PUT gate: %s", r)
	}
	call(&s.alice, "POST", "/api/v1/repository/"+repo+"/mirror", map[string]any{
		"external_reference": up + "/library/node", "external_registry_username": "up", "external_registry_password": "upstream-pw",
		"external_registry_config": map[string]any{"verify_tls": false}, "sync_interval": 86400,
		"sync_start_date": time.Now().Add(24 * time.Hour).UTC().Format("2006-01-02T15:04:05Z"),
		"root_rule":       map[string]any{"rule_kind": "tag_glob_csv", "rule_value": []string{"15-alpine"}},
		"robot_username":  ci.user,
	}, http.StatusCreated)
	// mirrorState reads the mirror's status, its last error and when its
	// next sync is due.
	mirrorState := func() (status, lastErr string, next time.Time) {
		t.Helper()
		var m struct {
			Status  string `json:"sync_status"`
			LastErr string `json:"last_error"`
			Next    string `json:"next_sync_date"`
		}
		r := s.do(t, &s.alice, "GET", "/api/v1/repository/"+repo+"/mirror", nil, nil)
		if r.Status != http.StatusOK || json.Unmarshal(r.Body, &m) != nil {
			t.Fatalf("GET mirror: %s", r)
		}
		next, _ = time.Parse("2006-01-02T15:04:05Z", m.Next)
		return m.Status, m.LastErr, next
	}
	// candidateIs reports whether the newest candidate for 15-alpine is
	// the digest (the robot may list them).
	candidateIs := func(d string) func() bool {
		return func() bool {
			var cs struct{ Candidates []struct{ Digest string } }
			r := s.do(t, &ci, "GET", "/api/v1/repository/"+repo+"/gate/candidates?tag=15-alpine&limit=1", nil, nil)
			return json.Unmarshal(r.Body, &cs) == nil && len(cs.Candidates) == 1 && cs.Candidates[0].Digest == d
		}
	}
	// syncNow asks for syncs until, after one ended, ready holds; then it
	// waits until no retry of a failed sync is due, so that no sync runs
	// behind the test's back. A failed sync is an error, but the
	// walkthrough goes on: what the sync copied is there.
	syncNow := func(what string, ready func() bool) {
		t.Helper()
		deadline := time.Now().Add(gateDeadline)
		failed := ""
		for done := false; !done; {
			call(&s.alice, "POST", "/api/v1/repository/"+repo+"/mirror/sync-now", nil, http.StatusNoContent)
			for {
				status, lastErr, _ := mirrorState()
				if status == "FAIL" {
					failed = lastErr
				}
				if status == "SUCCESS" || status == "FAIL" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the mirror sync of %s did not end within %s (status %s)", what, gateDeadline, status)
				}
				time.Sleep(250 * time.Millisecond)
			}
			done = ready()
			if !done && time.Now().After(deadline) {
				t.Fatalf("the mirror syncs of %s did not bring it within %s (last error: %q)", what, gateDeadline, failed)
			}
		}
		if failed != "" {
			t.Errorf("the mirror sync of %s failed: %s", what, failed)
		}
		for {
			status, _, next := mirrorState()
			if (status == "SUCCESS" || status == "FAIL") && next.After(time.Now().Add(time.Hour)) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the mirror of %s is still busy or retrying after %s (status %s, next sync %s)", what, gateDeadline, status, next)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}

	// 4. The first sync: a candidate, held.
	step(4, "sync v1: candidate held, the pipeline signs it and posts functional=pass")
	syncNow("v1", candidateIs(v1Digest))
	pending := listener.next(t, "promotion_pending", v1Digest, "the sync of v1")
	if pending.body["repository"] != repo || pending.body["tag"] != "15-alpine" || !slices.Equal(anyStrings(pending.body["tags"]), []string{"15-alpine"}) {
		t.Fatalf("promotion_pending of v1: %s", pending.raw)
	}
	requireSays(t, "bob: crane digest of 15-alpine while v1 is a candidate", craneAs(bob, "digest", node+":15-alpine"), "MANIFEST_UNKNOWN")
	hidden("candidate v1", v1Digest, "")
	requireDigest(ciC, ci.user, node+"@"+v1Digest, v1Digest)
	if r := call(&s.bob, "POST", "/api/v1/repository/"+repo+"/manifest/"+v1Digest+"/checks",
		map[string]any{"name": "functional", "status": "pass"}, -1); r.Status != http.StatusForbidden {
		t.Fatalf("bob (a reader, not a checker) posted a check: %s, want 403", r)
	}
	// pipeline is what the Tekton PipelineRun does with the candidate of a
	// promotion_pending: pull it by digest as the robot, sign it (or not),
	// then report the functional test.
	run := 0
	pipeline := func(candidate, signKeys, status string) {
		t.Helper()
		run++
		dir := t.TempDir()
		if r := craneAs(ciC, "pull", node+"@"+candidate, filepath.Join(dir, "candidate.tar")); r.Err != nil {
			t.Fatalf("the robot cannot pull the candidate %s: %v", candidate, r.Err)
		}
		if signKeys != "" {
			mustRun(t, opts{Dir: signKeys, Env: ciC.o.Env}, "cosign",
				append(append([]string{"sign", "--key", "cosign.key"}, cosignSignFlags...), node+"@"+candidate)...)
		}
		r := call(&ci, "POST", "/api/v1/repository/"+repo+"/manifest/"+candidate+"/checks", map[string]any{"name": "functional",
			"status": status, "details_url": fmt.Sprintf("https://tekton.example/pipelineruns/node-functional-%d", run),
			"summary": "functional tests " + status}, http.StatusCreated)
		var c struct{ Name, Status, Actor string }
		if json.Unmarshal(r.Body, &c) != nil || c.Name != "functional" || c.Status != status || c.Actor != ci.user {
			t.Fatalf("POST check: %s", r)
		}
	}
	pipeline(v1Digest, keys, "pass")

	// 5. Promotion.
	step(5, "promotion of v1 as 15-alpine-1")
	succeeded := listener.next(t, "promotion_succeeded", v1Digest, "v1 signed and checked")
	if succeeded.body["tag"] != "15-alpine" || succeeded.body["rollback_tag"] != "15-alpine-1" ||
		!slices.Equal(anyStrings(succeeded.body["tags"]), []string{"15-alpine", "15-alpine-1"}) {
		t.Fatalf("promotion_succeeded of v1: %s", succeeded.raw)
	}
	if sc, _ := succeeded.body["scan"].(map[string]any); sc["status"] != "scanned" {
		t.Fatalf("promotion_succeeded of v1: scan %v, want scanned", succeeded.body["scan"])
	}
	requireDigest(bob, "bob", node+":15-alpine", v1Digest)
	requireDigest(bob, "bob", node+"@"+v1Digest, v1Digest)
	requireDigest(bob, "bob", node+":15-alpine-1", v1Digest)
	if bobSkopeo != nil {
		out := mustRun(t, bobSkopeo.o, "skopeo", "inspect", "--authfile", bobSkopeo.authfile, "--tls-verify=false", "docker://"+node+":15-alpine")
		var insp struct{ Digest string }
		if json.Unmarshal([]byte(out), &insp) != nil || insp.Digest != v1Digest {
			t.Fatalf("skopeo inspect of 15-alpine as bob: %s, want digest %s", out, v1Digest)
		}
	}
	layout := filepath.Join(t.TempDir(), "layout")
	writeLayout(t, layout, map[string]v1.Image{"v1": newImage(t, true, "linux/amd64")})
	requireSays(t, "the robot's crane push to the rollback tag 15-alpine-1", craneAs(ciC, "push", layout, node+":15-alpine-1"),
		"DENIED", "immutable")
	requireDigest(bob, "bob", node+":15-alpine-1", v1Digest)

	// The application, built on the promoted base with the OCI base
	// annotations; its rebuild trigger.
	appRef := s.host + "/org/app:1"
	if r := craneAs(alice, "append", "-b", node+":15-alpine", "-f", layerTar(t, t.TempDir(), "app.js", "console.log('app')"),
		"-t", appRef, "--set-base-image-annotations"); r.Err != nil {
		t.Fatalf("crane append of org/app:1 on 15-alpine as alice: %v", r.Err)
	}
	appDigest := strings.TrimSpace(craneAs(alice, "digest", appRef).Stdout)
	type graphBase struct {
		Repository, Digest, Method string
		Level                      int
	}
	for deadline := time.Now().Add(gateDeadline); ; {
		r := s.do(t, &s.alice, "GET", "/api/v1/repository/org/app/manifest/"+appDigest+"/bases", nil, nil)
		var out struct{ Bases []graphBase }
		json.Unmarshal(r.Body, &out)
		i := slices.IndexFunc(out.Bases, func(b graphBase) bool { return b.Repository == repo && b.Digest == v1Digest && b.Level == 1 })
		if i >= 0 {
			t.Logf("org/app:1 is built on %s@%s (found by %s)", repo, v1Digest, out.Bases[i].Method)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the graph does not know org/app:1's base after %s: %s", gateDeadline, r)
		}
		time.Sleep(250 * time.Millisecond)
	}
	call(&s.alice, "POST", "/api/v1/repository/org/app/notification/", map[string]any{"event": "base_image_updated", "method": "webhook",
		"title": "rebuild app", "config": map[string]any{"url": listener.URL + "/rebuild"}}, http.StatusCreated)

	// 6. A bad change upstream.
	step(6, "v2 upstream, functional=fail: blocked")
	v2Digest, v2Layer := pushUp("v2")
	syncNow("v2", candidateIs(v2Digest))
	listener.next(t, "promotion_pending", v2Digest, "the sync of v2")
	requireDigest(bob, "bob", node+":15-alpine", v1Digest)
	requireDigest(bob, "bob", node+":15-alpine-1", v1Digest)
	hidden("candidate v2", v2Digest, v2Layer)
	pipeline(v2Digest, "", "fail")
	blocked := listener.next(t, "promotion_blocked", v2Digest, "v2 failed its functional test")
	if reasons := anyStrings(blocked.body["reasons"]); !slices.ContainsFunc(reasons, func(x string) bool { return strings.Contains(x, `"functional" failed`) }) {
		t.Fatalf("promotion_blocked of v2 does not name the failed check: %s", blocked.raw)
	}
	requireDigest(bob, "bob", node+":15-alpine", v1Digest)
	hidden("blocked v2", v2Digest, v2Layer)
	listener.none(t, "base_image_updated", "v2 was blocked: the base did not move")
	// A blocked candidate cannot be slipped in with a restore: it was
	// never the tag's.
	if r := call(&ci, "POST", "/api/v1/repository/"+repo+"/tag/15-alpine/restore", map[string]any{"manifest_digest": v2Digest}, -1); r.Status != http.StatusNotFound {
		t.Fatalf("restore of 15-alpine to the blocked v2: %s, want 404", r)
	}
	requireDigest(bob, "bob", node+":15-alpine", v1Digest)

	// 7. Signed upstream, by a key the gate does not trust (the mirror
	// brings cosign's signature tag along).
	step(7, "v3 upstream signed with another key, functional=pass: blocked on the signature")
	v3Digest, v3Layer := pushUp("v3")
	upEnv, _ := clientEnv(t)
	mustRun(t, opts{Dir: otherKeys, Env: upEnv}, "cosign", "login", up, "-u", "up", "-p", "upstream-pw")
	mustRun(t, opts{Dir: otherKeys, Env: upEnv}, "cosign",
		append(append([]string{"sign", "--key", "cosign.key"}, cosignSignFlags...), up+"/library/node@"+v3Digest)...)
	sigTag := "sha256-" + strings.TrimPrefix(v3Digest, "sha256:") + ".sig"
	syncNow("v3 and its signature", func() bool {
		return candidateIs(v3Digest)() && s.do(t, &ci, "HEAD", "/v2/"+repo+"/manifests/"+sigTag, map[string]string{"Accept": acceptAll}, nil).Status == http.StatusOK
	})
	listener.next(t, "promotion_pending", v3Digest, "the sync of v3")
	if r := craneAs(ciC, "digest", node+":"+sigTag); r.Err != nil {
		t.Fatalf("the mirror did not bring v3's upstream signature %s along: %v", sigTag, r.Err)
	}
	hidden("candidate v3", v3Digest, v3Layer)
	pipeline(v3Digest, "", "pass")
	blocked = listener.next(t, "promotion_blocked", v3Digest, "v3 signed by an untrusted key")
	if reasons := anyStrings(blocked.body["reasons"]); !slices.ContainsFunc(reasons, func(x string) bool { return strings.Contains(x, "signatures") }) {
		t.Fatalf("promotion_blocked of v3 gives no reason about its signature: %s", blocked.raw)
	}
	{
		r := call(&ci, "GET", "/api/v1/repository/"+repo+"/gate/candidates?tag=15-alpine&limit=1", nil, http.StatusOK)
		var cs struct {
			Candidates []struct {
				Digest, State string
				Evaluation    struct {
					Signatures []struct {
						Kind     string
						Verified bool
						Error    string
					}
				}
			}
		}
		if json.Unmarshal(r.Body, &cs) != nil || len(cs.Candidates) != 1 || cs.Candidates[0].Digest != v3Digest ||
			cs.Candidates[0].State != "blocked" || len(cs.Candidates[0].Evaluation.Signatures) == 0 ||
			cs.Candidates[0].Evaluation.Signatures[0].Verified || cs.Candidates[0].Evaluation.Signatures[0].Error == "" {
			t.Fatalf("the blocked v3's evaluation shows no unverified signature: %s", r)
		}
		t.Logf("v3's signature: %+v", cs.Candidates[0].Evaluation.Signatures)
	}
	requireDigest(bob, "bob", node+":15-alpine", v1Digest)
	hidden("blocked v3", v3Digest, v3Layer)
	listener.none(t, "base_image_updated", "v3 was blocked: the base did not move")

	// 8. A good change.
	step(8, "v4 upstream, signed by the pipeline, functional=pass: promoted as 15-alpine-2")
	v4Digest, _ := pushUp("v4")
	syncNow("v4", candidateIs(v4Digest))
	listener.next(t, "promotion_pending", v4Digest, "the sync of v4")
	requireDigest(bob, "bob", node+":15-alpine", v1Digest)
	listener.none(t, "base_image_updated", "v4 is only a candidate: the base did not move")
	pipeline(v4Digest, keys, "pass")
	succeeded = listener.next(t, "promotion_succeeded", v4Digest, "v4 signed and checked")
	if succeeded.body["rollback_tag"] != "15-alpine-2" || succeeded.body["previous_digest"] != v1Digest {
		t.Fatalf("promotion_succeeded of v4: %s", succeeded.raw)
	}
	requireDigest(bob, "bob", node+":15-alpine", v4Digest)
	requireDigest(bob, "bob", node+":15-alpine-2", v4Digest)
	requireDigest(bob, "bob", node+":15-alpine-1", v1Digest)
	// The first base_image_updated is this promotion's: nothing fired for
	// v2, v3 or v4's arrival.
	rebuild := listener.next(t, "base_image_updated", v4Digest, "org/app:1's base moved from v1 to v4")
	if b, _ := rebuild.body["base"].(map[string]any); rebuild.body["repository"] != "org/app" || rebuild.body["digest"] != appDigest ||
		b["repository"] != repo || b["tag"] != "15-alpine" || b["old_digest"] != v1Digest {
		t.Fatalf("base_image_updated for org/app:1: %s", rebuild.raw)
	}

	// 9. Rollback.
	step(9, "restore 15-alpine to v1")
	call(&ci, "POST", "/api/v1/repository/"+repo+"/tag/15-alpine/restore", map[string]any{"manifest_digest": v1Digest}, http.StatusOK)
	requireDigest(bob, "bob", node+":15-alpine", v1Digest)
	requireDigest(bob, "bob", node+":15-alpine-2", v4Digest)

	listener.none(t, "promotion_succeeded", "no other promotion")
	listener.none(t, "promotion_blocked", "no other block")
	listener.none(t, "promotion_pending", "no other candidate")
	if st := listener.strays(); len(st) > 0 {
		t.Errorf("deliveries of unexpected events: %q", st)
	}
}

// anyStrings reads a JSON array of strings.
func anyStrings(v any) []string {
	list, _ := v.([]any)
	out := []string{}
	for _, x := range list {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}
