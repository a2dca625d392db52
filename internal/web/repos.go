package web

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/uipath"
)

// Page sizes, and the repository rows read per listing (so that a visitor
// who may see few of many private repositories cannot make one request
// read them all; the next page continues the scan).
const (
	reposPerPage  = 50
	reposMaxRead  = 1000
	reposReadSize = 100
	tagsPerPage   = 50
	// maxListOffset bounds the offsets a list page is asked for: far
	// past any real list, and far from overflowing.
	maxListOffset = 1 << 40
)

// repoGroup is a table of the listing: a namespace's repositories, or
// (Namespace "") all those of a page not sorted by name.
type repoGroup struct {
	Namespace string
	Repos     []meta.RepoCard
}

// repositories lists the repositories the visitor may read, grouped by
// namespace when sorted by name (one table otherwise): public ones, and
// private ones the permission decision allows (one decision per private
// row, as the API's listing).
//
// A page continues after the last row the previous one showed (?after=
// its name, &at= its sort value): a keyset of a row the visitor sees, so
// the link says nothing of the rows it may not see (how many were
// skipped, nor which names match a search). Next is offered only when
// another visible row follows, or when the page stopped at the rows it
// may read (reposMaxRead); then &resume= carries, sealed, the last row
// read, which may be a private one.
func (u *UI) repositories(w http.ResponseWriter, r *http.Request, v *visitor) error {
	q := r.URL.Query()
	search, sort := strings.TrimSpace(q.Get("q")), q.Get("sort")
	if sort != meta.SortPushed && sort != meta.SortSize {
		sort = meta.SortName
	}
	var shownAfter meta.BrowseKey // the last row the visitor saw
	if a := q.Get("after"); a != "" {
		if oci.ValidateName(a) != nil {
			return fail(http.StatusBadRequest, "The page link is not valid: start from the first page.")
		}
		shownAfter.Name = a
		if sort != meta.SortName {
			n, err := strconv.ParseInt(q.Get("at"), 10, 64)
			if err != nil {
				return fail(http.StatusBadRequest, "The page link is not valid: start from the first page.")
			}
			shownAfter.Value = n
		}
	}
	after := shownAfter // where the scan goes on
	if rs := q.Get("resume"); rs != "" {
		// One this server cannot open (sealed by a server with another
		// key): go on from the last row shown.
		if k, ok := u.openListCursor(rs, search, sort); ok {
			after = k
		}
	}
	ctx := r.Context()
	var groups []repoGroup
	shown, read := 0, 0
	last := shownAfter
	exhausted, another := false, false
	for !exhausted && !another && read < reposMaxRead {
		batch, err := u.db.Repositories.BrowseRepositories(ctx, meta.BrowseQuery{Search: search, Sort: sort,
			PublicOnly: u.opts.Auth != nil && !v.signedIn, After: after, Limit: reposReadSize})
		if err != nil {
			return err
		}
		exhausted = len(batch) < reposReadSize
		for _, c := range batch {
			read++
			after = c.Key(sort)
			if c.Visibility != "public" {
				if ok, err := u.allowed(ctx, v, c.Name, auth.ActionRead); err != nil {
					return err
				} else if !ok {
					continue
				}
			}
			if shown == reposPerPage {
				another = true // the page is full and a visible row follows
				break
			}
			// Only rows sorted by name come a namespace at a time; others
			// are one table, each row naming its namespace.
			ns := ""
			if sort == meta.SortName {
				ns, _, _ = strings.Cut(c.Name, "/")
			}
			if len(groups) == 0 || groups[len(groups)-1].Namespace != ns {
				groups = append(groups, repoGroup{Namespace: ns})
			}
			g := &groups[len(groups)-1]
			g.Repos = append(g.Repos, c)
			shown++
			last = c.Key(sort)
		}
	}
	next := ""
	if another || !exhausted {
		nq := url.Values{"sort": {sort}}
		if search != "" {
			nq.Set("q", search)
		}
		if last.Name != "" {
			nq.Set("after", last.Name)
			if sort != meta.SortName {
				nq.Set("at", strconv.FormatInt(last.Value, 10))
			}
		}
		if !another && shown < reposPerPage {
			// Stopped at reposMaxRead before the page filled: go on
			// after the last row read, which must not be shown.
			nq.Set("resume", u.sealListCursor(search, sort, after))
		}
		next = "/repository?" + nq.Encode()
	}
	u.render(w, r, v, http.StatusOK, "repositories", "Repositories", map[string]any{
		"Groups": groups, "Search": search, "Sort": sort, "Next": next, "Shown": shown, "NewRepo": newRepoLink(v)})
	return nil
}

