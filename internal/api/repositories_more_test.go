package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
)

func TestRepositoryTags(t *testing.T) {
	urDialects(t, func(t *testing.T, e *urEnv) {
		repoFixture(t, e)
		d1 := e.image("acme/app", "v1", 10)
		d2 := e.image("acme/app", "v2", 20)
		d3 := e.image("acme/app", "v3", 30)
		idx := e.index("acme/app", "multi", d1, d2)
		other := e.image("acme/pub", "x", 1)
		const base = "/api/v1/repository/acme/app/tag/"

		// Listing: readers; newest first; paged.
		e.want("", "GET", base, nil, http.StatusUnauthorized)
		e.want("bob", "GET", base, nil, http.StatusForbidden)
		e.want("alice", "GET", "/api/v1/repository/acme/ghost/tag/", nil, http.StatusNotFound)
		for _, q := range []string{"?limit=x", "?page=y", "?specificTag=bad%20tag"} {
			e.want("carol", "GET", base+q, nil, http.StatusBadRequest)
		}
		type tagList struct {
			Tags []struct {
				Name           string `json:"name"`
				ManifestDigest string `json:"manifest_digest"`
				Size           *int64 `json:"size"`
				IsManifestList bool   `json:"is_manifest_list"`
				Reversion      bool   `json:"reversion"`
				StartTS        int64  `json:"start_ts"`
				LastModified   string `json:"last_modified"`
			} `json:"tags"`
			Page          int  `json:"page"`
			HasAdditional bool `json:"has_additional"`
		}
		list := func(q string) tagList {
			var l tagList
			if err := json.Unmarshal(e.want("carol", "GET", base+q, nil, http.StatusOK).body, &l); err != nil {
				t.Fatal(err)
			}
			return l
		}
		names := func(l tagList) string {
			var s []string
			for _, tg := range l.Tags {
				s = append(s, tg.Name)
			}
			return strings.Join(s, ",")
		}
		if l := list(""); names(l) != "multi,v3,v2,v1" || l.HasAdditional || l.Page != 1 {
			t.Fatalf("tags %s (more %v)", names(l), l.HasAdditional)
		}
		if l := list("?limit=3&page=1"); names(l) != "multi,v3,v2" || !l.HasAdditional {
			t.Fatalf("page 1: %s (more %v)", names(l), l.HasAdditional)
		}
		if l := list("?limit=3&page=2"); names(l) != "v1" || l.HasAdditional || l.Page != 2 {
			t.Fatalf("page 2: %s (more %v)", names(l), l.HasAdditional)
		}
		l := list("?specificTag=v2&onlyActiveTags=true")
		if names(l) != "v2" || l.Tags[0].ManifestDigest != d2.String() || *l.Tags[0].Size != 22 || l.Tags[0].IsManifestList ||
			l.Tags[0].StartTS == 0 || !strings.HasSuffix(l.Tags[0].LastModified, "-0000") {
			t.Fatalf("v2: %+v", l.Tags)
		}
		if l := list("?specificTag=multi"); l.Tags[0].ManifestDigest != idx.String() || !l.Tags[0].IsManifestList || l.Tags[0].Size != nil {
			t.Fatalf("multi: %+v", l.Tags)
		}
		if l := list("?specificTag=nope"); len(l.Tags) != 0 {
			t.Fatalf("nope: %+v", l.Tags)
		}

		// Moving and creating tags: writers, manifests of this repository.
		move := map[string]any{"manifest_digest": d1.String()}
		e.want("", "PUT", base+"v3", move, http.StatusUnauthorized)
		e.want("carol", "PUT", base+"v3", move, http.StatusForbidden)
		e.want("acme+ci", "PUT", base+"v3", move, http.StatusForbidden)
		e.want("dave", "PUT", base+"bad%20tag", move, http.StatusBadRequest)
		e.want("dave", "PUT", base+"-lead", move, http.StatusBadRequest)
		e.want("dave", "PUT", base+"v3", `{"manifest_digest":`, http.StatusBadRequest)
		e.want("dave", "PUT", base+"v3", `{"manifest_digest":"sha256:abc"}`, http.StatusBadRequest)
		e.want("dave", "PUT", base+"v3", `{"image":"abc"}`, http.StatusBadRequest)
		e.want("dave", "PUT", base+"v3", bigBody("manifest_digest"), http.StatusRequestEntityTooLarge)
		e.want("dave", "PUT", base+"v3", map[string]any{"manifest_digest": other.String()}, http.StatusNotFound) // another repository's
		e.want("dave", "PUT", base+"v3", map[string]any{"manifest_digest": digest.FromString("nothing").String()}, http.StatusNotFound)
		e.want("alice", "PUT", "/api/v1/repository/acme/ghost/tag/v1", move, http.StatusNotFound)

		before := len(e.events(meta.EventRepoPush, "acme/app"))
		e.want("dave", "PUT", base+"v3", move, http.StatusCreated)
		e.want("dave", "PUT", base+"v3", move, http.StatusCreated) // no move: no event
		e.want("dave", "PUT", base+"fresh", map[string]any{"manifest_digest": d2.String()}, http.StatusCreated)
		pushes := e.events(meta.EventRepoPush, "acme/app")[before:]
		if len(pushes) != 2 {
			t.Fatalf("%d repo_push events, want 2", len(pushes))
		}
		var ev struct {
			Digest      string   `json:"digest"`
			UpdatedTags []string `json:"updated_tags"`
		}
		json.Unmarshal(pushes[0].Data, &ev)
		if ev.Digest != d1.String() || len(ev.UpdatedTags) != 1 || ev.UpdatedTags[0] != "v3" || pushes[0].Actor != "dave" {
			t.Fatalf("event %s by %s", pushes[0].Data, pushes[0].Actor)
		}
		if l := list("?specificTag=v3"); l.Tags[0].ManifestDigest != d1.String() {
			t.Fatalf("v3 did not move: %+v", l.Tags)
		}

		// Deleting tags.
		e.want("", "DELETE", base+"v3", nil, http.StatusUnauthorized)
		e.want("carol", "DELETE", base+"v3", nil, http.StatusForbidden)
		e.want("dave", "DELETE", base+"v3", nil, http.StatusNoContent)
		e.want("dave", "DELETE", base+"v3", nil, http.StatusNotFound)
		e.want("dave", "DELETE", base+"Bad!", nil, http.StatusBadRequest)
		if len(e.events(meta.EventTagDeleted, "acme/app")) != 1 {
			t.Fatal("no tag_deleted event")
		}
		e.want("dave", "POST", base+"v1", nil, http.StatusMethodNotAllowed)
		if !e.audited(meta.EventRepoPush) || !e.audited(meta.EventTagDeleted) {
			t.Fatal("missing audit entries")
		}

		// The history, as Quay lists it by default: v3 pointed at d3, then
		// at d1, then was deleted; a restore puts it back on d3.
		type period struct{ digest, end, reversion string }
		periods := func(q string) []period {
			var out []period
			for _, tg := range e.want("carol", "GET", base+q, nil, http.StatusOK).obj(t)["tags"].([]any) {
				m := tg.(map[string]any)
				p := period{digest: m["manifest_digest"].(string), reversion: fmt.Sprint(m["reversion"])}
				if end, ok := m["end_ts"].(float64); ok {
					if m["expiration"] == nil || end < m["start_ts"].(float64) {
						t.Errorf("period %v: end_ts without expiration, or before start_ts", m)
					}
					p.end = "ended"
				}
				out = append(out, p)
			}
			return out
		}
		want := []period{{d1.String(), "ended", "false"}, {d3.String(), "ended", "false"}}
		for _, q := range []string{"?specificTag=v3", "?specificTag=v3&onlyActiveTags=false", "?filter_tag_name=eq:v3&onlyActiveTags=False"} {
			if got := periods(q); !reflect.DeepEqual(got, want) {
				t.Fatalf("%s: %v, want %v (newest first, ended)", q, got, want)
			}
		}
		if got := periods("?specificTag=v3&onlyActiveTags=true"); len(got) != 0 {
			t.Fatalf("a deleted tag listed as active: %v", got)
		}
		e.want("dave", "POST", base+"v3/restore", map[string]any{"manifest_digest": d3.String()}, http.StatusOK)
		want = append([]period{{d3.String(), "", "true"}}, want...)
		if got := periods("?specificTag=v3"); !reflect.DeepEqual(got, want) {
			t.Fatalf("after the restore: %v, want %v", got, want)
		}
		if got := periods("?specificTag=v3&onlyActiveTags=1"); !reflect.DeepEqual(got, want[:1]) {
			t.Fatalf("the restored tag: %v, want %v", got, want[:1])
		}
		// The whole history holds each tag's periods: v1, v2, v3 (three),
		// multi and fresh; the active tags v1, v2, v3, multi and fresh.
		if got := periods("?limit=100"); len(got) != 7 {
			t.Fatalf("history of %d periods, want 7: %v", len(got), got)
		}
		if l := list("?onlyActiveTags=true"); names(l) != "v3,fresh,multi,v2,v1" {
			t.Fatalf("active tags %s", names(l))
		}
		if l := list("?onlyActiveTags=true&filter_tag_name=like:V"); names(l) != "v3,v2,v1" {
			t.Fatalf("like:V gave %s", names(l))
		}
		if l := list("?filter_tag_name=like:RES"); names(l) != "fresh" {
			t.Fatalf("like:RES gave %s", names(l))
		}
		if l := list("?filter_tag_name=like:%25"); len(l.Tags) != 0 {
			t.Fatalf("like:%% matched %s: the pattern is not a LIKE pattern", names(l))
		}
		if l := list("?specificTag=v1&filter_tag_name=eq:v2"); len(l.Tags) != 0 {
			t.Fatalf("v1 and v2 at once: %s", names(l))
		}
		// The permission decision comes first, whatever the filters.
		const both = "?specificTag=v1&filter_tag_name=eq:v2"
		e.want("", "GET", base+both, nil, http.StatusUnauthorized)
		e.want("bob", "GET", base+both, nil, http.StatusForbidden)
		e.want("alice", "GET", "/api/v1/repository/acme/ghost/tag/"+both, nil, http.StatusNotFound)
		for _, q := range []string{"?onlyActiveTags=maybe", "?filter_tag_name=v1", "?filter_tag_name=like:", "?filter_tag_name=ne:v1", "?filter_tag_name=eq:bad%20tag"} {
			e.want("carol", "GET", base+q, nil, http.StatusBadRequest)
		}
	})
}

