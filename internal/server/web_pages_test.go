package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
)

// secretShown finds a secret on the page that shows it once.
var secretShown = regexp.MustCompile(`<code id="secret" class="secret">([^<]+)</code>`)

// auditKinds lists the kinds of a namespace's audit entries.
func auditKinds(t *testing.T, db *meta.DB, ns string) string {
	t.Helper()
	es, err := db.Access().AuditLog(context.Background(), ns, 0, 200)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, e := range es {
		kinds = append(kinds, e.Kind+"("+e.Actor+")")
	}
	return strings.Join(kinds, " ")
}

// wantAudited fails the test unless the namespace's audit log holds each
// kind(actor).
func wantAudited(t *testing.T, db *meta.DB, ns string, kinds ...string) {
	t.Helper()
	log := auditKinds(t, db, ns)
	for _, k := range kinds {
		if !strings.Contains(log, k) {
			t.Errorf("audit log lacks %s: %s", k, log)
		}
	}
}

// formActions lists the POST forms of a page (but sign-out).
func formActions(body string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`<form method="post" action="([^"]+)"`).FindAllStringSubmatch(body, -1) {
		if m[1] != "/signout" {
			out = append(out, m[1])
		}
	}
	return out
}

// refusedWithoutToken posts every form of a page without its CSRF token
// and wants 403 for each.
func refusedWithoutToken(t *testing.T, b *browser, page string, min int) {
	t.Helper()
	_, body := b.get(page)
	forms := formActions(body)
	if len(forms) < min {
		t.Errorf("%s has %d forms, want at least %d", page, len(forms), min)
	}
	for _, f := range forms {
		if status, _ := b.post(f, url.Values{"name": {"x"}, "team": {"x"}, "member": {"stranger"}, "role": {"admin"}, "visibility": {"public"}}); status != http.StatusForbidden {
			t.Errorf("POST %s without the CSRF token: %d", f, status)
		}
	}
}

// TestWebOrganization: the organization page shows members, teams and
// robots to its admins only; a robot's token is shown once, works, and is
// never shown again; every action is the API's, audited as the API's.
func TestWebOrganization(t *testing.T) {
	w := newWorld(t)
	for _, who := range []string{"anonymous", "stranger"} {
		b := newBrowser(t, w.url)
		if who != "anonymous" {
			b.signIn(who, pw)
		}
		if status, body := b.get("/organization/acme"); status != http.StatusNotFound || strings.Contains(body, "acme&#43;ci") {
			t.Errorf("%s: /organization/acme = %d", who, status)
		}
	}
	reader := newBrowser(t, w.url)
	reader.signIn("reader", pw)
	status, body := reader.get("/organization/acme")
	if status != http.StatusOK || strings.Contains(body, "acme&#43;ci") || strings.Contains(body, "<h2>Members") {
		t.Errorf("member without admin: %d, sees robots or members: %v", status, strings.Contains(body, "acme&#43;ci"))
	}
	tok := reader.csrf("/organization/acme")
	if status, _ := reader.post("/organization/acme/robots/create", url.Values{"csrf": {tok}, "name": {"sneaky"}}); status != http.StatusForbidden {
		t.Errorf("member creates a robot: %d, want 403", status)
	}
	admin := newBrowser(t, w.url)
	admin.signIn("orgadmin", pw)
	status, body = admin.get("/organization/acme")
	for _, want := range []string{"<h2>Members", "<h2>Teams", "<h2>Robots", "acme&#43;ci", "readers", "reader"} {
		if status != 200 || !strings.Contains(body, want) {
			t.Errorf("admin's organization page (%d) lacks %q", status, want)
		}
	}
	refusedWithoutToken(t, admin, "/organization/acme", 20)
	tok = admin.csrf("/organization/acme")
	status, body = admin.post("/organization/acme/robots/create", url.Values{"csrf": {tok}, "name": {"deploy"}, "description": {"CD"}})
	m := secretShown.FindStringSubmatch(body)
	if status != 200 || m == nil {
		t.Fatalf("create robot: %d\n%s", status, body)
	}
	token := m[1]
	if r := w.do("GET", "/v2/", "acme+deploy", token, nil); r.StatusCode != 200 {
		t.Errorf("the robot's token shown does not sign in to /v2/: %d", r.StatusCode)
	}
	if _, body := admin.get("/organization/acme"); !strings.Contains(body, "acme&#43;deploy") || strings.Contains(body, token) {
		t.Errorf("after creation the page lists the robot %v and shows its token %v", strings.Contains(body, "acme&#43;deploy"), strings.Contains(body, token))
	}
	status, body = admin.post("/organization/acme/robots/deploy/regenerate", url.Values{"csrf": {tok}})
	if m := secretShown.FindStringSubmatch(body); status != 200 || m == nil || m[1] == token {
		t.Errorf("regenerate: %d, a new token shown: %v", status, m != nil)
	}
	if r := w.do("GET", "/v2/", "acme+deploy", token, nil); r.StatusCode == 200 {
		t.Error("the old token still works after regeneration")
	}
	// Teams: create one, add a member, change its role.
	if status, _ := admin.post("/organization/acme/teams/save", url.Values{"csrf": {tok}, "team": {"ops"}, "role": {"creator"}}); status != 200 {
		t.Errorf("create team: %d", status)
	}
	if status, _ := admin.post("/organization/acme/teams/ops/add-member", url.Values{"csrf": {tok}, "member": {"stranger"}}); status != 200 {
		t.Errorf("add team member: %d", status)
	}
	if status, body := admin.post("/organization/acme/teams/save", url.Values{"csrf": {tok}, "team": {"ops"}, "role": {"overlord"}}); status != 400 || !strings.Contains(body, "unknown team role") {
		t.Errorf("bad role: %d, want the API's 400 message", status)
	}
	if status, _ := admin.post("/organization/acme/robots/deploy/delete", url.Values{"csrf": {tok}}); status != 200 {
		t.Errorf("delete robot: %d", status)
	}
	wantAudited(t, w.db, "acme", "robot_create(orgadmin)", "robot_regenerate(orgadmin)", "robot_delete(orgadmin)", "team_change(orgadmin)", "team_member_add(orgadmin)")
}

