package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
)

// TestPermissionMatrixAPI drives the repository endpoints of /api/v1 as
// every kind of identity on public, private, read-only and mirror
// repositories, and repository creation in the organization.
func TestPermissionMatrixAPI(t *testing.T) {
	w := newWorld(t)
	identities := []string{"anonymous", "owner", "reader", "writer", "creator", "orgadmin", "stranger", "robot", "robot-mirror", "token-in", "token-out", "token-expired", "root"}
	// Expected per identity and repository: read, write (tags), admin
	// (settings and permissions). Tokens have content scopes only: they
	// read, move tags (content/write) and delete them (content/delete)
	// where their scope reaches, as on /v2, and never administer.
	want := map[string]map[string]string{
		"anonymous":     {"public": "Y--", "private": "---", "readonly": "---", "mirror": "---"},
		"owner":         {"public": "YYY", "private": "YYY", "readonly": "Y-Y", "mirror": "Y-Y"},
		"reader":        {"public": "Y--", "private": "Y--", "readonly": "Y--", "mirror": "Y--"},
		"writer":        {"public": "YY-", "private": "YY-", "readonly": "Y--", "mirror": "Y--"},
		"creator":       {"public": "Y--", "private": "---", "readonly": "---", "mirror": "---"},
		"orgadmin":      {"public": "YYY", "private": "YYY", "readonly": "Y-Y", "mirror": "Y-Y"},
		"stranger":      {"public": "Y--", "private": "---", "readonly": "---", "mirror": "---"},
		"robot":         {"public": "YY-", "private": "YY-", "readonly": "Y--", "mirror": "Y--"},
		"robot-mirror":  {"public": "YY-", "private": "YY-", "readonly": "Y--", "mirror": "YY-"},
		"token-in":      {"public": "YY-", "private": "YY-", "readonly": "Y--", "mirror": "Y--"},
		"token-out":     {"public": "Y--", "private": "---", "readonly": "---", "mirror": "---"},
		"token-expired": {"public": "---", "private": "---", "readonly": "---", "mirror": "---"},
		"root":          {"public": "YYY", "private": "YYY", "readonly": "Y-Y", "mirror": "Y-Y"},
	}
	visibility := map[string]string{"public": "public", "private": "private", "readonly": "private", "mirror": "private"}
	state := map[string]string{"public": "NORMAL", "private": "NORMAL", "readonly": "READ_ONLY", "mirror": "MIRROR"}
	type endpoint struct {
		class        int // 0 read, 1 write, 2 admin
		method, path string
		body         func(repo, who string) string
	}
	endpoints := []endpoint{
		{0, "GET", "/api/v1/repository/%s", nil},
		{0, "GET", "/api/v1/repository/%s/tag/", nil},
		{1, "PUT", "/api/v1/repository/%s/tag/t-%s", func(repo, who string) string {
			return fmt.Sprintf(`{"manifest_digest":%q}`, w.digest[repo])
		}},
		{1, "DELETE", "/api/v1/repository/%s/tag/t-%s", nil},
		{2, "GET", "/api/v1/repository/%s/permissions/user/", nil},
		{2, "PUT", "/api/v1/repository/%s/permissions/user/grantee", func(string, string) string { return `{"role":"read"}` }},
		{2, "DELETE", "/api/v1/repository/%s/permissions/user/grantee", nil},
		{2, "POST", "/api/v1/repository/%s/changevisibility", func(repo, _ string) string {
			return fmt.Sprintf(`{"visibility":%q}`, visibility[repo])
		}},
		{2, "PUT", "/api/v1/repository/%s/changestate", func(repo, _ string) string { return fmt.Sprintf(`{"state":%q}`, state[repo]) }},
		{2, "GET", "/api/v1/repository/%s/logs", nil},
		{0, "GET", "/api/v1/repository/%s/manifest/{digest}/security?vulnerabilities=true", nil},
	}
	w.user("grantee")
	cells := 0
	for _, who := range identities {
		c := w.creds[who]
		for _, repo := range []string{"public", "private", "readonly", "mirror"} {
			for _, ep := range endpoints {
				path := fmt.Sprintf(ep.path, "acme/"+repo, strings.ReplaceAll(who, "-", ""))
				if !strings.Contains(ep.path, "t-%s") {
					path = fmt.Sprintf(ep.path, "acme/"+repo)
				}
				path = strings.Replace(path, "{digest}", w.digest[repo].String(), 1)
				var body []byte
				if ep.body != nil {
					body = []byte(ep.body(repo, who))
				}
				resp := w.do(ep.method, path, c[0], c[1], body, "Content-Type", "application/json")
				allowed := want[who][repo][ep.class] == 'Y'
				denied := resp.StatusCode == 401 || resp.StatusCode == 403 || (who == "token-expired" && resp.StatusCode == 429)
				if allowed == denied || (allowed && resp.StatusCode >= 300) {
					t.Errorf("%s %s as %s: status %d, want %s", ep.method, path, who, resp.StatusCode, map[bool]string{true: "success", false: "refused"}[allowed])
				}
				if denied && who == "anonymous" && resp.StatusCode != 401 {
					t.Errorf("%s %s as anonymous: %d, want 401", ep.method, path, resp.StatusCode)
				}
				cells++
			}
		}
		// Creating a repository in the organization.
		resp := w.do("POST", "/api/v1/repository", c[0], c[1],
			[]byte(fmt.Sprintf(`{"namespace":"acme","repository":"api-%s","visibility":"private","description":""}`, strings.ReplaceAll(who, "-", ""))),
			"Content-Type", "application/json")
		mayCreate := map[string]bool{"owner": true, "creator": true, "orgadmin": true, "token-in": true, "root": true}[who]
		if mayCreate != (resp.StatusCode == 201) {
			t.Errorf("POST /api/v1/repository as %s: %d", who, resp.StatusCode)
		}
		cells++
	}
	t.Logf("%d cells", cells)
}

