package web

import (
	"context"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/gc"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/scan"
)

// AdminStore reads the figures of the admin page (*meta.DB): the job
// queues as the metrics read them, and the storage's blobs and uploads.
type AdminStore interface {
	Figures(ctx context.Context) (meta.Figures, error)
	StorageFigures(ctx context.Context) (meta.StorageFigures, error)
}

// vulnSource is an imported ecosystem with its staleness.
type vulnSource struct {
	Ecosystem string    `json:"ecosystem"`
	Records   int64     `json:"records"`
	UpdatedAt time.Time `json:"updated_at"`
	Stale     bool
}

type queueRow struct {
	Name string
	meta.QueueFigures
}

// adminUsersPage is how many users the admin page lists at once.
const adminUsersPage = 100

// admin is the superuser's page: the users (Quay's superuser panel:
// create, disable and enable, set a new password, delete), the
// organizations, the vulnerability database's sources
// (what `berth admin vulndb status` and GET /api/v1/superuser/vulndb show) with
// their staleness, garbage collection's status (GET
// /api/v1/superuser/gc), the storage's figures and the job queues (the
// metrics' figures). Anyone else finds nothing here.
func (u *UI) admin(w http.ResponseWriter, r *http.Request, v *visitor) error {
	return u.adminPage(w, r, v, http.StatusOK, formFlash{})
}

// adminPage renders the admin page, with a refused form's flash.
func (u *UI) adminPage(w http.ResponseWriter, r *http.Request, v *visitor, status int, flash formFlash) error {
	if !v.id.Superuser {
		return errNotFound
	}
	ctx := r.Context()
	stale := u.opts.VulnStaleAfter
	if stale <= 0 {
		stale = scan.DefaultStaleAfter
	}
	data := map[string]any{"StaleAfter": stale.String(), "Flash": flash}
	var vdb struct {
		Ecosystems []vulnSource `json:"ecosystems"`
	}
	if err := u.call(r, v, http.MethodGet, "/api/v1/superuser/vulndb", nil, &vdb); err != nil {
		data["VulnError"] = err.Error()
	}
	now := u.opts.Now()
	for i := range vdb.Ecosystems {
		vdb.Ecosystems[i].Stale = now.Sub(vdb.Ecosystems[i].UpdatedAt) > stale
	}
	data["Vulns"] = vdb.Ecosystems
	var orgs struct {
		Organizations []struct {
			Name   string   `json:"name"`
			Owners []string `json:"owners"`
		} `json:"organizations"`
	}
	if err := u.call(r, v, http.MethodGet, "/api/v1/superuser/organizations/", nil, &orgs); err != nil {
		return pageError(err)
	}
	data["Orgs"] = orgs.Organizations
	var users struct {
		Users []struct {
			Username  string `json:"username"`
			Email     string `json:"email"`
			SuperUser bool   `json:"super_user"`
			Enabled   bool   `json:"enabled"`
		} `json:"users"`
		NextPage string `json:"next_page"`
	}
	after := r.URL.Query().Get("users_after")
	if err := u.call(r, v, http.MethodGet, "/api/v1/superuser/users/?limit="+strconv.Itoa(adminUsersPage)+"&next_page="+url.QueryEscape(after), nil, &users); err != nil {
		return pageError(err)
	}
	data["Users"], data["UsersNext"], data["UsersAfter"], data["CSRF"] = users.Users, users.NextPage, after, v.csrf
	var st gc.Status
	if err := u.call(r, v, http.MethodGet, "/api/v1/superuser/gc", nil, &st); err != nil {
		data["GCError"] = err.Error() // e.g. housekeeping off (501)
	} else {
		data["GC"] = st
	}
	if u.db.Admin != nil {
		sf, err := u.db.Admin.StorageFigures(ctx)
		if err != nil {
			return err
		}
		f, err := u.db.Admin.Figures(ctx)
		if err != nil {
			return err
		}
		for _, q := range u.opts.Queues {
			if _, ok := f.Queues[q]; !ok {
				f.Queues[q] = meta.QueueFigures{}
			}
		}
		var queues []queueRow
		for name, q := range f.Queues {
			queues = append(queues, queueRow{name, q})
		}
		sort.Slice(queues, func(i, j int) bool { return queues[i].Name < queues[j].Name })
		data["Storage"], data["Queues"], data["FeedLag"], data["Unsequenced"] = sf, queues, f.FeedLag, f.Unsequenced
	}
	u.render(w, r, v, status, "admin", "Administration", data)
	return nil
}