// TestWebOrganizationQuota: members see what the organization stores
// against its quota and the quota's limits; superusers set, change and
// remove them from the page, through the API's own checks.
func TestWebOrganizationQuota(t *testing.T) {
	w := newWorld(t)
	root := newBrowser(t, w.url)
	root.signIn("root", pw)
	const page = "/organization/acme"
	if _, body := root.get(page); !strings.Contains(body, "no quota") || !strings.Contains(body, "Set a quota") {
		t.Fatalf("without a quota the page says so and offers one to root:\n%s", body)
	}
	tok := root.csrf(page)
	if status, body := root.post(page+"/quota", url.Values{"csrf": {tok}, "limit": {"a lot"}}); status != 400 || !strings.Contains(body, "a lot") {
		t.Errorf("a size the API cannot read: %d, want 400 with its message", status)
	}
	if status, _ := root.post(page+"/quota", url.Values{"csrf": {tok}, "limit": {"1 GiB"}}); status != 200 {
		t.Fatalf("set a quota: %d", status)
	}
	var quotas []map[string]any
	_, _, raw := w.call("GET", "/api/v1/organization/acme/quota", "root", "")
	if err := json.Unmarshal([]byte(raw), &quotas); err != nil || len(quotas) != 1 || quotas[0]["limit_bytes"] != float64(1<<30) {
		t.Fatalf("the API's quota after the form: %s", raw)
	}
	qid := fmt.Sprint(quotas[0]["id"])
	if status, _ := root.post(page+"/quota/"+qid+"/limits", url.Values{"csrf": {tok}, "type": {"Reject"}, "percent": {"90"}}); status != 200 {
		t.Errorf("add a limit: %d", status)
	}
	if status, body := root.post(page+"/quota/"+qid+"/limits", url.Values{"csrf": {tok}, "type": {"Reject"}, "percent": {"ninety"}}); status != 400 || !strings.Contains(body, "whole percentage") {
		t.Errorf("a threshold that is not a number: %d", status)
	}
	if status, _ := root.post(page+"/quota", url.Values{"csrf": {tok}, "quota": {qid}, "limit": {"2 GiB"}}); status != 200 {
		t.Errorf("change the quota: %d", status)
	}
	// A member sees the figures, not the forms, and cannot post them.
	reader := newBrowser(t, w.url)
	reader.signIn("reader", pw)
	_, body := reader.get(page)
	for _, want := range []string{"of a quota of 2.0 GiB", "<td>Reject</td><td>90 %</td>", "<meter", "Superusers set quotas"} {
		if !strings.Contains(body, want) {
			t.Errorf("the member's page lacks %q", want)
		}
	}
	if strings.Contains(body, "Change the quota") {
		t.Error("a member is offered the quota's form")
	}
	if status, _ := reader.post(page+"/quota", url.Values{"csrf": {reader.csrf(page)}, "quota": {qid}, "limit": {"1 TiB"}}); status != http.StatusForbidden {
		t.Errorf("a member changes the quota: %d, want 403", status)
	}
	_, body = root.get(page)
	m := regexp.MustCompile(`action="/organization/acme/quota/` + qid + `/limits/([0-9]+)/delete"`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no form removes the limit:\n%s", body)
	}
	if status, _ := root.post(page+"/quota/"+qid+"/limits/"+m[1]+"/delete", url.Values{"csrf": {tok}}); status != 200 {
		t.Errorf("remove the limit: %d", status)
	}
	if status, _ := root.post(page+"/quota/"+qid+"/delete", url.Values{"csrf": {tok}}); status != 200 {
		t.Errorf("remove the quota: %d", status)
	}
	if _, body := root.get(page); !strings.Contains(body, "no quota") {
		t.Error("the page still shows a quota after its removal")
	}
	wantAudited(t, w.db, "acme", "org_create_quota(root)", "org_change_quota(root)", "org_delete_quota(root)")
}