// TestPermissionMatrixNamespaces drives the organization, team, robot,
// log and superuser endpoints as every kind of identity.
func TestPermissionMatrixNamespaces(t *testing.T) {
	w := newWorld(t)
	identities := []string{"anonymous", "owner", "reader", "writer", "creator", "orgadmin", "stranger", "robot", "robot-mirror", "token-in", "token-out", "token-expired", "root"}
	classes := map[string]map[string]bool{
		"admin":     {"owner": true, "orgadmin": true, "root": true},
		"member":    {"owner": true, "reader": true, "writer": true, "creator": true, "orgadmin": true, "root": true},
		"superuser": {"root": true},
		// A team's members list: its own members and the organization's
		// admins (Quay's ViewTeamPermission).
		"readers": {"owner": true, "reader": true, "orgadmin": true, "root": true},
		"user":    {"owner": true, "reader": true, "writer": true, "creator": true, "orgadmin": true, "stranger": true, "root": true},
	}
	type endpoint struct {
		class, method, path, body string
	}
	endpoints := []endpoint{
		{"admin", "GET", "/api/v1/organization/acme/members", ""},
		{"admin", "PUT", "/api/v1/organization/acme/team/t-%s", `{"role":"member"}`},
		{"admin", "PUT", "/api/v1/organization/acme/team/t-%s/members/stranger", ""},
		{"admin", "DELETE", "/api/v1/organization/acme/team/t-%s", ""},
		{"readers", "GET", "/api/v1/organization/acme/team/readers/members", ""},
		{"admin", "GET", "/api/v1/organization/acme/robots", ""},
		{"admin", "PUT", "/api/v1/organization/acme/robots/r%s", `{}`},
		{"admin", "POST", "/api/v1/organization/acme/robots/r%s/regenerate", ""},
		{"admin", "DELETE", "/api/v1/organization/acme/robots/r%s", ""},
		{"admin", "GET", "/api/v1/organization/acme/logs", ""},
		{"superuser", "GET", "/api/v1/superuser/logs", ""},
		{"superuser", "GET", "/api/v1/superuser/vulndb", ""},
		{"superuser", "POST", "/api/v1/superuser/vulndb", `{"id":"BERTH-TEST-%s","modified":"2026-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"Go","name":"example.com/m"},"versions":["1.0.0"]}]}`},
		{"superuser", "POST", "/api/v1/superuser/users/", `{"username":"made-by-%s","email":"x@example.com"}`},
		{"superuser", "GET", "/api/v1/superuser/users/", ""},
		{"superuser", "GET", "/api/v1/superuser/users/stranger", ""},
		{"superuser", "PUT", "/api/v1/superuser/users/stranger", `{"email":"stranger-%s@example.com"}`},
		{"user", "POST", "/api/v1/organization/", `{"name":"org-%s"}`},
	}
	cells := 0
	for _, who := range identities {
		c := w.creds[who]
		short := strings.ReplaceAll(who, "-", "")
		for _, ep := range endpoints {
			path, body := ep.path, ep.body
			if strings.Contains(path, "%s") {
				path = fmt.Sprintf(path, short)
			}
			if strings.Contains(body, "%s") {
				body = fmt.Sprintf(body, short)
			}
			resp := w.do(ep.method, path, c[0], c[1], []byte(body), "Content-Type", "application/json")
			allowed := classes[ep.class][who]
			denied := resp.StatusCode == 401 || resp.StatusCode == 403 || (who == "token-expired" && resp.StatusCode == 429)
			if allowed == denied || (allowed && resp.StatusCode >= 300) {
				t.Errorf("%s %s as %s: status %d, want %s", ep.method, path, who, resp.StatusCode, map[bool]string{true: "success", false: "refused"}[allowed])
			}
			cells++
		}
	}
	t.Logf("%d cells", cells)
}