// adminPOST routes the admin page's actions on users, each the superuser
// API's request; anyone but a superuser finds nothing here. What cannot
// be undone, or locks a user out, asks to be confirmed: a user's deletion
// takes the name typed twice, disabling it the name typed once beside
// its button, a new password a ticked confirmation of that user's, so
// that a stray click changes nothing (enabling is one click). A refusal
// renders the page again with the message and the form as typed.
func (u *UI) adminPOST(w http.ResponseWriter, r *http.Request, v *visitor) error {
	if !v.id.Superuser {
		return errNotFound
	}
	f := func(k string) string { return strings.TrimSpace(r.PostFormValue(k)) }
	action := r.PathValue("action")
	segs := strings.Split(action, "/")
	var err error
	switch {
	case len(segs) == 2 && segs[0] == "users" && segs[1] == "create":
		err = u.createUser(w, r, v, f("username"), f("email"))
	case len(segs) == 2 && segs[0] == "users" && segs[1] == "delete":
		switch name := f("username"); {
		case name == "":
			err = fail(http.StatusBadRequest, "Type the name of the user to delete.")
		case f("confirm") != name:
			err = fail(http.StatusBadRequest, "Type the user's name twice, the second time to confirm, to delete it; nothing was deleted.")
		default:
			if err = u.call(r, v, http.MethodDelete, "/api/v1/superuser/users/"+esc(name), nil, nil); err == nil {
				http.Redirect(w, r, "/admin#users", http.StatusSeeOther)
			}
		}
	case len(segs) == 3 && segs[0] == "users" && (segs[2] == "disable" || segs[2] == "enable"):
		if segs[2] == "disable" && f("confirm") != segs[1] {
			err = fail(http.StatusBadRequest, "Type %s in the field beside its “Disable” button to disable it; nothing was changed.", segs[1])
			break
		}
		if err = u.call(r, v, http.MethodPut, "/api/v1/superuser/users/"+esc(segs[1]), map[string]bool{"enabled": segs[2] == "enable"}, nil); err == nil {
			http.Redirect(w, r, "/admin#users", http.StatusSeeOther)
		}
	case len(segs) == 3 && segs[0] == "users" && segs[2] == "password":
		if r.PostFormValue("confirm") != segs[1] {
			err = fail(http.StatusBadRequest, "Tick “confirm” beside the “New password” of %s to give it a new password; nothing was changed.", segs[1])
			break
		}
		err = u.newPassword(w, r, v, segs[1])
	default:
		return errNotFound
	}
	if err != nil {
		return u.refused(r, err, segs[0], action, func(status int, flash formFlash) error {
			return u.adminPage(w, r, v, status, flash)
		})
	}
	return nil
}

// createUser creates a user and shows its generated password, once.
func (u *UI) createUser(w http.ResponseWriter, r *http.Request, v *visitor, name, email string) error {
	if name == "" {
		return fail(http.StatusBadRequest, "A user needs a name.")
	}
	var out struct {
		Username string `json:"username"`
		Password string `json:"password"`
	}
	if err := u.call(r, v, http.MethodPost, "/api/v1/superuser/users/", map[string]string{"username": name, "email": email}, &out); err != nil {
		return err
	}
	u.showSecret(w, r, v, "Administration", "User "+out.Username+" created: its password", out.Username, out.Password, "/admin")
	return nil
}

// newPassword gives a user a generated password and shows it, once.
func (u *UI) newPassword(w http.ResponseWriter, r *http.Request, v *visitor, name string) error {
	password, err := auth.NewSecret("")
	if err != nil {
		return err
	}
	if err := u.call(r, v, http.MethodPut, "/api/v1/superuser/users/"+esc(name), map[string]string{"password": password}, nil); err != nil {
		return err
	}
	u.showSecret(w, r, v, "Administration", "A new password for "+name, name, password, "/admin")
	return nil
}