// TestWebRepositoryLifecycle: a person creates an organization and a
// repository from the account page, edits its description and deletes it
// from its settings, typing its name to confirm; each is the API's
// request, with its validation and permission decision.
func TestWebRepositoryLifecycle(t *testing.T) {
	w := newWorld(t)
	if _, body := newBrowser(t, w.url).get("/repository"); strings.Contains(body, "New repository") {
		t.Error("an anonymous visitor is offered to create a repository")
	}
	owner := newBrowser(t, w.url)
	owner.signIn("owner", pw)
	if _, body := owner.get("/repository"); !strings.Contains(body, `href="/user/owner#new-repository"`) {
		t.Error("the listing does not lead a signed-in user to where repositories are created")
	}
	tok := owner.csrf("/user/owner")
	status, body := owner.post("/user/owner/organizations/create", url.Values{"csrf": {tok}, "name": {"neworg"}, "email": {"ops@neworg.example"}})
	if status != 200 || !strings.Contains(body, "Organization neworg") {
		t.Fatalf("create an organization: %d\n%s", status, body)
	}
	if status, body := owner.post("/user/owner/organizations/create", url.Values{"csrf": {tok}, "name": {"Bad Org"}}); status != 400 || !strings.Contains(body, "name") {
		t.Errorf("an invalid organization name: %d, want 400 with the API's message", status)
	}
	status, body = owner.post("/user/owner/repositories/create", url.Values{"csrf": {tok}, "namespace": {"acme"}, "repository": {"tools/app"},
		"visibility": {"private"}, "description": {"command-line tools"}})
	if status != 200 || !strings.Contains(body, "<h1>acme/tools/app") || !strings.Contains(body, "command-line tools") {
		t.Fatalf("create a repository: %d\n%s", status, body)
	}
	if status, body := owner.post("/user/owner/repositories/create", url.Values{"csrf": {tok}, "namespace": {"acme"}, "repository": {"Bad Name"}, "visibility": {"private"}}); status != 400 || !strings.Contains(body, "Bad Name") {
		t.Errorf("an invalid repository name: %d, want 400 with the API's message", status)
	}
	stranger := newBrowser(t, w.url)
	stranger.signIn("stranger", pw)
	if status, _ := stranger.post("/user/stranger/repositories/create", url.Values{"csrf": {stranger.csrf("/user/stranger")}, "namespace": {"acme"}, "repository": {"sneaky"}, "visibility": {"public"}}); status != http.StatusForbidden {
		t.Errorf("a stranger creates a repository in acme: %d, want 403", status)
	}
	const page = "/repository/acme/tools/app/settings"
	if status, _ := owner.post(page+"/description", url.Values{"csrf": {tok}, "description": {"tools for <b>operators</b>"}}); status != 200 {
		t.Errorf("save the description: %d", status)
	}
	if _, body := owner.get("/repository/acme/tools/app"); !strings.Contains(body, "tools for &lt;b&gt;operators&lt;/b&gt;") {
		t.Error("the repository's page does not show the new description, escaped")
	}
	reader := newBrowser(t, w.url)
	reader.signIn("reader", pw)
	if status, _ := reader.post("/repository/acme/private/settings/delete", url.Values{"csrf": {reader.csrf("/repository")}, "confirm": {"acme/private"}}); status != http.StatusForbidden {
		t.Errorf("a reader deletes acme/private: %d, want 403", status)
	}
	if status, body := owner.post(page+"/delete", url.Values{"csrf": {tok}, "confirm": {"acme/tools"}}); status != 400 || !strings.Contains(body, "Type the repository") {
		t.Errorf("delete with the wrong name typed: %d, want 400 asking for the name", status)
	}
	if st, _, _ := w.call("GET", "/api/v1/repository/acme/tools/app", "root", ""); st != 200 {
		t.Fatalf("the repository is gone after a refused delete: %d", st)
	}
	if status, body := owner.post(page+"/delete", url.Values{"csrf": {tok}, "confirm": {"acme/tools/app"}}); status != 200 || !strings.Contains(body, "<h1>Repositories") {
		t.Errorf("delete: %d, want the listing", status)
	}
	if st, _, _ := w.call("GET", "/api/v1/repository/acme/tools/app", "root", ""); st != 404 {
		t.Errorf("after the delete the API answers %d, want 404", st)
	}
	wantAudited(t, w.db, "acme", "repo_created(owner)", "set_repo_description(owner)", "repo_deleted(owner)")
}

