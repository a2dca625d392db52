package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
)

// TestHeldCandidateFollowsTheTokenCreatorsRights: whether a registry
// token may see a gate's candidates is decided at each request (it is
// never in the token's claims), and for a scoped access token's registry
// token it is decided on the scopes its creator may still grant, as for
// the access token's own secret. An organization admin's token with the
// checks action sees a candidate; once the admin is removed from the
// organization, the registry token asked for before gets 404 for it.
// Before, such a decision used the access token's scopes unbounded, and
// the candidate stayed visible until the registry token expired.
func TestHeldCandidateFollowsTheTokenCreatorsRights(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	secret, _ := auth.NewSecret("berth_")
	scopes, _ := json.Marshal([]auth.TokenScope{{Repository: "acme/*", Actions: []string{auth.TokenContentRead, auth.TokenChecks}}})
	if _, err := w.db.Access().CreateAccessToken(ctx, meta.AccessToken{Name: "orgadmin-checks", SecretHash: auth.HashSecret(secret),
		Scopes: scopes, CreatedBy: "orgadmin"}); err != nil {
		t.Fatal(err)
	}
	gate := `{"tags":["15-*"],"checkers":["acme+ci"],"required_checks":["functional"]}`
	if st, _, raw := w.call("PUT", "/api/v1/repository/acme/private/gate", "owner", gate); st != 200 {
		t.Fatalf("set gate: %d %s", st, raw)
	}
	cand, _ := w.pushTagged("acme/private", "15-alpine", "layer of the held candidate")

	req, _ := http.NewRequest("GET", w.url+"/v2/auth?service=berth&scope=repository:acme/private:pull", nil)
	req.SetBasicAuth("orgadmin-checks", secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body struct{ Token string }
	json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != 200 || body.Token == "" {
		t.Fatalf("registry token: %d", resp.StatusCode)
	}
	get := func(path string) int {
		t.Helper()
		req, _ := http.NewRequest("GET", w.url+path, nil)
		req.Header.Set("Authorization", "Bearer "+body.Token)
		req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	candidate := "/v2/acme/private/manifests/" + cand.String()
	if st := get(candidate); st != 200 {
		t.Fatalf("the candidate, with the token of an organization admin: %d", st)
	}

	orgadmin, err := w.db.Users().UserByName(ctx, "orgadmin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.db.Organizations().RemoveOrgMember(ctx, "acme", "", orgadmin.ID); err != nil {
		t.Fatal(err)
	}
	if st := get(candidate); st != 404 {
		t.Fatalf("the candidate, with the token of an admin removed from the organization: %d, want 404", st)
	}
}