func TestRepositoryPermissions(t *testing.T) {
	urDialects(t, func(t *testing.T, e *urEnv) {
		repoFixture(t, e)
		ctx := context.Background()
		e.user("other", false)
		e.robot("other", "bot")
		team, err := e.db.Organizations().PutTeam(ctx, "acme", meta.Team{Name: "readers", Role: "member"})
		if err != nil {
			t.Fatal(err)
		}
		carol, _ := e.db.Users().UserByName(ctx, "carol")
		e.db.Organizations().AddTeamMember(ctx, team.ID, carol.ID)
		const base = "/api/v1/repository/acme/app/permissions/"

		for _, tc := range []struct {
			as     string
			status int
		}{{"", http.StatusUnauthorized}, {"bob", http.StatusForbidden}, {"dave", http.StatusForbidden}, {"acme+ci", http.StatusForbidden}} {
			e.want(tc.as, "GET", base+"user/", nil, tc.status)
			e.want(tc.as, "PUT", base+"user/bob", map[string]any{"role": "admin"}, tc.status)
			e.want(tc.as, "DELETE", base+"user/carol", nil, tc.status)
			e.want(tc.as, "GET", base+"team/", nil, tc.status)
			e.want(tc.as, "PUT", base+"team/readers", map[string]any{"role": "admin"}, tc.status)
		}

		list := e.want("erin", "GET", base+"user/", nil, http.StatusOK).obj(t)["permissions"].(map[string]any)
		if len(list) != 3 {
			t.Fatalf("permissions %v", list)
		}
		c := list["carol"].(map[string]any)
		if c["role"] != "read" || c["name"] != "carol" || c["is_robot"] != false || c["is_org_member"] != true {
			t.Fatalf("carol %v", c)
		}
		if d := list["dave"].(map[string]any); d["is_org_member"] != false {
			t.Fatalf("dave %v", d)
		}

		// Grant, read back, change, revoke; users and robots alike.
		for _, tc := range []struct {
			body   any
			name   string
			status int
		}{
			{map[string]any{"role": "owner"}, "bob", http.StatusBadRequest},
			{map[string]any{"role": ""}, "bob", http.StatusBadRequest},
			{`{"role":"read","extra":1}`, "bob", http.StatusBadRequest},
			{`{"role":`, "bob", http.StatusBadRequest},
			{bigBody("role"), "bob", http.StatusRequestEntityTooLarge},
			{map[string]any{"role": "read"}, "ghost", http.StatusNotFound},
			{map[string]any{"role": "read"}, "other+bot", http.StatusBadRequest}, // another namespace's robot
		} {
			e.want("erin", "PUT", base+"user/"+tc.name, tc.body, tc.status)
		}
		p := e.want("erin", "PUT", base+"user/bob", map[string]any{"role": "write"}, http.StatusOK).obj(t)
		if p["role"] != "write" || p["name"] != "bob" || p["is_robot"] != false {
			t.Fatalf("bob %v", p)
		}
		e.want("bob", "PUT", "/api/v1/repository/acme/app/tag/t", map[string]any{"manifest_digest": e.image("acme/app", "", 1).String()}, http.StatusCreated)
		e.want("erin", "PUT", base+"user/bob", map[string]any{"role": "read"}, http.StatusOK)
		if p := e.want("erin", "GET", base+"user/bob", nil, http.StatusOK).obj(t); p["role"] != "read" {
			t.Fatalf("bob %v", p)
		}
		e.want("bob", "DELETE", "/api/v1/repository/acme/app/tag/t", nil, http.StatusForbidden)
		p = e.want("alice", "PUT", base+"user/acme+ci", map[string]any{"role": "write"}, http.StatusOK).obj(t)
		if p["is_robot"] != true || p["is_org_member"] != true {
			t.Fatalf("robot %v", p)
		}
		e.want("erin", "GET", base+"user/ghost", nil, http.StatusNotFound)
		e.want("erin", "GET", base+"user/root", nil, http.StatusNotFound) // no explicit permission
		e.want("erin", "DELETE", base+"user/bob", nil, http.StatusNoContent)
		e.want("erin", "DELETE", base+"user/bob", nil, http.StatusNotFound)
		e.want("erin", "DELETE", base+"user/ghost", nil, http.StatusNotFound)
		e.want("bob", "GET", "/api/v1/repository/acme/app", nil, http.StatusForbidden)

		// Teams of the repository's organization.
		e.want("erin", "PUT", base+"team/ghosts", map[string]any{"role": "read"}, http.StatusNotFound)
		p = e.want("erin", "PUT", base+"team/readers", map[string]any{"role": "read"}, http.StatusOK).obj(t)
		if p["role"] != "read" || p["name"] != "readers" || p["is_robot"] != nil {
			t.Fatalf("team %v", p)
		}
		if l := e.want("erin", "GET", base+"team/", nil, http.StatusOK).obj(t)["permissions"].(map[string]any); len(l) != 1 || l["readers"] == nil {
			t.Fatalf("team permissions %v", l)
		}
		e.want("erin", "GET", base+"team/readers", nil, http.StatusOK)
		e.want("erin", "DELETE", base+"team/readers", nil, http.StatusNoContent)
		e.want("erin", "GET", base+"team/readers", nil, http.StatusNotFound)
		e.want("alice", "PUT", "/api/v1/repository/alice/private/permissions/team/readers", map[string]any{"role": "read"}, http.StatusNotFound)
		e.want("alice", "GET", "/api/v1/repository/acme/ghost/permissions/user/", nil, http.StatusNotFound)
		e.want("erin", "POST", base+"user/bob", nil, http.StatusMethodNotAllowed)

		logs := e.want("erin", "GET", "/api/v1/repository/acme/app/logs", nil, http.StatusOK).obj(t)["logs"].([]any)
		kinds := map[string]int{}
		for _, l := range logs {
			kinds[l.(map[string]any)["kind"].(string)]++
		}
		if kinds["permission_change"] != 4 || kinds["permission_delete"] != 2 {
			t.Fatalf("audit kinds %v", kinds)
		}
	})
}