// TestWebRestoreTag: a tag deleted by mistake is listed on the activity
// page to those who may write, and restored there, through the API's
// restore (its history check and audit entry).
func TestWebRestoreTag(t *testing.T) {
	w := newWorld(t)
	d := w.digest["private"]
	writer := newBrowser(t, w.url)
	writer.signIn("writer", pw)
	tok := writer.csrf("/repository/acme/private")
	if status, _ := writer.post("/repository/acme/private/delete-tags", url.Values{"csrf": {tok}, "tag": {"v1"}}); status != 200 {
		t.Fatalf("delete v1: %d", status)
	}
	const page = "/repository/acme/private/activity"
	_, body := writer.get(page)
	if !strings.Contains(body, "Restore v1") || !strings.Contains(body, d.String()) {
		t.Fatalf("the activity page does not offer v1 back:\n%s", body)
	}
	reader := newBrowser(t, w.url)
	reader.signIn("reader", pw)
	if _, body := reader.get(page); strings.Contains(body, "Restore v1") {
		t.Error("a reader is offered to restore a tag")
	}
	if status, _ := reader.post("/repository/acme/private/restore-tag", url.Values{"csrf": {reader.csrf(page)}, "tag": {"v1"}, "digest": {d.String()}}); status != http.StatusForbidden {
		t.Errorf("a reader restores v1: %d, want 403", status)
	}
	other := w.digest["public"]
	if status, body := writer.post("/repository/acme/private/restore-tag", url.Values{"csrf": {tok}, "tag": {"v1"}, "digest": {other.String()}}); status != http.StatusNotFound || !strings.Contains(body, "history") {
		t.Errorf("restore to a digest the tag never named: %d, want 404 with the API's message", status)
	}
	// A repository name that would end the API path early ("?" decoded
	// from the page's path) names no repository: the form cannot reach
	// another API action (here: restore v1 under tag "x"'s form).
	if status, _ := writer.post("/repository/acme/private/tag/v1/restore%3F/restore-tag", url.Values{"csrf": {tok}, "tag": {"x"}, "digest": {d.String()}}); status != http.StatusNotFound {
		t.Errorf("restore through a name with a question mark: %d, want 404", status)
	}
	if r := w.do("HEAD", "/v2/acme/private/manifests/v1", "root", pw, nil, "Accept", "application/vnd.oci.image.manifest.v1+json"); r.StatusCode != 404 {
		t.Fatalf("v1 is back before its restore: %d", r.StatusCode)
	}
	if status, body := writer.post("/repository/acme/private/restore-tag", url.Values{"csrf": {tok}, "tag": {"v1"}, "digest": {d.String()}}); status != 200 || strings.Contains(body, "Restore v1") {
		t.Errorf("restore v1: %d, still offered: %v", status, strings.Contains(body, "Restore v1"))
	}
	if r := w.do("HEAD", "/v2/acme/private/manifests/v1", "root", pw, nil, "Accept", "application/vnd.oci.image.manifest.v1+json"); r.StatusCode != 200 || r.Header.Get("Docker-Content-Digest") != d.String() {
		t.Errorf("v1 after the restore: %d %s", r.StatusCode, r.Header.Get("Docker-Content-Digest"))
	}
	wantAudited(t, w.db, "acme", "tag_deleted(writer)", "restore_tag(writer)")
}

// TestWebManifestTags: a manifest's page lists its tags; a writer puts
// another tag on it, sets when one expires and clears it, each the API's
// PUT .../tag/{tag}; a reader sees the tags but no form, and its post is
// refused.
func TestWebManifestTags(t *testing.T) {
	w := newWorld(t)
	d := w.digest["private"]
	page := "/repository/acme/private/manifest/" + d.String()
	writer := newBrowser(t, w.url)
	writer.signIn("writer", pw)
	tok := writer.csrf(page)
	if _, body := writer.get(page); !strings.Contains(body, `?filter=v1">v1</a>`) || !strings.Contains(body, "add-tag") {
		t.Fatalf("the manifest page lacks its tag v1 or the form to add one:\n%s", body)
	} else if !regexp.MustCompile(`<dt>Stored</dt><dd>\d{4}-\d\d-\d\d \d\d:\d\d UTC</dd>`).MatchString(body) {
		t.Errorf("the manifest page does not say when it was stored:\n%s", body)
	}
	if status, _ := writer.post(page+"/add-tag", url.Values{"csrf": {tok}, "tag": {"stable"}}); status != 200 {
		t.Fatalf("add a tag: %d", status)
	}
	if r := w.do("HEAD", "/v2/acme/private/manifests/stable", "root", pw, nil, "Accept", "application/vnd.oci.image.manifest.v1+json"); r.StatusCode != 200 || r.Header.Get("Docker-Content-Digest") != d.String() {
		t.Fatalf("stable after the form: %d %s", r.StatusCode, r.Header.Get("Docker-Content-Digest"))
	}
	if status, body := writer.post(page+"/add-tag", url.Values{"csrf": {tok}, "tag": {"-bad"}}); status != 400 || !strings.Contains(body, "tag") {
		t.Errorf("a bad tag name: %d, want 400 with the API's message", status)
	}
	at := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Minute)
	if status, _ := writer.post(page+"/tag-expiration", url.Values{"csrf": {tok}, "tag": {"stable"}, "expires": {at.Format("2006-01-02T15:04")}}); status != 200 {
		t.Fatalf("set the expiration: %d", status)
	}
	expiry := func() float64 {
		t.Helper()
		_, body, raw := w.call("GET", "/api/v1/repository/acme/private/tag/?specificTag=stable&onlyActiveTags=true", "root", "")
		tags, _ := body["tags"].([]any)
		if len(tags) != 1 {
			t.Fatalf("stable: %s", raw)
		}
		end, _ := tags[0].(map[string]any)["end_ts"].(float64)
		return end
	}
	if got := expiry(); got != float64(at.Unix()) {
		t.Errorf("stable expires at %v, want %d", got, at.Unix())
	}
	if _, body := writer.get(page); !strings.Contains(body, `value="`+at.Format("2006-01-02T15:04")+`"`) {
		t.Error("the page does not show the expiration it set")
	}
	for _, bad := range []string{"tomorrow", time.Now().Add(-time.Hour).UTC().Format("2006-01-02T15:04")} {
		if status, _ := writer.post(page+"/tag-expiration", url.Values{"csrf": {tok}, "tag": {"stable"}, "expires": {bad}}); status != 400 {
			t.Errorf("expiration %q: %d, want 400", bad, status)
		}
	}
	if status, _ := writer.post(page+"/tag-expiration", url.Values{"csrf": {tok}, "tag": {"stable"}, "never": {"1"}}); status != 200 {
		t.Fatalf("clear the expiration: %d", status)
	}
	if got := expiry(); got != 0 {
		t.Errorf("stable still expires at %v", got)
	}
	reader := newBrowser(t, w.url)
	reader.signIn("reader", pw)
	if _, body := reader.get(page); !strings.Contains(body, `?filter=stable">stable</a>`) || strings.Contains(body, "add-tag") || strings.Contains(body, "tag-expiration") {
		t.Error("a reader's manifest page: the tags without the forms expected")
	}
	if status, _ := reader.post(page+"/add-tag", url.Values{"csrf": {reader.csrf(page)}, "tag": {"mine"}}); status != http.StatusForbidden {
		t.Errorf("a reader adds a tag: %d, want 403", status)
	}
	wantAudited(t, w.db, "acme", "repo_push(writer)")
}

// TestWebUserPage: one's own account only; an access token shown once,
// then listed without its secret, then revoked.
func TestWebUserPage(t *testing.T) {
	w := newWorld(t)
	if status, _ := newBrowser(t, w.url).get("/user/owner"); status != http.StatusNotFound {
		t.Errorf("anonymous /user/owner: %d", status)
	}
	reader := newBrowser(t, w.url)
	reader.signIn("reader", pw)
	if status, body := reader.get("/user/owner"); status != http.StatusNotFound || strings.Contains(body, "Access tokens") {
		t.Errorf("reader opens owner's account: %d", status)
	}
	if status, _ := reader.post("/user/owner/tokens/create", url.Values{"csrf": {reader.csrf("/user/reader")}, "name": {"x"}}); status != http.StatusNotFound {
		t.Errorf("reader acts on owner's account: %d", status)
	}
	owner := newBrowser(t, w.url)
	owner.signIn("owner", pw)
	status, body := owner.get("/user/owner")
	if status != 200 || !strings.Contains(body, `href="/organization/acme"`) {
		t.Errorf("own account: %d, lists acme: %v", status, strings.Contains(body, "/organization/acme"))
	}
	tok := owner.csrf("/user/owner")
	refusedWithoutToken(t, owner, "/user/owner", 2)
	status, body = owner.post("/user/owner/tokens/create", url.Values{"csrf": {tok}, "name": {"laptop"}, "repository": {"acme/*"},
		"action": {"content/read"}, "days": {"30"}})
	m := secretShown.FindStringSubmatch(body)
	if status != 200 || m == nil {
		t.Fatalf("create token: %d\n%s", status, body)
	}
	if r := w.do("GET", "/v2/acme/private/tags/list", "laptop", m[1], nil); r.StatusCode != 200 {
		t.Errorf("the token shown does not pull: %d", r.StatusCode)
	}
	if _, body := owner.get("/user/owner"); !strings.Contains(body, "laptop") || strings.Contains(body, m[1]) {
		t.Error("the token list lacks the token or shows its secret")
	}
	if status, _ := owner.post("/user/owner/tokens/laptop/revoke", url.Values{"csrf": {tok}}); status != 200 {
		t.Errorf("revoke: %d", status)
	}
	if r := w.do("GET", "/v2/acme/private/tags/list", "laptop", m[1], nil); r.StatusCode == 200 {
		t.Error("a revoked token still pulls")
	}
	// A robot of one's own namespace, its token shown once.
	status, body = owner.post("/user/owner/robots/create", url.Values{"csrf": {tok}, "name": {"builder"}})
	if m := secretShown.FindStringSubmatch(body); status != 200 || m == nil {
		t.Errorf("create own robot: %d", status)
	} else if _, body := owner.get("/user/owner"); !strings.Contains(body, "owner&#43;builder") || strings.Contains(body, m[1]) {
		t.Error("the account page does not list the robot, or shows its token")
	}
	kinds := auditKinds(t, w.db, "")
	for _, k := range []string{"token_create(owner)", "token_revoke(owner)"} {
		if !strings.Contains(kinds, k) {
			t.Errorf("audit log lacks %s: %s", k, kinds)
		}
	}
}

