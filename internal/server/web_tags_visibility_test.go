package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestWebTagsTableHidesWhatTheVisitorMayNotSee: a public repository's
// tags table, seen by an anonymous visitor, names no base image in a
// private repository (nor whether its tag moved) and shows no gate
// candidate's state; its owner sees both, as the manifest page and the
// API's graph and candidate endpoints decide.
func TestWebTagsTableHidesWhatTheVisitorMayNotSee(t *testing.T) {
	host, cfg := serveLive(t, "sqlite", func(*config.Config) {})
	ctx := context.Background()
	db, err := meta.Open(ctx, cfg.DatabaseURL())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	hash, _ := auth.HashPassword(pw)
	owner, err := db.Users().CreateUser(ctx, meta.User{Username: "owner", SecretHash: hash})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Organizations().CreateOrganization(ctx, "acme", owner.ID); err != nil {
		t.Fatal(err)
	}
	push := func(ref string, img v1.Image) string {
		t.Helper()
		r, err := name.ParseReference(host+"/"+ref, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(r, img, remote.WithAuth(&authn.Basic{Username: "owner", Password: pw})); err != nil {
			t.Fatal(err)
		}
		d, _ := img.Digest()
		return d.String()
	}
	api := func(method, path string, body any) (int, string) {
		t.Helper()
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, "http://"+host+path, rd)
		req.Header.Set("Content-Type", "application/json")
		req.SetBasicAuth("owner", pw)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	base, _ := random.Image(1024, 2)
	baseDigest := push("acme/secret-base:1.9", base)
	l, _ := random.Layer(512, types.DockerLayer)
	app, err := mutate.AppendLayers(base, l)
	if err != nil {
		t.Fatal(err)
	}
	appDigest := push("acme/app:v1", app)
	public := "public"
	if err := db.Repositories().UpdateRepository(ctx, "acme/app", &public, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, b := api("GET", "/api/v1/repository/acme/app/manifest/"+appDigest+"/bases", nil)
		if st == 200 && strings.Contains(b, baseDigest) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the application's base was not indexed: %d %s", st, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st, b := api("PUT", "/api/v1/repository/acme/app/gate", map[string]any{"tags": []string{"v*"}, "required_checks": []string{"functional"}}); st != 200 {
		t.Fatalf("gate: %d %s", st, b)
	}
	next, _ := random.Image(1024, 1)
	push("acme/app:v1", next) // a candidate for v1, which stays where it was

	anon := newBrowser(t, "http://"+host)
	st, page := anon.get("/repository/acme/app")
	if st != 200 || !strings.Contains(page, ">v1<") {
		t.Fatalf("anonymous tags page: %d\n%s", st, page)
	}
	if strings.Contains(page, "secret-base") {
		t.Error("an anonymous visitor sees the private base image's name")
	}
	if strings.Contains(page, `<span class="badge">pending</span>`) {
		t.Error("an anonymous visitor sees the gate candidate's state")
	}
	ob := newBrowser(t, "http://"+host)
	ob.signIn("owner", pw)
	if st, page := ob.get("/repository/acme/app"); st != 200 || !strings.Contains(page, "acme/secret-base:1.9") || !strings.Contains(page, `<span class="badge">pending</span>`) {
		t.Errorf("the owner's tags page: %d, want the base and the candidate's state\n%s", st, page)
	}
}

// TestWebListsHugePages: a page or offset far past the end (or past what
// an int64 offset holds once multiplied) answers an empty list, not a
// 500 (PostgreSQL refuses a negative OFFSET).
func TestWebListsHugePages(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			host, _ := serveLive(t, dialect, func(cfg *config.Config) { cfg.Auth.Mode = "none" })
			img, _ := random.Image(256, 1)
			r, err := name.ParseReference(host+"/acme/app:v1", name.Insecure)
			if err != nil {
				t.Fatal(err)
			}
			if err := remote.Write(r, img); err != nil {
				t.Fatal(err)
			}
			b := newBrowser(t, "http://"+host)
			for _, path := range []string{
				"/repository/acme/app?page=200000000000000000",
				"/repository/acme/app?page=9223372036854775807&sort=size",
				"/repository?offset=9223372036854775807",
				"/repository?offset=9223372036854775806&sort=size",
			} {
				if st, body := b.get(path); st != 200 || strings.Contains(body, ">v1<") {
					t.Errorf("GET %s: %d, want 200 and an empty page", path, st)
				}
			}
			if st, body := b.get("/repository/acme/app?page=1"); st != 200 || !strings.Contains(body, ">v1<") {
				t.Errorf("the first page: %d", st)
			}
		})
	}
}

// TestGCExplanationCountsTheTimeMachine: the API's garbage collection
// explanation of a manifest whose tag was just deleted says the time
// machine keeps it, as the collector does (the API's collector had no
// time machine, and told it would be collected).
func TestGCExplanationCountsTheTimeMachine(t *testing.T) {
	w := newWorld(t)
	d := w.digest["private"].String()
	if r := w.do("DELETE", "/v2/acme/private/manifests/v1", "owner", pw, nil); r.StatusCode != 202 {
		t.Fatalf("delete the tag: %d", r.StatusCode)
	}
	st, _, raw := w.call("GET", "/api/v1/repository/acme/private/manifest/"+d+"/gc", "owner", "")
	if st != 200 || !strings.Contains(raw, "protected_by_time_machine") {
		t.Fatalf("gc explanation: %d %s", st, raw)
	}
}
