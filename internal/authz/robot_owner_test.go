package authz_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/authz"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestRobotsStopWithTheirUser: a robot of a user's namespace acts as
// nothing while that user is disabled, as in Quay: its login is refused as
// disabled (to whoever holds its token), and a registry token issued to it
// before is refused from its next request on. Enabled again, the user's
// robot works again. A robot of an organization is not affected by its
// admin's standing. Before, a disabled user's robots kept pushing.
func TestRobotsStopWithTheirUser(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, dialect, authz.Options{CreatePrivateRepoOnPush: true})
			if err := e.push("alice/app:v1", "alice", alicePW); err != nil {
				t.Fatal(err)
			}
			secret, _ := auth.NewSecret(authz.SecretPrefix)
			robot, err := e.db.Users().CreateRobot(ctx, "alice", "ci", auth.HashSecret(secret))
			if err != nil {
				t.Fatal(err)
			}
			ri, err := e.db.Repositories().Repository(ctx, "alice/app")
			if err != nil {
				t.Fatal(err)
			}
			if err := e.db.Access().SetPermission(ctx, ri.ID, robot.ID, 0, "write"); err != nil {
				t.Fatal(err)
			}
			// A robot of an organization alice administers.
			alice, err := e.db.Users().UserByName(ctx, "alice")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.db.Organizations().CreateOrganization(ctx, "acme", alice.ID); err != nil {
				t.Fatal(err)
			}
			orgSecret, _ := auth.NewSecret(authz.SecretPrefix)
			if _, err := e.db.Users().CreateRobot(ctx, "acme", "deploy", auth.HashSecret(orgSecret)); err != nil {
				t.Fatal(err)
			}

			login := func(user, secret string) error {
				t.Helper()
				r := httptest.NewRequest(http.MethodGet, "/v2/auth?service=berth", nil)
				r.SetBasicAuth(user, secret)
				_, err := e.az.Login(ctx, r, user, secret)
				return err
			}
			get := func(tok string) int {
				t.Helper()
				req, _ := http.NewRequest("GET", e.url+"/v2/alice/app/manifests/v1", nil)
				req.Header.Set("Accept", "application/vnd.docker.distribution.manifest.v2+json")
				req.Header.Set("Authorization", "Bearer "+tok)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				return resp.StatusCode
			}
			setAliceEnabled := func(on bool) {
				t.Helper()
				if _, err := e.db.Users().UpdateUser(ctx, "alice", meta.UserChange{Enabled: &on}); err != nil {
					t.Fatal(err)
				}
			}

			if err := login("alice+ci", secret); err != nil {
				t.Fatalf("the robot's login: %v", err)
			}
			st, body := e.token("alice+ci", secret, "repository:alice/app:pull,push")
			tok, _ := body["token"].(string)
			if st != 200 || tok == "" || len(e.claims(tok).Access) != 1 || len(e.claims(tok).Access[0].Actions) != 2 {
				t.Fatalf("the robot's registry token: %d %v", st, body)
			}
			if st := get(tok); st != 200 {
				t.Fatalf("the robot's registry token: %d", st)
			}

			setAliceEnabled(false)
			if err := login("alice+ci", secret); !errors.Is(err, authz.ErrDisabled) {
				t.Fatalf("the login of a disabled user's robot: %v, want %v", err, authz.ErrDisabled)
			}
			if err := login("alice+ci", "berth_wrong"); !errors.Is(err, authz.ErrBadCredentials) {
				t.Fatalf("a wrong token for a disabled user's robot: %v, want %v", err, authz.ErrBadCredentials)
			}
			if st := get(tok); st != 401 {
				t.Fatalf("the registry token of a disabled user's robot: %d, want 401", st)
			}
			if err := e.push("alice/app:v2", "alice+ci", secret); errorCode(err) != "UNAUTHORIZED" {
				t.Fatalf("a push by a disabled user's robot: %v", err)
			}
			if st, body := e.token("alice+ci", secret, "repository:alice/app:pull"); st != 401 {
				t.Fatalf("a registry token for a disabled user's robot: %d %v", st, body)
			}
			if err := login("acme+deploy", orgSecret); err != nil {
				t.Fatalf("an organization's robot, its admin disabled: %v", err)
			}

			setAliceEnabled(true)
			if err := login("alice+ci", secret); err != nil {
				t.Fatalf("the robot's login, its user enabled again: %v", err)
			}
			if st := get(tok); st != 200 {
				t.Fatalf("the robot's registry token, its user enabled again: %d", st)
			}
			if err := e.push("alice/app:v2", "alice+ci", secret); err != nil {
				t.Fatalf("a push by the robot, its user enabled again: %v", err)
			}
		})
	}
}
