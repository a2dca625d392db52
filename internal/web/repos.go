package web

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
)

// Page sizes, and the repository rows read per listing (so that a visitor
// who may see few of many private repositories cannot make one request
// read them all; the next page continues the scan).
const (
	reposPerPage = 50
	reposMaxRead = 1000
	tagsPerPage  = 50
	// maxListOffset bounds the offsets a list page is asked for: far
	// past any real list, and far from overflowing.
	maxListOffset = 1 << 40
)

type repoGroup struct {
	Namespace string
	Repos     []meta.RepoCard
}

// repositories lists the repositories the visitor may read, grouped by
// namespace: public ones, and private ones the permission decision
// allows (one decision per private row, as the API's listing).
func (u *UI) repositories(w http.ResponseWriter, r *http.Request, v *visitor) error {
	q := r.URL.Query()
	search, sort := strings.TrimSpace(q.Get("q")), q.Get("sort")
	if sort != meta.SortPushed && sort != meta.SortSize {
		sort = meta.SortName
	}
	offset, _ := strconv.Atoi(q.Get("offset"))
	offset = min(max(offset, 0), maxListOffset)
	ctx := r.Context()
	var groups []repoGroup
	shown, read, more := 0, 0, true
	for more && shown < reposPerPage && read < reposMaxRead {
		batch, err := u.db.Repositories.BrowseRepositories(ctx, meta.BrowseQuery{Search: search, Sort: sort,
			PublicOnly: u.opts.Auth != nil && !v.signedIn, Offset: offset, Limit: 100})
		if err != nil {
			return err
		}
		more = len(batch) == 100
		for i, c := range batch {
			offset++
			read++
			if c.Visibility != "public" {
				if ok, err := u.allowed(ctx, v, c.Name, auth.ActionRead); err != nil {
					return err
				} else if !ok {
					continue
				}
			}
			ns, _, _ := strings.Cut(c.Name, "/")
			if len(groups) == 0 || groups[len(groups)-1].Namespace != ns {
				groups = append(groups, repoGroup{Namespace: ns})
			}
			g := &groups[len(groups)-1]
			g.Repos = append(g.Repos, c)
			if shown++; shown == reposPerPage {
				more = more || i < len(batch)-1
				break
			}
		}
	}
	next := ""
	if more {
		nq := url.Values{"q": {search}, "sort": {sort}, "offset": {strconv.Itoa(offset)}}
		next = "/repository?" + nq.Encode()
	}
	u.render(w, r, v, http.StatusOK, "repositories", "Repositories", map[string]any{
		"Groups": groups, "Search": search, "Sort": sort, "Next": next, "Shown": shown, "NewRepo": newRepoLink(v)})
	return nil
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
// tags), its activity, a manifest and a manifest's vulnerabilities as
// CSV. Repository names may be nested (org/team/app).
func (u *UI) repositoryGET(w http.ResponseWriter, r *http.Request, v *visitor) error {
	segs := strings.Split(r.PathValue("path"), "/")
	n := len(segs)
	switch {
	case n >= 5 && segs[n-3] == "manifest" && segs[n-1] == "vulnerabilities.csv":
		return u.vulnCSV(w, r, v, strings.Join(segs[:n-3], "/"), segs[n-2])
	case n >= 4 && segs[n-2] == "manifest":
		return u.manifest(w, r, v, strings.Join(segs[:n-2], "/"), segs[n-1])
	case n >= 3 && segs[n-1] == "activity":
		return u.activity(w, r, v, strings.Join(segs[:n-1], "/"))
	case n >= 3 && segs[n-1] == "settings":
		repo := strings.Join(segs[:n-1], "/")
		if _, err := u.readable(r.Context(), v, repo); err != nil {
			return err
		}
		return u.settings(w, r, v, repo, http.StatusOK, settingsFlash{})
	}
	return u.repository(w, r, v, strings.Join(segs, "/"))
}

// repositoryPOST routes the actions under /repository/.
func (u *UI) repositoryPOST(w http.ResponseWriter, r *http.Request, v *visitor) error {
	segs := strings.Split(r.PathValue("path"), "/")
	n := len(segs)
	switch {
	case n >= 3 && segs[n-1] == "delete-tags":
		return u.deleteTags(w, r, v, strings.Join(segs[:n-1], "/"))
	case n >= 3 && segs[n-1] == "restore-tag":
		return u.restoreTag(w, r, v, strings.Join(segs[:n-1], "/"))
	case n >= 5 && segs[n-3] == "manifest" && (segs[n-1] == "add-tag" || segs[n-1] == "tag-expiration"):
		return u.manifestTagPOST(w, r, v, strings.Join(segs[:n-3], "/"), segs[n-2], segs[n-1])
	case n >= 3 && segs[n-1] == "sync-now":
		return u.syncNow(w, r, v, strings.Join(segs[:n-1], "/"))
	case n >= 5 && segs[n-3] == "notification" && segs[n-1] == "reset":
		return u.resetNotification(w, r, v, strings.Join(segs[:n-3], "/"), segs[n-2])
	}
	for i := n - 2; i >= 2; i-- {
		if segs[i] == "settings" {
			return u.settingsPOST(w, r, v, strings.Join(segs[:i], "/"), strings.Join(segs[i+1:], "/"))
		}
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
	sigs, err := u.rowSignatures(ctx, repo, rows)
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
		"Path": repoPath(repo), "Sigs": sigs}
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
