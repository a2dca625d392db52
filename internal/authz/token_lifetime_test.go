package authz_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/authz"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestTokenOfADeletedRepository: a registry token is a decision about the
// repository of its name when it was issued. Once that repository is
// deleted, the token does not push it into being again (bob, whose write
// permission went with it, would have been made the new repository's
// admin) nor write one created since under the name.
func TestTokenOfADeletedRepository(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, dialect, authz.Options{CreatePrivateRepoOnPush: true})
			if err := e.push("alice/app:v1", "alice", alicePW); err != nil {
				t.Fatal(err)
			}
			ri, err := e.db.Repositories().Repository(ctx, "alice/app")
			if err != nil {
				t.Fatal(err)
			}
			bob, err := e.db.Users().UserByName(ctx, "bob")
			if err != nil {
				t.Fatal(err)
			}
			if err := e.db.Access().SetPermission(ctx, ri.ID, bob.ID, 0, "write"); err != nil {
				t.Fatal(err)
			}
			st, body := e.token("bob", bobPW, "repository:alice/app:pull,push")
			tok, _ := body["token"].(string)
			if st != 200 || tok == "" || len(e.claims(tok).Access) != 1 || len(e.claims(tok).Access[0].Actions) != 2 {
				t.Fatalf("bob's token: %d %v", st, body)
			}
			do := func(method, path string, body []byte) int {
				t.Helper()
				req, _ := http.NewRequest(method, e.url+path, bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+tok)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				return resp.StatusCode
			}
			if st := do("GET", "/v2/alice/app/tags/list", nil); st != 200 {
				t.Fatalf("bob's token before the delete: %d", st)
			}
			if err := e.db.Repositories().DeleteRepository(ctx, "alice/app", "alice"); err != nil {
				t.Fatal(err)
			}
			layer := []byte("bob's layer")
			if st := do("POST", "/v2/alice/app/blobs/uploads/?digest="+digest.FromBytes(layer).String(), layer); st != 401 && st != 403 {
				t.Fatalf("bob's token pushed the deleted repository: %d", st)
			}
			if ri, err := e.db.Repositories().Repository(ctx, "alice/app"); err != nil || ri.Exists {
				t.Fatalf("the repository was made again: %+v %v", ri, err)
			}
			// alice makes it again: bob's token, asked for before, writes
			// nothing there.
			if err := e.push("alice/app:v2", "alice", alicePW); err != nil {
				t.Fatal(err)
			}
			if st := do("POST", "/v2/alice/app/blobs/uploads/?digest="+digest.FromBytes(layer).String(), layer); st != 401 && st != 403 {
				t.Fatalf("bob's old token wrote the new repository: %d", st)
			}
		})
	}
}

// TestAccessTokenStopsWithItsCreatorsAdminRights: a scoped access token
// acts only where its creator may still make one: an owner removed from
// the organization, whose token for acme/* the organization's admins can
// neither see nor revoke, pushes with it no more.
func TestAccessTokenStopsWithItsCreatorsAdminRights(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, dialect, authz.Options{CreatePrivateRepoOnPush: true})
			root, err := e.db.Users().UserByName(ctx, "root")
			if err != nil {
				t.Fatal(err)
			}
			alice, err := e.db.Users().UserByName(ctx, "alice")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.db.Organizations().CreateOrganization(ctx, "acme", root.ID); err != nil {
				t.Fatal(err)
			}
			owners, err := e.db.Organizations().TeamByName(ctx, "acme", "owners")
			if err != nil {
				t.Fatal(err)
			}
			if err := e.db.Organizations().AddTeamMember(ctx, owners.ID, alice.ID); err != nil {
				t.Fatal(err)
			}
			scopes, _ := json.Marshal([]auth.TokenScope{{Repository: "acme/*", Actions: []string{auth.TokenContentRead, auth.TokenContentWrite}}})
			secret, _ := auth.NewSecret(authz.SecretPrefix)
			if _, err := e.db.Access().CreateAccessToken(ctx, meta.AccessToken{Name: "alices-ci", SecretHash: auth.HashSecret(secret),
				Scopes: scopes, CreatedBy: "alice"}); err != nil {
				t.Fatal(err)
			}
			if err := e.push("acme/app:v1", "alices-ci", secret); err != nil {
				t.Fatalf("the token while alice owns acme: %v", err)
			}
			if _, err := e.db.Organizations().RemoveOrgMember(ctx, "acme", "", alice.ID); err != nil {
				t.Fatal(err)
			}
			if err := e.push("acme/app:v2", "alices-ci", secret); err == nil || !strings.Contains(err.Error(), "401") && errorCode(err) != "DENIED" {
				t.Fatalf("the token of a creator removed from acme pushed: %v", err)
			}
			if err := e.pull("acme/app:v1", "alices-ci", secret); err == nil {
				t.Fatal("the token of a creator removed from acme pulled a private repository")
			}
			st, body := e.token("alices-ci", secret, "repository:acme/app:pull,push")
			if tok, _ := body["token"].(string); st == 200 && tok != "" && len(e.claims(tok).Access) > 0 && len(e.claims(tok).Access[0].Actions) > 0 {
				t.Fatalf("a registry token for the removed creator's token grants %v", e.claims(tok).Access)
			}
		})
	}
}

