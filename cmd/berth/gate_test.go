package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-dev/berth/internal/config"
)

// TestGateCLI drives gated promotion from the command line as a user and
// a pipeline would: `berth gate set` guards 15-*, a push to 15-alpine
// leaves the tag where it was, `berth gate status` shows the candidate
// and why it waits, `berth promote` refuses with the reasons (exit 1),
// `berth check` posts results (as a token with the checks action too)
// that the gate stores and acts on, the gate promotes once the check
// passes, a superuser overrides, and `berth gate delete` ends it.
func TestGateCLI(t *testing.T) {
	dir := t.TempDir()
	out, err := runIn(t, "", "admin", "user", "create", "alice", "--superuser", "--data-dir", dir)
	if err != nil {
		t.Fatal(err, out)
	}
	alicePass := regexp.MustCompile(`password: (\S+)`).FindStringSubmatch(out)[1]
	if _, err := runIn(t, "bob-password\n", "admin", "user", "create", "bob", "--password-stdin", "--data-dir", dir); err != nil {
		t.Fatal(err)
	}
	out, err = runIn(t, "", "admin", "token", "create", "ci", "--scope", "bob/app=checks", "--data-dir", dir)
	if err != nil {
		t.Fatal(err, out)
	}
	ciSecret := regexp.MustCompile(`secret: (\S+)`).FindStringSubmatch(out)[1]
	host := serveDir(t, dir, func(cfg *config.Config) { cfg.Scan.Enabled = false; cfg.Graph.Enabled = false })

	bob := authn.FromConfig(authn.AuthConfig{Username: "bob", Password: "bob-password"})
	push := func(tag string) string {
		t.Helper()
		img, _ := random.Image(1024, 1)
		r, _ := name.ParseReference(host+"/bob/app:"+tag, name.Insecure)
		if err := remote.Write(r, img, remote.WithAuth(bob)); err != nil {
			t.Fatal(err)
		}
		d, _ := img.Digest()
		return d.String()
	}
	tagDigest := func(tag string) string {
		t.Helper()
		r, _ := name.ParseReference(host+"/bob/app:"+tag, name.Insecure)
		desc, err := remote.Head(r, remote.WithAuth(bob))
		if err != nil {
			return ""
		}
		return desc.Digest.String()
	}
	// as runs a command with a user's (or token's) credentials on standard input.
	as := func(user, pass string, args ...string) (string, error) {
		return runIn(t, pass+"\n", append(args, "--insecure", "-u", user, "--password-stdin")...)
	}
	repo := host + "/bob/app"
	status := func(extra ...string) []candidateInfo {
		t.Helper()
		out, err := as("bob", "bob-password", append([]string{"gate", "status", repo, "--json"}, extra...)...)
		if err != nil {
			t.Fatalf("gate status --json: %v\n%s", err, out)
		}
		var rep gateStatusReport
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("gate status --json: %v\n%s", err, out)
		}
		var cs []candidateInfo
		if err := json.Unmarshal(rep.Candidates, &cs); err != nil {
			t.Fatal(err)
		}
		return cs
	}
	// waitFor polls the candidates (all states) until one satisfies ok.
	waitFor := func(what string, ok func(candidateInfo) bool) candidateInfo {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			cs := status("--all")
			for _, c := range cs {
				if ok(c) {
					return c
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not reached; candidates: %+v", what, cs)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	first := push("14")
	gateFile := filepath.Join(t.TempDir(), "gate.json")
	if err := os.WriteFile(gateFile, []byte(`{"tags": ["15-*"], "required_checks": ["functional"]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = as("bob", "bob-password", "gate", "set", repo, "--file", gateFile)
	if err != nil || !regexp.MustCompile(`guarded tags\s+15-\*`).MatchString(out) || !regexp.MustCompile(`required checks\s+functional`).MatchString(out) ||
		!regexp.MustCompile(`rollback tag\s+\{tag\}-\{n\}`).MatchString(out) {
		t.Fatalf("gate set: %v\n%s", err, out)
	}
	if err := os.WriteFile(gateFile, []byte(`{"tags": ["15-*"], "policy": "scn.status == \"scanned\""}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err = as("bob", "bob-password", "gate", "set", repo, "--file", gateFile); err == nil || !strings.Contains(err.Error(), "undeclared reference to 'scn'") {
		t.Fatalf("a bad policy: %v\n%s", err, out)
	}

	// A push to a guarded tag is a candidate: the tag does not move.
	cand := push("15-alpine")
	if got := tagDigest("15-alpine"); got != "" {
		t.Fatalf("15-alpine points at %s before any promotion", got)
	}
	c := waitFor("the candidate waits for its check", func(c candidateInfo) bool {
		return c.Digest == cand && c.State == "pending" && len(c.Reasons) > 0
	})
	if c.Tag != "15-alpine" || c.Reasons[0] != `waiting for check "functional"` {
		t.Fatalf("candidate: %+v", c)
	}
	out, err = as("bob", "bob-password", "gate", "status", repo)
	if err != nil || !regexp.MustCompile(`\d+\s+15-alpine\s+`+regexp.QuoteMeta(short(cand))+`\s+pending\s+functional=missing\s+waiting for check "functional"`).MatchString(out) {
		t.Fatalf("gate status table: %v\n%s", err, out)
	}

	// promote: not while the check is missing; exit 1 with the reason.
	var ec *exitCodeError
	out, err = as("bob", "bob-password", "promote", repo+"@"+cand, "--tag", "15-alpine")
	if !errors.As(err, &ec) || ec.code != 1 || !strings.Contains(out, "NOT PROMOTED") || !strings.Contains(out, `  - waiting for check "functional"`) {
		t.Fatalf("promote while pending: %v\n%s", err, out)
	}
	if out, err = as("bob", "bob-password", "promote", repo+"@"+cand); err == nil || !strings.Contains(err.Error(), "--tag is required") {
		t.Fatalf("promote without --tag: %v\n%s", err, out)
	}

	// A pipeline's token posts a failing check: stored, and it blocks.
	if out, err = as("ci", ciSecret, "check", repo+"@"+cand, "--name", "functional", "--status", "maybe"); err == nil || !strings.Contains(err.Error(), "want pending, pass or fail") {
		t.Fatalf("a bad status: %v\n%s", err, out)
	}
	if out, err = as("ci", ciSecret, "check", "bob/app@"+cand, "--name", "functional", "--status", "fail"); err == nil || !strings.Contains(err.Error(), "names no registry") {
		t.Fatalf("no host: %v\n%s", err, out)
	}
	out, err = as("ci", ciSecret, "check", repo+"@"+cand, "--name", "functional", "--status", "fail",
		"--summary", "3 of 120 tests failed", "--details-url", "https://ci.example/runs/7")
	if err != nil || !strings.Contains(out, `check "functional" is fail for `+repo+"@"+cand+" (posted by token:ci)") {
		t.Fatalf("check: %v\n%s", err, out)
	}
	c = waitFor("the failed check blocks", func(c candidateInfo) bool { return c.Digest == cand && c.State == "blocked" })
	if len(c.Checks) != 1 || c.Checks[0].Name != "functional" || c.Checks[0].Status != "fail" || c.Checks[0].Summary != "3 of 120 tests failed" ||
		c.Checks[0].DetailsURL != "https://ci.example/runs/7" || c.Checks[0].Actor != "token:ci" || c.Reasons[0] != `check "functional" failed` {
		t.Fatalf("blocked candidate: %+v", c)
	}
	out, err = as("bob", "bob-password", "promote", repo+"@"+cand, "--tag", "15-alpine")
	if !errors.As(err, &ec) || ec.code != 1 || !strings.Contains(out, "is blocked") || !strings.Contains(out, `  - check "functional" failed`) {
		t.Fatalf("promote while blocked: %v\n%s", err, out)
	}
	// Only a superuser overrides.
	if out, err = as("bob", "bob-password", "promote", repo+"@"+cand, "--tag", "15-alpine", "--override-reason", "trust me"); err == nil ||
		!strings.Contains(err.Error(), "only a superuser") {
		t.Fatalf("override by a non-superuser: %v\n%s", err, out)
	}
	// The token may post checks, not promote.
	if out, err = as("ci", ciSecret, "promote", repo+"@"+cand, "--tag", "15-alpine"); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("promote as the checks token: %v\n%s", err, out)
	}

	// The check passes (the two-argument form): the gate promotes by itself.
	if out, err = as("ci", ciSecret, "check", repo, cand, "--name", "functional", "--status", "pass"); err != nil {
		t.Fatalf("check pass: %v\n%s", err, out)
	}
	c = waitFor("promoted once the check passes", func(c candidateInfo) bool { return c.Digest == cand && c.State == "promoted" })
	if c.RollbackTag != "15-alpine-1" || tagDigest("15-alpine") != cand || tagDigest("15-alpine-1") != cand || tagDigest("14") != first {
		t.Fatalf("after the promotion: %+v, 15-alpine at %s", c, tagDigest("15-alpine"))
	}
	if cs := status(); len(cs) != 0 {
		t.Fatalf("live candidates after the promotion: %+v", cs)
	}
	out, err = as("bob", "bob-password", "gate", "status", repo, "--all")
	if err != nil || !regexp.MustCompile(`15-alpine\s+`+regexp.QuoteMeta(short(cand))+`\s+promoted\s+functional=pass\s+rollback tag 15-alpine-1`).MatchString(out) {
		t.Fatalf("gate status --all: %v\n%s", err, out)
	}

	// A superuser promotes a new candidate regardless of its missing check.
	next := push("15-alpine")
	out, err = as("alice", alicePass, "promote", repo+"@"+next, "--tag", "15-alpine", "--override-reason", "hotfix for CVE-2026-0001")
	if err != nil || !regexp.MustCompile(`rollback tag:\s+15-alpine-2 \(immutable\)`).MatchString(out) || !strings.Contains(out, "override:      hotfix for CVE-2026-0001") {
		t.Fatalf("override: %v\n%s", err, out)
	}
	if tagDigest("15-alpine") != next || tagDigest("15-alpine-1") != cand {
		t.Fatal("the override did not move 15-alpine, or moved its rollback tag")
	}
	// promote a tag the gate does not guard: the API's reason.
	if out, err = as("bob", "bob-password", "promote", repo, next, "--tag", "latest"); err == nil || !strings.Contains(err.Error(), "not guarded") {
		t.Fatalf("an unguarded tag: %v\n%s", err, out)
	}

	// The checks token sees candidates but not the gate's configuration.
	out, err = as("ci", ciSecret, "gate", "status", repo, "--all")
	if err != nil || !strings.Contains(out, "its configuration needs admin") || !strings.Contains(out, "rollback tag 15-alpine-2; override: hotfix for CVE-2026-0001") {
		t.Fatalf("gate status as the token: %v\n%s", err, out)
	}

	out, err = as("bob", "bob-password", "gate", "delete", repo)
	if err != nil || !strings.Contains(out, "deleted the gate of "+repo) {
		t.Fatalf("gate delete: %v\n%s", err, out)
	}
	if out, err = as("bob", "bob-password", "gate", "status", repo); err == nil || !strings.Contains(err.Error(), "has no gate") {
		t.Fatalf("status without a gate: %v\n%s", err, out)
	}
}
