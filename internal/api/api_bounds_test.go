package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/api"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/testenv"
)

// TestRepositoryDescriptionCap: a description is at most 16 KiB, on
// create and on update; one over is refused with a message and changes
// nothing.
func TestRepositoryDescriptionCap(t *testing.T) {
	e := newOrgEnv(t, "sqlite")
	ok, over := strings.Repeat("d", 16<<10), strings.Repeat("d", 16<<10+1)
	create := func(repo, desc string) string {
		b, _ := json.Marshal(map[string]string{"namespace": "alice", "repository": repo, "visibility": "public", "description": desc})
		return string(b)
	}
	r := e.expect("alice", "POST", "/api/v1/repository", create("big", over), http.StatusBadRequest)
	if !strings.Contains(string(r.body), "16 KiB") {
		t.Fatalf("the refusal does not say the limit: %s", r.body)
	}
	if ri, err := e.db.Repositories().Repository(context.Background(), "alice/big"); err != nil || ri.Exists {
		t.Fatalf("the refused create made %+v (%v)", ri.Exists, err)
	}
	e.expect("alice", "POST", "/api/v1/repository", create("app", ok), http.StatusCreated)
	body := func(desc string) string {
		b, _ := json.Marshal(map[string]string{"description": desc})
		return string(b)
	}
	e.expect("alice", "PUT", "/api/v1/repository/alice/app", body(over), http.StatusBadRequest)
	e.expect("alice", "PUT", "/api/v1/repository/alice/app", body("short"), http.StatusOK)
	e.expect("alice", "PUT", "/api/v1/repository/alice/app", body(ok), http.StatusOK)
	if ri, _ := e.db.Repositories().Repository(context.Background(), "alice/app"); ri.Description != ok {
		t.Fatalf("stored description of %d bytes, want %d", len(ri.Description), len(ok))
	}
}

// TestConcurrentPermissionGrants: the same grant PUT many times at once
// answers 200 every time and stores one permission (PostgreSQL, where
// the grants run in parallel).
func TestConcurrentPermissionGrants(t *testing.T) {
	e := newOrgEnv(t, "postgres")
	ctx := context.Background()
	e.createOrg("alice", "acme")
	e.expect("alice", "POST", "/api/v1/repository", `{"namespace":"acme","repository":"app","visibility":"private"}`, http.StatusCreated)
	e.putTeam("alice", "acme", "devs", "member")
	for _, path := range []string{"/api/v1/repository/acme/app/permissions/user/carol", "/api/v1/repository/acme/app/permissions/team/devs"} {
		const n = 20
		var wg sync.WaitGroup
		errs := make(chan string, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest("PUT", e.url+path, strings.NewReader(`{"role":"write"}`))
				req.Header.Set("Content-Type", "application/json")
				req.SetBasicAuth("alice", e.env.Secret("alice"))
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					errs <- err.Error()
					return
				}
				res.Body.Close()
				if res.StatusCode != http.StatusOK {
					errs <- fmt.Sprintf("status %d", res.StatusCode)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for msg := range errs {
			t.Errorf("PUT %s: %s", path, msg)
		}
	}
	ri, err := e.db.Repositories().Repository(ctx, "acme/app")
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"user", "team"} {
		perms, err := e.db.Access().RepoPermissions(ctx, ri.ID, "acme", kind, "")
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, p := range perms {
			got = append(got, p.Name+":"+p.Role)
		}
		want := map[string]string{"user": "alice:admin,carol:write", "team": "devs:write"}[kind]
		if strings.Join(got, ",") != want {
			t.Fatalf("%s permissions %v, want %s", kind, got, want)
		}
	}
	// A grant still changes the role it replaces.
	e.expect("alice", "PUT", "/api/v1/repository/acme/app/permissions/user/carol", `{"role":"read"}`, http.StatusOK)
	if perms, _ := e.db.Access().RepoPermissions(ctx, ri.ID, "acme", "user", "carol"); len(perms) != 1 || perms[0].Role != "read" {
		t.Fatalf("carol's permission after the change: %+v", perms)
	}
}