// TestAPITagChangesTakeTheScopesOfV2: an access token's scopes mean on
// /api/v1 what they mean on /v2 (ACR's scope maps): deleting a tag needs
// content/delete, pointing it at a manifest content/write, setting its
// expiration metadata/write. A metadata/write token used to delete and
// move tags, and a content/delete one could not delete them.
func TestAPITagChangesTakeTheScopesOfV2(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	token := func(name string, actions ...string) [2]string {
		secret, _ := auth.NewSecret("berth_")
		b, _ := json.Marshal([]auth.TokenScope{{Repository: "acme/*", Actions: append([]string{auth.TokenContentRead}, actions...)}})
		if _, err := w.db.Access().CreateAccessToken(ctx, meta.AccessToken{Name: name, SecretHash: auth.HashSecret(secret), Scopes: b}); err != nil {
			t.Fatal(err)
		}
		return [2]string{name, secret}
	}
	meta_, write, del := token("meta-only", auth.TokenMetadataWrite), token("write-only", auth.TokenContentWrite), token("delete-only", auth.TokenContentDelete)
	// content/write alone (no content/read), as a CI token that only pushes.
	pushOnly := func() [2]string {
		secret, _ := auth.NewSecret("berth_")
		b, _ := json.Marshal([]auth.TokenScope{{Repository: "acme/*", Actions: []string{auth.TokenContentWrite}}})
		if _, err := w.db.Access().CreateAccessToken(ctx, meta.AccessToken{Name: "push-only", SecretHash: auth.HashSecret(secret), Scopes: b}); err != nil {
			t.Fatal(err)
		}
		return [2]string{"push-only", secret}
	}()
	d := w.digest["private"].String()
	const tag = "/api/v1/repository/acme/private/tag/"
	exp := fmt.Sprintf(`{"expiration":%d}`, time.Now().Add(time.Hour).Unix())
	for _, c := range []struct {
		who          [2]string
		method, path string
		body         string
		status       int
	}{
		{write, "PUT", tag + "moved", fmt.Sprintf(`{"manifest_digest":%q}`, d), 201},
		{pushOnly, "PUT", tag + "by-push-only", fmt.Sprintf(`{"manifest_digest":%q}`, d), 201},
		{pushOnly, "PUT", tag + "by-push-only", exp, 403},
		{meta_, "PUT", tag + "by-meta", fmt.Sprintf(`{"manifest_digest":%q}`, d), 403},
		{del, "PUT", tag + "by-delete", fmt.Sprintf(`{"manifest_digest":%q}`, d), 403},
		{meta_, "PUT", tag + "moved", exp, 201},
		{write, "PUT", tag + "moved", exp, 403},
		{meta_, "DELETE", tag + "moved", "", 403},
		{write, "DELETE", tag + "moved", "", 403},
		{del, "DELETE", tag + "moved", "", 204},
	} {
		resp := w.do(c.method, c.path, c.who[0], c.who[1], []byte(c.body), "Content-Type", "application/json")
		if resp.StatusCode != c.status {
			t.Errorf("%s %s %s as %s: %d, want %d", c.method, c.path, c.body, c.who[0], resp.StatusCode, c.status)
		}
	}
}