// listCursor is a repository listing's position sealed in a page link.
type listCursor struct {
	Search string `json:"q"`
	Sort   string `json:"sort"`
	Name   string `json:"name"`
	Value  int64  `json:"at"`
}

// listCursorPrefix keeps a sealed cursor apart from anything else the
// key seals.
const listCursorPrefix = "web-repositories:"

// sealListCursor makes a listing's position one a visitor carries but
// can neither read nor forge (the position may be a private name).
func (u *UI) sealListCursor(search, sort string, k meta.BrowseKey) string {
	b, _ := json.Marshal(listCursor{Search: search, Sort: sort, Name: k.Name, Value: k.Value})
	return base64.RawURLEncoding.EncodeToString([]byte(u.cursors.Seal(append([]byte(listCursorPrefix), b...))))
}

// openListCursor reads a cursor sealListCursor made for the same search
// and sort.
func (u *UI) openListCursor(s, search, sort string) (meta.BrowseKey, bool) {
	sealed, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return meta.BrowseKey{}, false
	}
	b, err := u.cursors.Open(string(sealed))
	if err != nil {
		return meta.BrowseKey{}, false
	}
	b, ok := bytes.CutPrefix(b, []byte(listCursorPrefix))
	var c listCursor
	if !ok || json.Unmarshal(b, &c) != nil || c.Search != search || c.Sort != sort || c.Name == "" {
		return meta.BrowseKey{}, false
	}
	return meta.BrowseKey{Name: c.Name, Value: c.Value}, true
}

// newRepoLink is where a signed-in user creates repositories and
// organizations (the account page), or "" for anyone else.
func newRepoLink(v *visitor) string {
	if !v.signedIn || v.id.Kind != auth.KindUser {
		return ""
	}
	return "/user/" + esc(v.id.Name) + "#new-repository"
}

// repositoryGET routes the pages under /repository/: a repository (its
// tags), its activity and settings, a manifest and a manifest's
// vulnerabilities as CSV. Repository names may be nested (org/team/app).
func (u *UI) repositoryGET(w http.ResponseWriter, r *http.Request, v *visitor) error {
	name, page := uipath.Split(strings.Split(r.PathValue("path"), "/"))
	repo := strings.Join(name, "/")
	switch {
	case len(page) == 0 || len(page) == 1 && page[0] == "":
		return u.repository(w, r, v, repo)
	case len(page) == 1 && page[0] == "activity":
		return u.activity(w, r, v, repo)
	case len(page) == 1 && page[0] == "settings":
		if _, err := u.readable(r.Context(), v, repo); err != nil {
			return err
		}
		return u.settings(w, r, v, repo, http.StatusOK, formFlash{})
	case len(page) == 2 && page[0] == "manifest":
		return u.manifest(w, r, v, repo, page[1])
	case len(page) == 3 && page[0] == "manifest" && page[2] == "vulnerabilities.csv":
		return u.vulnCSV(w, r, v, repo, page[1])
	}
	return errNotFound
}