// TestAccessTokensPerCreatorCap: a caller may hold at most
// meta.MaxAccessTokensPerCreator unrevoked tokens (400 past it, until one
// is revoked), and lists only the tokens it issued.
func TestAccessTokensPerCreatorCap(t *testing.T) {
	e := newOrgEnv(t, "sqlite")
	e.createOrg("alice", "acme")
	e.createOrg("bob", "bobs")
	create := func(user, name, ns string, status int) resp {
		t.Helper()
		body := `{"name":"` + name + `","scopes":[{"repository":"` + ns + `/*","actions":["content/read"]}]}`
		r := e.send(user, "POST", "/api/v1/tokens", body, true)
		e.check(r, "POST", "/api/v1/tokens", status)
		return r
	}
	create("bob", "bob-one", "bobs", http.StatusCreated)
	for i := 0; i < meta.MaxAccessTokensPerCreator; i++ {
		create("alice", fmt.Sprintf("alice-%d", i), "acme", http.StatusCreated)
	}
	r := create("alice", "alice-over", "acme", http.StatusBadRequest)
	if !strings.Contains(string(r.body), fmt.Sprint(meta.MaxAccessTokensPerCreator)) {
		t.Fatalf("the refusal does not say the limit: %s", r.body)
	}
	// Others are not held back by alice's tokens; a revocation makes room.
	create("bob", "bob-two", "bobs", http.StatusCreated)
	e.expect("alice", "DELETE", "/api/v1/tokens/alice-0", "", http.StatusNoContent)
	create("alice", "alice-again", "acme", http.StatusCreated)

	list := func(user string) []string {
		t.Helper()
		var out struct {
			Tokens []struct {
				Name      string `json:"name"`
				CreatedBy string `json:"created_by"`
			} `json:"tokens"`
		}
		if err := json.Unmarshal(e.expect(user, "GET", "/api/v1/tokens", "", http.StatusOK).body, &out); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, tk := range out.Tokens {
			if tk.CreatedBy != user && user != "root" {
				t.Fatalf("%s lists %s's token %s", user, tk.CreatedBy, tk.Name)
			}
			names = append(names, tk.Name)
		}
		return names
	}
	if got := list("bob"); strings.Join(got, ",") != "bob-one,bob-two" {
		t.Fatalf("bob lists %v", got)
	}
	if got := list("alice"); len(got) != meta.MaxAccessTokensPerCreator+1 {
		t.Fatalf("alice lists %d tokens, want %d", len(got), meta.MaxAccessTokensPerCreator+1)
	}
	if got := list("root"); len(got) != meta.MaxAccessTokensPerCreator+3 {
		t.Fatalf("root lists %d tokens, want every one, %d", len(got), meta.MaxAccessTokensPerCreator+3)
	}
}

// fakeMirrors is a mirror scheduler that seals nothing and runs nothing.
type fakeMirrors struct{}

func (fakeMirrors) Seal(p string) string { return "sealed:" + p }
func (fakeMirrors) Wake()                {}

// TestMirrorConfigBounds: a mirror syncs at most once a minute and has at
// most 100 globs of at most 255 bytes each; anything beyond is refused
// with a message, on create and on update, and changes nothing.
func TestMirrorConfigBounds(t *testing.T) {
	e := newOrgEnvWith(t, testenv.Options{API: api.Options{Mirrors: fakeMirrors{}}})
	e.user("alice", false)
	e.createOrg("alice", "acme")
	e.createRobot("alice", "/api/v1/organization/acme", "mirror", "")
	e.expect("alice", "POST", "/api/v1/repository", `{"namespace":"acme","repository":"app","visibility":"private"}`, http.StatusCreated)
	const path = "/api/v1/repository/acme/app/mirror"
	body := func(interval int, globs []string) string {
		b, _ := json.Marshal(map[string]any{"external_reference": "registry.example:5000/library/alpine", "sync_interval": interval,
			"root_rule": map[string]any{"rule_kind": "tag_glob_csv", "rule_value": globs}, "robot_username": "acme+mirror"})
		return string(b)
	}
	globs := func(n, size int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("%0*d*", size-1, i)
		}
		return out
	}
	for _, c := range []struct {
		name, body, says string
	}{
		{"a second", body(1, []string{"latest"}), "sync_interval"},
		{"59 seconds", body(59, []string{"latest"}), "sync_interval"},
		{"101 globs", body(3600, globs(101, 8)), "at most 100"},
		{"a 256-byte glob", body(3600, globs(1, 256)), "at most 255"},
	} {
		r := e.expect("alice", "POST", path, c.body, http.StatusBadRequest)
		if !strings.Contains(string(r.body), c.says) {
			t.Fatalf("%s: the refusal does not say %q: %s", c.name, c.says, r.body)
		}
		e.expect("alice", "GET", path, "", http.StatusNotFound)
	}
	e.expect("alice", "POST", path, body(60, globs(100, 255)), http.StatusCreated)
	archs := make([]string, 33)
	for i := range archs {
		archs[i] = fmt.Sprint("arch", i)
	}
	e.expect("alice", "PUT", path, `{"architecture_filter": `+mustJSON(archs)+`}`, http.StatusBadRequest)
	e.expect("alice", "PUT", path, `{"architecture_filter": ["`+strings.Repeat("a", 129)+`"]}`, http.StatusBadRequest)
	e.expect("alice", "PUT", path, `{"architecture_filter": `+mustJSON(archs[:32])+`}`, http.StatusCreated)
	e.expect("alice", "PUT", path, `{"sync_interval": 30}`, http.StatusBadRequest)
	e.expect("alice", "PUT", path, `{"root_rule": {"rule_kind": "tag_glob_csv", "rule_value": `+mustJSON(globs(101, 4))+`}}`, http.StatusBadRequest)
	var m struct {
		SyncInterval int `json:"sync_interval"`
		RootRule     struct {
			Value []string `json:"rule_value"`
		} `json:"root_rule"`
	}
	if err := json.Unmarshal(e.expect("alice", "GET", path, "", http.StatusOK).body, &m); err != nil {
		t.Fatal(err)
	}
	if m.SyncInterval != 60 || len(m.RootRule.Value) != 100 {
		t.Fatalf("after refused updates the mirror syncs every %d s with %d globs", m.SyncInterval, len(m.RootRule.Value))
	}
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// TestMirrorStoredBeforeTheBounds: a mirror stored before the interval
// and glob bounds existed can still be changed in other ways, and a
// client that sends its stored settings back is not refused for them;
// changing them to values out of bounds is. Its syncs are scheduled at
// least a minute apart.
func TestMirrorStoredBeforeTheBounds(t *testing.T) {
	e := newOrgEnvWith(t, testenv.Options{API: api.Options{Mirrors: fakeMirrors{}}})
	ctx := context.Background()
	e.user("alice", false)
	e.createOrg("alice", "acme")
	e.createRobot("alice", "/api/v1/organization/acme", "mirror", "")
	e.expect("alice", "POST", "/api/v1/repository", `{"namespace":"acme","repository":"app","visibility":"private"}`, http.StatusCreated)
	const path = "/api/v1/repository/acme/app/mirror"
	e.expect("alice", "POST", path, `{"external_reference":"registry.example:5000/library/alpine","sync_interval":3600,
		"root_rule":{"rule_kind":"tag_glob_csv","rule_value":["latest"]},"robot_username":"acme+mirror"}`, http.StatusCreated)
	// As an earlier version stored it: every 5 seconds, 150 globs.
	m, err := e.db.Mirrors().GetMirror(ctx, "acme/app")
	if err != nil {
		t.Fatal(err)
	}
	legacy := make([]string, 150)
	for i := range legacy {
		legacy[i] = fmt.Sprintf("v%d.*", i)
	}
	legacy[0] = "v" + strings.Repeat("x", 300) // over the length bound too
	m.SyncInterval, m.RootRule.Value = 5*time.Second, legacy
	if err := e.db.Mirrors().UpdateMirror(ctx, m, false); err != nil {
		t.Fatal(err)
	}
	e.expect("alice", "PUT", path, `{"is_enabled": false}`, http.StatusCreated)
	e.expect("alice", "PUT", path, `{"sync_interval": 5, "root_rule": {"rule_kind": "tag_glob_csv", "rule_value": `+mustJSON(legacy)+`}}`, http.StatusCreated)
	e.expect("alice", "PUT", path, `{"sync_interval": 6}`, http.StatusBadRequest)
	e.expect("alice", "PUT", path, `{"root_rule": {"rule_kind": "tag_glob_csv", "rule_value": `+mustJSON(append(legacy, "new"))+`}}`, http.StatusBadRequest)

	if _, err := e.db.Mirrors().StartMirrorSync(ctx, "acme/app", ""); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	if err := e.db.Mirrors().FinishMirrorSync(ctx, "acme/app", meta.MirrorSuccess, ""); err != nil {
		t.Fatal(err)
	}
	if m, err := e.db.Mirrors().GetMirror(ctx, "acme/app"); err != nil || m.NextSyncAt.Before(before.Add(meta.MinMirrorInterval-time.Second)) {
		t.Fatalf("the next sync of a mirror stored with a 5 s interval is at %v (%v), want a minute on", m.NextSyncAt.Sub(before), err)
	}
}
