package web_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/internal/web"
	"github.com/berth-dev/berth/internal/wire"
)

// TestAccountPageListsOwnTokens: a superuser's account page lists the
// access tokens they issued under "The tokens you issued", not another
// user's (the API lists a superuser every token), and at most 100 of
// them, those not revoked first, saying how many more there are. Before,
// it listed alice's token on root's page, and every token.
func TestAccountPageListsOwnTokens(t *testing.T) {
	e := testenv.New(t, testenv.Options{})
	root := e.User("root", true)
	e.User("alice", false)
	for user, token := range map[string]string{"root": "root-ci", "alice": "alice-ci"} {
		body := fmt.Sprintf(`{"name":%q,"scopes":[{"repository":"%s/*","actions":["content/read"]}]}`, token, user)
		if res, answer := e.Do(user, http.MethodPost, "/api/v1/tokens", []byte(body)); res.StatusCode != http.StatusCreated {
			t.Fatalf("%s creates %s: %d %s", user, token, res.StatusCode, answer)
		}
	}
	ctx := context.Background()
	for i := range 150 {
		name := fmt.Sprintf("old-%03d", i)
		if _, err := e.DB.Access().CreateAccessToken(ctx, meta.AccessToken{Name: name, SecretHash: name, Scopes: []byte(`[]`), CreatedBy: "root"}); err != nil {
			t.Fatal(err)
		}
		if err := e.DB.Access().RevokeAccessToken(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	st := wire.WebStores(e.DB)
	st.Sessions = superuserSession{userSession{root}}
	ui := newUI(t, st, web.Options{Auth: e.Authz, API: e.API})
	status, body := get(t, ui, "/user/root", true)
	if status != http.StatusOK {
		t.Fatalf("GET root's account page = %d\n%.2000s", status, body)
	}
	if !strings.Contains(body, "<code>root-ci</code>") {
		t.Errorf("root's account page does not list root-ci\n%.4000s", body)
	}
	if strings.Contains(body, "alice-ci") {
		t.Errorf("root's account page lists alice's token as one root issued\n%.4000s", body)
	}
	if n := strings.Count(body, "<tr><td><code>"); n != 100 {
		t.Errorf("root's account page lists %d tokens, want 100", n)
	}
	if !strings.Contains(body, "51 more tokens") {
		t.Errorf("root's account page does not say how many tokens it leaves out")
	}
}

// superuserSession is userSession of a superuser.
type superuserSession struct{ userSession }

func (s superuserSession) WebSession(ctx context.Context, h string, at time.Time) (meta.WebSession, error) {
	ws, err := s.userSession.WebSession(ctx, h, at)
	ws.Superuser = true
	return ws, err
}