// TestWebAdmin: superusers only; the vulnerability database, storage,
// garbage collection and job queues.
func TestWebAdmin(t *testing.T) {
	w := newWorld(t)
	for _, who := range []string{"anonymous", "stranger", "owner", "orgadmin"} {
		b := newBrowser(t, w.url)
		if who != "anonymous" {
			b.signIn(who, pw)
		}
		if status, body := b.get("/admin"); status != http.StatusNotFound || strings.Contains(body, "Job queues") {
			t.Errorf("%s: /admin = %d", who, status)
		}
	}
	root := newBrowser(t, w.url)
	root.signIn("root", pw)
	status, body := root.get("/admin")
	for _, want := range []string{"Vulnerability database", "Blobs stored", "Job queues", meta.NotifyQueue, meta.ScanQueue, "Dead letters",
		`<a href="/organization/acme">acme</a></td><td>owner</td>`} {
		if status != 200 || !strings.Contains(body, want) {
			t.Errorf("admin page (%d) lacks %q", status, want)
		}
	}
}

// TestWebAdminUsers: a superuser creates a user (its password shown
// once), disables it (its browser is signed out, its password refused),
// enables it, gives another user a new password, and deletes a user,
// each the superuser API's request; no one else can post these forms.
func TestWebAdminUsers(t *testing.T) {
	w := newWorld(t)
	root := newBrowser(t, w.url)
	root.signIn("root", pw)
	tok := root.csrf("/admin")
	_, body := root.get("/admin")
	for _, want := range []string{`action="/admin/users/stranger/disable"`, `action="/admin/users/writer/password"`, "changed with <code>berth admin user</code>"} {
		if !strings.Contains(body, want) {
			t.Errorf("the admin page lacks %s", want)
		}
	}
	if strings.Contains(body, `action="/admin/users/root/`) {
		t.Error("the admin page offers to change a superuser")
	}
	status, body := root.post("/admin/users/create", url.Values{"csrf": {tok}, "username": {"newbie"}, "email": {"newbie@example.com"}})
	m := secretShown.FindStringSubmatch(body)
	if status != 200 || m == nil || !strings.Contains(body, "shown only this once") {
		t.Fatalf("create a user: %d\n%s", status, body)
	}
	newbie := newBrowser(t, w.url)
	newbie.signIn("newbie", m[1])
	if status, body := root.post("/admin/users/create", url.Values{"csrf": {tok}, "username": {"newbie"}}); status != 400 || !strings.Contains(body, "already taken") {
		t.Errorf("a taken name: %d, want 400 with the API's message", status)
	}

	// Disabled: signed out at once, refused at sign-in and on the API.
	if status, _ := root.post("/admin/users/newbie/disable", url.Values{"csrf": {tok}}); status != http.StatusBadRequest {
		t.Errorf("disable without the name typed: %d, want 400", status)
	}
	if status, _ := root.post("/admin/users/newbie/disable", url.Values{"csrf": {tok}, "confirm": {"newbie"}}); status != 200 {
		t.Fatalf("disable: %d", status)
	}
	if status, _ := newbie.get("/user/newbie"); status != http.StatusNotFound {
		t.Errorf("the disabled user's browser still reaches its account: %d", status)
	}
	if _, body := root.get("/admin"); !strings.Contains(body, `action="/admin/users/newbie/enable"`) {
		t.Error("the disabled user is not offered to be enabled")
	}
	if status, _, _ := w.callAs("GET", "/api/v1/user/", "newbie", m[1], ""); status != http.StatusUnauthorized {
		t.Errorf("the disabled user on the API: %d", status)
	}
	if status, _ := root.post("/admin/users/newbie/enable", url.Values{"csrf": {tok}}); status != 200 {
		t.Fatalf("enable: %d", status)
	}
	newbie.signIn("newbie", m[1])

	// A new password: shown once; the old one is refused, and the browser
	// signed in with it is signed out.
	writer := newBrowser(t, w.url)
	writer.signIn("writer", pw)
	status, body = root.post("/admin/users/writer/password", url.Values{"csrf": {tok}, "confirm": {"writer"}})
	np := secretShown.FindStringSubmatch(body)
	if status != 200 || np == nil {
		t.Fatalf("new password: %d\n%s", status, body)
	}
	if status, _, _ := w.callAs("GET", "/api/v1/user/", "writer", pw, ""); status != http.StatusUnauthorized {
		t.Errorf("the old password still works: %d", status)
	}
	if status, _, _ := w.callAs("GET", "/api/v1/user/", "writer", np[1], ""); status != 200 {
		t.Errorf("the new password: %d", status)
	}
	if status, _ := writer.get("/user/writer"); status != http.StatusNotFound {
		t.Errorf("the browser signed in with the old password still reaches the account: %d", status)
	}
	if status, body := root.post("/admin/users/root/disable", url.Values{"csrf": {tok}, "confirm": {"root"}}); status != 400 || !strings.Contains(body, "Cannot update a superuser") {
		t.Errorf("disable a superuser: %d", status)
	}

	// Others post nothing here.
	for _, who := range []string{"owner", "orgadmin"} {
		b := newBrowser(t, w.url)
		b.signIn(who, pw)
		if status, _ := b.post("/admin/users/stranger/disable", url.Values{"csrf": {b.csrf("/user/" + who)}}); status != http.StatusNotFound {
			t.Errorf("%s disables a user: %d, want 404", who, status)
		}
	}

	// Delete, typing the name.
	if status, _ := root.post("/admin/users/delete", url.Values{"csrf": {tok}, "username": {""}}); status != 400 {
		t.Errorf("delete without a name: %d", status)
	}
	if status, _ := root.post("/admin/users/delete", url.Values{"csrf": {tok}, "username": {"newbie"}, "confirm": {"newbie"}}); status != 200 {
		t.Fatalf("delete: %d", status)
	}
	if status, _, raw := w.call("GET", "/api/v1/superuser/users/newbie", "root", ""); status != http.StatusNotFound {
		t.Errorf("the deleted user: %d %s", status, raw)
	}
	wantAudited(t, w.db, "newbie", "user_create(root)", "user_change(root)", "user_delete(root)")
	wantAudited(t, w.db, "writer", "user_change(root)")
}