// TestRegistryTokensStopWithTheirSecret: a registry token is refused from
// the next request on once the secret it was obtained with is replaced:
// a user's password reset (UpdateUser), a robot's token regenerated
// (SetUserSecret). Registry tokens of a scoped access token the user made,
// and anonymous ones, do not depend on the user's password and keep
// working.
func TestRegistryTokensStopWithTheirSecret(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, dialect, authz.Options{CreatePrivateRepoOnPush: true})
			if err := e.push("alice/app:v1", "alice", alicePW); err != nil {
				t.Fatal(err)
			}
			if err := e.db.Repositories().UpdateRepository(ctx, "alice/app", ptr("public"), nil, nil, nil); err != nil {
				t.Fatal(err)
			}
			robot, _ := auth.NewSecret(authz.SecretPrefix)
			if _, err := e.db.Users().CreateRobot(ctx, "alice", "ci", auth.HashSecret(robot)); err != nil {
				t.Fatal(err)
			}
			scopes, _ := json.Marshal([]auth.TokenScope{{Repository: "alice/*", Actions: []string{auth.TokenContentRead}}})
			secret, _ := auth.NewSecret(authz.SecretPrefix)
			if _, err := e.db.Access().CreateAccessToken(ctx, meta.AccessToken{Name: "alices-ci", SecretHash: auth.HashSecret(secret),
				Scopes: scopes, CreatedBy: "alice"}); err != nil {
				t.Fatal(err)
			}
			get := func(authorization string) int {
				t.Helper()
				return e.raw("GET", "/v2/alice/app/tags/list", authorization).status
			}
			tokenOf := func(user, pw string) string {
				t.Helper()
				if user == "" {
					st, body := e.token("", "", "repository:alice/app:pull")
					if tok, _ := body["token"].(string); st == 200 && tok != "" {
						return "Bearer " + tok
					}
					t.Fatalf("anonymous token: %d %v", st, body)
				}
				return e.bearer(user, pw, "repository:alice/app:pull")
			}
			alice, robotTok, scoped, anon := tokenOf("alice", alicePW), tokenOf("alice+ci", robot), tokenOf("alices-ci", secret), tokenOf("", "")
			bob := tokenOf("bob", bobPW)
			for name, tok := range map[string]string{"alice": alice, "robot": robotTok, "scoped": scoped, "anonymous": anon, "bob": bob} {
				if st := get(tok); st != 200 {
					t.Fatalf("%s's token before any change: %d", name, st)
				}
			}

			newHash, err := auth.HashPassword("alice-new-password")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.db.Users().UpdateUser(ctx, "alice", meta.UserChange{SecretHash: &newHash}); err != nil {
				t.Fatal(err)
			}
			if st := get(alice); st != 401 {
				t.Fatalf("alice's token after her password was reset: %d, want 401", st)
			}
			for name, tok := range map[string]string{"robot": robotTok, "scoped": scoped, "anonymous": anon, "bob": bob} {
				if st := get(tok); st != 200 {
					t.Fatalf("%s's token after alice's password was reset: %d", name, st)
				}
			}
			// The new password gets a token that works.
			if st := get(tokenOf("alice", "alice-new-password")); st != 200 {
				t.Fatalf("alice's token with her new password: %d", st)
			}

			regenerated, _ := auth.NewSecret(authz.SecretPrefix)
			if err := e.db.Users().SetUserSecret(ctx, "alice+ci", auth.HashSecret(regenerated)); err != nil {
				t.Fatal(err)
			}
			if st := get(robotTok); st != 401 {
				t.Fatalf("the robot's token after its token was regenerated: %d, want 401", st)
			}
			if st := get(tokenOf("alice+ci", regenerated)); st != 200 {
				t.Fatalf("the robot's token with its new secret: %d", st)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }
