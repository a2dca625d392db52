package web_test

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/internal/web"
	"github.com/berth-dev/berth/internal/wire"
)

// userSession knows one signed-in user, whatever the cookie.
type userSession struct{ u meta.User }

func (userSession) CreateWebSession(context.Context, meta.WebSession) error { return nil }
func (userSession) DeleteWebSession(context.Context, string) error          { return nil }
func (s userSession) WebSession(_ context.Context, h string, _ time.Time) (meta.WebSession, error) {
	return meta.WebSession{IDHash: h, UserID: s.u.ID, Username: s.u.Username, CSRF: strings.Repeat("c", 43), Enabled: true}, nil
}

// TestNamespacePagesListEveryRepository: of 101 repositories, the
// organization page and the account page show the first 100 (one API
// page) and a link to the next page, which shows the last one and no
// further link.
func TestNamespacePagesListEveryRepository(t *testing.T) {
	e := testenv.New(t, testenv.Options{})
	alice := e.User("alice", false)
	e.Org("acme", "alice")
	ctx := context.Background()
	for _, ns := range []string{"acme", "alice"} {
		for i := range 101 {
			if err := e.DB.Repositories().CreateRepository(ctx, fmt.Sprintf("%s/r%03d", ns, i), "private", "", "test", 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	st := wire.WebStores(e.DB)
	st.Sessions = userSession{alice}
	ui := newUI(t, st, web.Options{Auth: e.Authz, API: e.API})
	for ns, page := range map[string]string{"acme": "/organization/acme", "alice": "/user/alice"} {
		repoLink := regexp.MustCompile(`>` + ns + `/r(\d{3})</a>`)
		status, body := get(t, ui, page, true)
		shown := repoLink.FindAllStringSubmatch(body, -1)
		if status != http.StatusOK || len(shown) != 100 || shown[0][1] != "000" || shown[99][1] != "099" {
			t.Fatalf("GET %s = %d with %d repositories, want 200 and r000 to r099\n%.2000s", page, status, len(shown), body)
		}
		next := nextHref(body)
		if !strings.HasPrefix(next, page+"?repos_after=") {
			t.Fatalf("GET %s: the next page's link is %q", page, next)
		}
		status, body = get(t, ui, strings.SplitN(next, "#", 2)[0], true)
		shown = repoLink.FindAllStringSubmatch(body, -1)
		if status != http.StatusOK || len(shown) != 1 || shown[0][1] != "100" {
			t.Errorf("GET %s's next page = %d with %v, want 200 and r100 alone\n%.2000s", page, status, shown, body)
		}
		if n := nextHref(body); n != "" {
			t.Errorf("GET %s: the last page links another: %s", page, n)
		}
	}
}