// TestWebSettings: a repository's settings for its admins; readers and
// strangers see and change nothing; every change is the API's, with its
// validation message and its audit entry.
func TestWebSettings(t *testing.T) {
	w := newWorld(t)
	const page = "/repository/acme/private/settings"
	for _, who := range []string{"anonymous", "stranger"} {
		b := newBrowser(t, w.url)
		if who != "anonymous" {
			b.signIn(who, pw)
		}
		if status, body := b.get(page); status != http.StatusNotFound || strings.Contains(body, "acme/private") {
			t.Errorf("%s: settings = %d", who, status)
		}
		if status, _ := b.post(page+"/visibility", url.Values{"csrf": {b.csrf("/signin")}, "visibility": {"public"}}); status != http.StatusNotFound {
			t.Errorf("%s: change visibility = %d, want 404", who, status)
		}
	}
	reader := newBrowser(t, w.url)
	reader.signIn("reader", pw)
	if status, body := reader.get(page); status != http.StatusForbidden || strings.Contains(body, "Make public") {
		t.Errorf("reader: settings = %d", status)
	}
	if status, _ := reader.post(page+"/visibility", url.Values{"csrf": {reader.csrf("/repository")}, "visibility": {"public"}}); status != http.StatusForbidden {
		t.Errorf("reader changes visibility: %d, want 403", status)
	}
	owner := newBrowser(t, w.url)
	owner.signIn("owner", pw)
	status, body := owner.get(page)
	if status != 200 || !strings.Contains(body, "Make public") || !strings.Contains(body, "readers") {
		t.Fatalf("owner: settings = %d\n%s", status, body)
	}
	tok := owner.csrf(page)
	// CSRF: every form of the page is refused without the token.
	refusedWithoutToken(t, owner, page, 8)
	if ri, _ := w.db.Repositories().Repository(context.Background(), "acme/private"); ri.Visibility != "private" {
		t.Fatal("a form without its token changed the visibility")
	}
	if status, _ := owner.post(page+"/visibility", url.Values{"csrf": {tok}, "visibility": {"public"}}); status != 200 {
		t.Errorf("make public: %d", status)
	}
	if _, body := newBrowser(t, w.url).get("/repository"); !strings.Contains(body, "acme/private") {
		t.Error("anonymous does not see the repository made public")
	}
	// The gate's CEL policy: the API's validation message, the text kept.
	status, body = owner.post(page+"/gate", url.Values{"csrf": {tok}, "tags": {"prod"}, "policy": {"scan.counts.critical == "}})
	if status != http.StatusBadRequest || !strings.Contains(body, `role="alert"`) || !strings.Contains(body, "scan.counts.critical ==</textarea>") {
		t.Errorf("bad policy: %d\n%s", status, body)
	}
	if status, _ := owner.post(page+"/gate", url.Values{"csrf": {tok}, "tags": {"prod"}, "policy": {"size(signatures) >= 0"}}); status != 200 {
		t.Errorf("good policy: %d", status)
	}
	// Permissions, policies, notifications.
	if status, _ := owner.post(page+"/permissions/user", url.Values{"csrf": {tok}, "name": {"stranger"}, "role": {"read"}}); status != 200 {
		t.Errorf("grant: %d", status)
	}
	for _, kind := range []string{"user", "team"} {
		if status, body := owner.post(page+"/permissions/"+kind, url.Values{"csrf": {tok}, "name": {" "}, "role": {"read"}}); status != 400 || !strings.Contains(body, "to grant the role to") {
			t.Errorf("grant to no %s: %d, want 400 with the reason", kind, status)
		}
	}
	if status, _ := owner.post(page+"/policies/immutabilitypolicy/create", url.Values{"csrf": {tok}, "pattern": {"^v[0-9]+$"}}); status != 200 {
		t.Errorf("immutability policy: %d", status)
	}
	if status, body := owner.post(page+"/policies/autoprunepolicy/create", url.Values{"csrf": {tok}, "method": {"number_of_tags"}, "value": {"0"}}); status != 400 || !strings.Contains(body, "at least 1") {
		t.Errorf("bad auto-prune policy: %d", status)
	}
	if status, body := owner.post(page+"/notifications/create", url.Values{"csrf": {tok}, "event": {"repo_push"}, "method": {"email"}, "target": {"nobody"}}); status != 400 || !strings.Contains(body, `role="alert"`) {
		t.Errorf("bad notification: %d", status)
	}
	_, body = owner.get(page)
	for _, want := range []string{"stranger", "^v[0-9]&#43;$", "size(signatures) &gt;= 0", "Make private"} {
		if !strings.Contains(body, want) {
			t.Errorf("settings page lacks %q after the changes", want)
		}
	}
	wantAudited(t, w.db, "acme", "change_repo_visibility(owner)", "gate_change(owner)", "permission_change(owner)", "create_immutability_policy(owner)")
}

