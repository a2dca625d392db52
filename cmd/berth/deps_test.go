package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
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

	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/server"
)

// TestDeps: `berth deps` prints an image's base and what is built on it,
// marks what is stale once the base tag moves, and shows each caller only
// the repositories it may read.
func TestDeps(t *testing.T) {
	dir := t.TempDir()
	out, err := runIn(t, "", "admin", "user", "create", "alice", "--superuser", "--data-dir", dir)
	if err != nil {
		t.Fatal(err, out)
	}
	password := regexp.MustCompile(`password: (\S+)`).FindStringSubmatch(out)[1]
	if _, err := runIn(t, "bob-password\n", "admin", "user", "create", "bob", "--password-stdin", "--data-dir", dir); err != nil {
		t.Fatal(err)
	}
	host := serveDir(t, dir, func(cfg *config.Config) { cfg.Scan.Enabled = false })

	push := func(user, pass, ref string, img v1.Image) {
		t.Helper()
		r, _ := name.ParseReference(host+"/"+ref, name.Insecure)
		if err := remote.Write(r, img, remote.WithAuth(&authn.Basic{Username: user, Password: pass})); err != nil {
			t.Fatal(err)
		}
	}
	on := func(base v1.Image) v1.Image {
		l, _ := random.Layer(512, types.DockerLayer)
		img, _ := mutate.AppendLayers(base, l)
		return img
	}
	base, _ := random.Image(1024, 2)
	push("alice", password, "alice/base:1", base)
	push("alice", password, "alice/secret:1", on(base))
	// Bob may read the base (it is public) and builds on it.
	req, _ := http.NewRequest("POST", "http://"+host+"/api/v1/repository/alice/base/changevisibility", strings.NewReader(`{"visibility":"public"}`))
	req.SetBasicAuth("alice", password)
	req.Header.Set("Content-Type", "application/json")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("make the base public: %v %v", resp, err)
	}
	push("bob", "bob-password", "bob/app:v1", on(base))

	deps := func(user, pass, ref string, extra ...string) depsReport {
		t.Helper()
		var rep depsReport
		deadline := time.Now().Add(30 * time.Second)
		for {
			out, err := runIn(t, pass+"\n", append([]string{"deps", host + "/" + ref, "--insecure", "-u", user, "--password-stdin", "--json"}, extra...)...)
			if err != nil {
				t.Fatalf("deps %s: %v\n%s", ref, err, out)
			}
			if err := json.Unmarshal([]byte(out), &rep); err != nil {
				t.Fatalf("deps --json: %v\n%s", err, out)
			}
			if len(rep.Bases) > 0 || len(rep.Dependents) > 0 || time.Now().After(deadline) {
				return rep
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if rep := deps("bob", "bob-password", "bob/app:v1"); len(rep.Bases) != 1 || rep.Bases[0].Repository != "alice/base" || rep.Bases[0].Moved {
		t.Fatalf("bob's app's bases: %+v", rep.Bases)
	}
	// Wait for alice's private image too, then ask as each.
	deadline := time.Now().Add(30 * time.Second)
	for len(deps("alice", password, "alice/base:1").Dependents) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("alice/secret was not indexed")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if rep := deps("bob", "bob-password", "alice/base:1"); len(rep.Dependents) != 1 || rep.Dependents[0].Repository != "bob/app" {
		t.Fatalf("bob sees dependents he may not read: %+v", rep.Dependents)
	}
	// The base moves: both dependents are stale, and the table says so.
	push("alice", password, "alice/base:1", on(base))
	out, err = runIn(t, "bob-password\n", "deps", host+"/bob/app:v1", "--insecure", "-u", "bob", "--password-stdin")
	if err != nil || !regexp.MustCompile(`1\s+alice/base@sha256:[0-9a-f]{12}\s+1 \(moved to sha256:[0-9a-f]{12}\)\s+by layers\s+STALE`).MatchString(out) {
		t.Fatalf("table after the move: %v\n%s", err, out)
	}
	if _, err := runIn(t, "wrong\n", "deps", host+"/bob/app:v1", "--insecure", "-u", "bob", "--password-stdin"); err == nil {
		t.Fatal("a wrong password was accepted")
	}
}

// serveDir serves a Berth (with its background work) on a data directory
// the admin commands already wrote to, from the default configuration as
// changed by edit, and returns its host:port. It stops when the test ends.
func serveDir(t *testing.T, dir string, edit func(*config.Config)) string {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = dir
	cfg.Storage.Filesystem.Fsync = false
	edit(&cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Addr = ln.Addr().String()
	srv, err := server.New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done; srv.Close() })
	return ln.Addr().String()
}