// routePOST splits an action's path as uipath.Split does a page's.
func routePOST(segs []string) (name, action []string) {
	if i := slices.Index(segs, "-"); i >= 0 {
		return segs[:i], segs[i+1:]
	}
	n := len(segs)
	switch last := segs[n-1]; {
	case n >= 3 && (last == "delete-tags" || last == "restore-tag" || last == "sync-now"):
		return segs[:n-1], segs[n-1:]
	case n >= 5 && segs[n-3] == "manifest" && (last == "add-tag" || last == "tag-expiration"),
		n >= 5 && segs[n-3] == "notification" && last == "reset":
		return segs[:n-3], segs[n-3:]
	}
	for i := n - 2; i >= 2; i-- {
		if segs[i] == "settings" {
			return segs[:i], segs[i:]
		}
	}
	return segs, nil
}

// repositoryPOST routes the actions under /repository/.
func (u *UI) repositoryPOST(w http.ResponseWriter, r *http.Request, v *visitor) error {
	name, action := routePOST(strings.Split(r.PathValue("path"), "/"))
	repo := strings.Join(name, "/")
	switch {
	case len(action) == 1 && action[0] == "delete-tags":
		return u.deleteTags(w, r, v, repo)
	case len(action) == 1 && action[0] == "restore-tag":
		return u.restoreTag(w, r, v, repo)
	case len(action) == 1 && action[0] == "sync-now":
		return u.syncNow(w, r, v, repo)
	case len(action) == 3 && action[0] == "manifest" && (action[2] == "add-tag" || action[2] == "tag-expiration"):
		return u.manifestTagPOST(w, r, v, repo, action[1], action[2])
	case len(action) == 3 && action[0] == "notification" && action[2] == "reset":
		return u.resetNotification(w, r, v, repo, action[1])
	case len(action) >= 2 && action[0] == "settings":
		return u.settingsPOST(w, r, v, repo, strings.Join(action[1:], "/"))
	}
	return errNotFound
}

// hideUnreadableBases leaves out of the rows the base images in
// repositories the visitor may not read (as the manifest page and the
// API's graph endpoints): a public image built on a private base must not
// name it, nor say whether its tag moved.
func (u *UI) hideUnreadableBases(ctx context.Context, v *visitor, rows []meta.TagRow) error {
	readable := u.mayRead(ctx, v)
	for i := range rows {
		r := &rows[i]
		shown := r.PlatformBases[:0]
		for _, pb := range r.PlatformBases {
			ok, err := readable(pb.Repository)
			if err != nil {
				return err
			}
			if ok {
				shown = append(shown, pb)
			}
		}
		r.PlatformBases, r.Base, r.BaseStale = shown, "", false
		if len(shown) > 0 {
			r.Base, r.BaseStale = shown[0].Base, shown[0].Stale
		}
	}
	return nil
}

// tagSorts are the tags table's sort orders.
var tagSorts = map[string]bool{meta.SortPushed: true, meta.SortName: true, meta.SortSize: true}