func TestRepositoryLogs(t *testing.T) {
	urDialects(t, func(t *testing.T, e *urEnv) {
		repoFixture(t, e)
		ctx := context.Background()
		for i := range 55 {
			e.db.Access().AppendAudit(ctx, meta.AuditEntry{Kind: "pull", Actor: "carol", Namespace: "acme", Repository: "acme/app", Metadata: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))})
		}
		e.db.Access().AppendAudit(ctx, meta.AuditEntry{Kind: "pull", Actor: "carol", Namespace: "acme", Repository: "acme/pub"})
		const path = "/api/v1/repository/acme/app/logs"
		e.want("", "GET", path, nil, http.StatusUnauthorized)
		e.want("carol", "GET", path, nil, http.StatusForbidden)
		e.want("dave", "GET", path, nil, http.StatusForbidden)
		e.want("erin", "GET", path+"?next_page=x", nil, http.StatusBadRequest)
		e.want("alice", "GET", "/api/v1/repository/acme/ghost/logs", nil, http.StatusNotFound)
		p1 := e.want("erin", "GET", path, nil, http.StatusOK).obj(t)
		np, _ := p1["next_page"].(string)
		if len(p1["logs"].([]any)) != 50 || np == "" {
			t.Fatalf("page 1: %d entries, next %q", len(p1["logs"].([]any)), np)
		}
		p2 := e.want("erin", "GET", path+"?next_page="+np, nil, http.StatusOK).obj(t)
		if p2["next_page"] != nil {
			t.Fatalf("page 2: %v", p2)
		}
		pulls := 0
		for _, l := range append(p1["logs"].([]any), p2["logs"].([]any)...) {
			entry := l.(map[string]any)
			if entry["repository"] != "acme/app" {
				t.Fatalf("entry of another repository: %v", l)
			}
			if entry["kind"] == "pull" {
				pulls++
			}
		}
		if pulls != 55 {
			t.Fatalf("%d pull entries over two pages, want 55", pulls)
		}
	})
}

// TestRepositoryRouting: nested names, suffix dispatch, unknown paths.
func TestRepositoryRouting(t *testing.T) {
	urDialects(t, func(t *testing.T, e *urEnv) {
		repoFixture(t, e)
		e.repo("acme/team/tag", "public") // a repository whose last component is a keyword
		e.repo("acme/logs", "public")
		d := e.image("acme/team/tag", "v1", 1)

		for _, tc := range []struct {
			method, path string
			status       int
		}{
			{"GET", "/api/v1/repository/acme/team/tag", http.StatusOK},        // the repository itself
			{"GET", "/api/v1/repository/acme/team/tag/tag/", http.StatusOK},   // its tags
			{"GET", "/api/v1/repository/acme/logs", http.StatusOK},            // "acme" is no namespace/name
			{"GET", "/api/v1/repository/acme/team/tag/logs", http.StatusOK},   // the nested repository's log
			{"GET", "/api/v1/repository/acme", http.StatusBadRequest},         // no namespace/name
			{"GET", "/api/v1/repository/ACME/app", http.StatusBadRequest},     // bad name
			{"GET", "/api/v1/repository/acme/app%2Fx", http.StatusBadRequest}, // an escaped slash stays one component
			{"GET", "/api/v1/repository/acme/app/nosuchthing/", http.StatusNotFound},
			{"POST", "/api/v1/repository/acme/app/mirror/sync-now/", http.StatusNotFound},
			{"GET", "/api/v1/repository/acme/app/tag/", http.StatusOK},
			{"PATCH", "/api/v1/repository/acme/app", http.StatusMethodNotAllowed},
			{"DELETE", "/api/v1/repository/acme/app/logs", http.StatusMethodNotAllowed},
			{"DELETE", "/api/v1/repository/acme/team/tag/logs", http.StatusNotFound}, // tag "logs" of acme/team
			{"DELETE", "/api/v1/repository/", http.StatusNotFound},
		} {
			r := e.call("root", tc.method, tc.path, nil)
			if r.status != tc.status {
				t.Errorf("%s %s: %d, want %d: %s", tc.method, tc.path, r.status, tc.status, r.body)
			}
		}
		r := e.want("root", "PATCH", "/api/v1/repository/acme/app", nil, http.StatusMethodNotAllowed)
		if allow := r.header.Get("Allow"); allow != "GET, PUT, DELETE" {
			t.Fatalf("Allow %q", allow)
		}
		e.want("dave", "PUT", "/api/v1/repository/acme/team/tag/tag/v1", map[string]any{"manifest_digest": d.String()}, http.StatusForbidden)
		e.want("alice", "PUT", "/api/v1/repository/acme/team/tag/tag/latest", map[string]any{"manifest_digest": d.String()}, http.StatusCreated)
		m := e.want("", "GET", "/api/v1/repository/acme/team/tag", nil, http.StatusOK).obj(t)
		if m["namespace"] != "acme" || m["name"] != "team/tag" || m["tags"].(map[string]any)["latest"] == nil {
			t.Fatalf("nested repository %v", m)
		}
	})
}