// TestWebActionsAudited: the activity page's sync-now and notification
// reset and the tags page's delete write the API's audit entries, with
// the visitor as the actor.
func TestWebActionsAudited(t *testing.T) {
	w := newWorld(t)
	if st, _, raw := w.call("POST", "/api/v1/repository/acme/mirror/mirror", "root", `{"external_reference":"upstream.example.com/library/app",
		"robot_username":"acme+mirror","sync_interval":3600,"sync_start_date":"2030-01-01T00:00:00Z",
		"root_rule":{"rule_kind":"tag_glob_csv","rule_value":["*"]}}`); st != 201 {
		t.Fatalf("create mirror: %d %s", st, raw)
	}
	st, n, raw := w.call("POST", "/api/v1/repository/acme/private/notification/", "owner",
		`{"event":"repo_push","method":"webhook","config":{"url":"https://ci.example.com/hook"},"eventConfig":{}}`)
	if st != 201 {
		t.Fatalf("create notification: %d %s", st, raw)
	}
	uuid, _ := n["uuid"].(string)
	owner := newBrowser(t, w.url)
	owner.signIn("owner", pw)
	tok := owner.csrf("/repository/acme/private/activity")
	if st, body := owner.post("/repository/acme/mirror/sync-now", url.Values{"csrf": {tok}}); st != 200 {
		t.Errorf("sync now: %d\n%s", st, body)
	}
	if st, _ := owner.post("/repository/acme/private/notification/"+uuid+"/reset", url.Values{"csrf": {tok}}); st != 200 {
		t.Errorf("reset: %d", st)
	}
	if st, body := owner.post("/repository/acme/private/delete-tags", url.Values{"csrf": {tok}, "tag": {"v1"}}); st != 200 || !strings.Contains(body, "<td>deleted</td>") {
		t.Errorf("delete tag: %d\n%s", st, body)
	}
	// A reader may do none of it.
	reader := newBrowser(t, w.url)
	reader.signIn("reader", pw)
	rt := reader.csrf("/repository")
	if st, _ := reader.post("/repository/acme/private/notification/"+uuid+"/reset", url.Values{"csrf": {rt}}); st != http.StatusForbidden {
		t.Errorf("reader resets: %d, want 403", st)
	}
	wantAudited(t, w.db, "acme", "repo_mirror_sync_now_requested(owner)", "reset_repo_notification(owner)", "tag_deleted(owner)")
}

// TestWebDotNames: a name of "." or ".." typed into a form is refused
// with the reason, not answered with the redirect the API's router would
// give its path.
func TestWebDotNames(t *testing.T) {
	w := newWorld(t)
	b := newBrowser(t, w.url)
	b.signIn("root", pw)
	for _, name := range []string{".", ".."} {
		for _, f := range []struct{ page, action string }{
			{"/user/root", "/user/root/robots/create"},
			{"/organization/acme", "/organization/acme/robots/create"},
		} {
			status, body := b.post(f.action, url.Values{"csrf": {b.csrf(f.page)}, "name": {name}})
			if status != http.StatusBadRequest || !strings.Contains(body, "may not be") {
				t.Errorf("%s with name %q: %d, want 400 with the reason\n%s", f.action, name, status, body)
			}
		}
	}
}