// repository is a repository's tags table: sorted and filtered by query
// parameters (no script needed), paginated, with multi-select delete for
// those who may change tags.
func (u *UI) repository(w http.ResponseWriter, r *http.Request, v *visitor, repo string) error {
	ctx := r.Context()
	ri, err := u.readable(ctx, v, repo)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	sort, filter := q.Get("sort"), strings.TrimSpace(q.Get("filter"))
	if !tagSorts[sort] {
		sort = meta.SortPushed
	}
	reverse := q.Get("order") == "reverse"
	page, _ := strconv.Atoi(q.Get("page"))
	page = min(max(page, 1), maxListOffset/tagsPerPage) // no offset overflows (PostgreSQL refuses a negative one)
	rows, total, err := u.db.Content.TagRows(ctx, repo, meta.TagRowQuery{Filter: filter, Sort: sort, Reverse: reverse,
		Offset: (page - 1) * tagsPerPage, Limit: tagsPerPage})
	if errors.Is(err, meta.ErrRepositoryNotFound) {
		return errNotFound
	} else if err != nil {
		return err
	}
	canWrite, err := u.allowed(ctx, v, repo, auth.ActionWrite)
	if err != nil {
		return err
	}
	canAdmin, err := u.allowed(ctx, v, repo, auth.ActionAdmin)
	if err != nil {
		return err
	}
	canCheck, err := u.allowed(ctx, v, repo, auth.ActionChecks)
	if err != nil {
		return err
	}
	if err := u.hideUnreadableBases(ctx, v, rows); err != nil {
		return err
	}
	for i := range rows {
		if !canCheck {
			rows[i].Promotion = "" // the gate's state is for those who may post checks (as the API's candidates)
		}
	}
	sigs, err := u.rowSignatures(ctx, repo, ri.Gated, rows)
	if err != nil {
		return err
	}
	coverage, err := u.rowCoverages(ctx, repo, rows)
	if err != nil {
		return err
	}
	link := func(p int, s string, rev bool) string {
		lq := url.Values{"sort": {s}, "page": {strconv.Itoa(p)}}
		if filter != "" {
			lq.Set("filter", filter)
		}
		if rev {
			lq.Set("order", "reverse")
		}
		return repoPath(repo) + "?" + lq.Encode()
	}
	sortLinks := map[string]string{}
	for s := range tagSorts {
		sortLinks[s] = link(1, s, s == sort && !reverse)
	}
	data := map[string]any{"Repo": ri, "Rows": rows, "Total": total, "Filter": filter, "Sort": sort, "Reverse": reverse,
		"SortLinks": sortLinks, "Page": page, "CanWrite": canWrite, "CanAdmin": canAdmin, "Registry": u.opts.Registry,
		"Path": repoPath(repo), "Sigs": sigs, "Coverage": coverage}
	if page > 1 {
		data["Prev"] = link(page-1, sort, reverse)
	}
	if page*tagsPerPage < total {
		data["Next"] = link(page+1, sort, reverse)
	}
	u.render(w, r, v, http.StatusOK, "repository", repo, data)
	return nil
}

type tagOutcome struct {
	Tag, Outcome string
	OK           bool
}

// deleteTags deletes the selected tags, each with the API's DELETE
// .../tag/{tag}: its permission (write), rules (an immutable tag is
// refused with its reason) and audit entry (the tag_deleted event's).
func (u *UI) deleteTags(w http.ResponseWriter, r *http.Request, v *visitor, repo string) error {
	ctx := r.Context()
	if _, err := u.readable(ctx, v, repo); err != nil {
		return err
	}
	if ok, err := u.allowed(ctx, v, repo, auth.ActionWrite); err != nil {
		return err
	} else if !ok {
		return fail(http.StatusForbidden, "You may not delete tags of %s.", repo)
	}
	tags := r.PostForm["tag"]
	if len(tags) == 0 {
		return fail(http.StatusBadRequest, "No tag was selected.")
	}
	if len(tags) > tagsPerPage {
		// A page offers no more: each is an API request.
		return fail(http.StatusBadRequest, "Select at most %d tags at once; nothing was deleted.", tagsPerPage)
	}
	var out []tagOutcome
	for _, tag := range tags {
		err := u.call(r, v, http.MethodDelete, repoAPI(repo, "tag", esc(tag)), nil, nil)
		var e *apiError
		switch {
		case err == nil:
			out = append(out, tagOutcome{tag, "deleted", true})
		case !errors.As(err, &e):
			return err
		case e.Status == http.StatusNotFound:
			out = append(out, tagOutcome{tag, "not found (already deleted?)", false})
		case e.Status == http.StatusBadRequest:
			out = append(out, tagOutcome{tag, "not a valid tag name", false})
		default:
			out = append(out, tagOutcome{tag, "refused: " + e.Message, false})
		}
	}
	u.render(w, r, v, http.StatusOK, "message", "Delete tags", map[string]any{"Outcomes": out, "Back": repoPath(repo),
		"Message": "Deleting tags of " + repo})
	return nil
}
