package api

import (
	"container/list"
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
)

// repoHandler serves an endpoint under /api/v1/repository/{repo}: repo is
// the validated repository name, args the path segments its suffix's
// wildcards matched.
type repoHandler func(w http.ResponseWriter, r *http.Request, id auth.Identity, repo string, args []string) error

// repoEndpoint is one endpoint under /api/v1/repository/{repo}/.
type repoEndpoint struct {
	method string
	// suffix is the path after the repository name, "/"-separated; "{}"
	// matches one non-empty segment, and a trailing "/" must be present.
	// The empty suffix is the repository itself.
	suffix string
	h      repoHandler
}

// repositoryEndpoints lists the endpoints under a repository. Features
// with their own endpoints there (notifications, mirroring, security) add
// theirs to this list.
func (a *API) repositoryEndpoints() []repoEndpoint {
	eps := []repoEndpoint{
		{http.MethodGet, "", a.getRepository},
		{http.MethodPut, "", a.repoSetting("description")},
		{http.MethodDelete, "", a.deleteRepository},
		{http.MethodPost, "changevisibility", a.repoSetting("visibility")},
		{http.MethodPut, "changestate", a.repoSetting("state")},
		{http.MethodGet, "logs", a.repositoryLogs},
		{http.MethodGet, "tag/", a.listTags},
		{http.MethodPut, "tag/{}", a.tag},
		{http.MethodDelete, "tag/{}", a.tag},
	}
	for _, kind := range []string{"user", "team"} {
		h := a.permissions(kind)
		eps = append(eps, repoEndpoint{http.MethodGet, "permissions/" + kind + "/", h}, repoEndpoint{http.MethodGet, "permissions/" + kind + "/{}", h},
			repoEndpoint{http.MethodPut, "permissions/" + kind + "/{}", h}, repoEndpoint{http.MethodDelete, "permissions/" + kind + "/{}", h})
	}
	eps = append(eps, a.mirrorEndpoints()...)
	eps = append(eps, a.securityEndpoints()...)
	eps = append(eps, a.gcEndpoints()...)
	eps = append(eps, a.graphEndpoints()...)
	eps = append(eps, a.gateEndpoints()...)
	eps = append(eps, a.policyEndpoints()...)
	eps = append(eps, a.authorizedEmailEndpoints()...)
	return append(eps, a.notificationEndpoints()...)
}

func (a *API) repositoryRoutes() {
	a.handle("POST /api/v1/repository", a.createRepository)
	a.handle("GET /api/v1/repository", a.listRepositories)
	endpoints := a.repositoryEndpoints()
	a.handle("/api/v1/repository/", func(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
		return a.dispatchRepository(w, r, id, endpoints)
	})
}

// dispatchRepository routes /api/v1/repository/{repo}/{suffix}: ServeMux
// patterns cannot follow a multi-segment wildcard with a suffix, and
// repository names may be nested (org/team/app). A suffix must leave a
// namespace/name before it, so "org/app/logs" is the log of org/app and
// "org/logs" the repository of that name; of several matching suffixes,
// one that takes the method wins, then the longest ("GET org/a/tag/logs"
// is the log of org/a/tag, "PUT org/a/tag/logs" moves tag "logs" of org/a).
//
// A segment "-" (which no repository name, tag, user or team name can
// be) ends the name: "org/ci/gate/-" is the repository org/ci/gate and
// "org/ci/gate/-/gate" its gate, where "org/ci/gate" is the gate of
// org/ci. The web UI addresses every repository so.
//
// HEAD is served as GET, as ServeMux serves it for every "GET" pattern:
// the handler sees a GET (some serve several methods), and net/http
// drops the body it writes.
func (a *API) dispatchRepository(w http.ResponseWriter, r *http.Request, id auth.Identity, endpoints []repoEndpoint) error {
	if r.Method == http.MethodHead {
		get := *r
		get.Method = http.MethodGet
		r = &get
	}
	rest := strings.TrimPrefix(r.URL.EscapedPath(), "/api/v1/repository/")
	if rest == "" {
		switch r.Method {
		case http.MethodGet:
			return a.listRepositories(w, r, id)
		case http.MethodPost:
			return a.createRepository(w, r, id)
		}
		return notFound("no such endpoint")
	}
	segs := strings.Split(rest, "/")
	for i, s := range segs {
		u, err := url.PathUnescape(s)
		if err != nil || strings.Contains(u, "/") {
			return badRequest("malformed path segment %q", s)
		}
		segs[i] = u
	}
	if i := slices.Index(segs, nameEnd); i >= 0 {
		return a.dispatchExact(w, r, id, endpoints, segs[:i], segs[i+1:])
	}
	// The matching suffix, preferring one that takes the method, then the
	// longest; none is the repository itself.
	suffix, repoSegs, args, best := "", segs, []string(nil), 0
	for _, ep := range endpoints {
		pat := strings.Split(ep.suffix, "/")
		score := 2 * len(pat)
		if ep.method == r.Method {
			score += 1000
		}
		if ep.suffix == "" || score <= best {
			continue
		}
		if rs, as, ok := matchSuffix(segs, pat); ok {
			suffix, repoSegs, args, best = ep.suffix, rs, as, score
		}
	}
	repo := strings.Join(repoSegs, "/")
	if err := oci.ValidateName(repo); err != nil {
		if suffix == "" && segs[len(segs)-1] == "" {
			return notFound("no such endpoint") // an unknown suffix ending in '/'
		}
		return badRequest("invalid repository name: %v", err)
	}
	return a.runEndpoint(w, r, id, endpoints, repo, suffix, args)
}

// nameEnd is the path segment that ends a repository's name.
const nameEnd = "-"

// dispatchExact routes a path whose repository name ends at "-": rest is
// the whole suffix (none, or one empty segment, is the repository
// itself).
func (a *API) dispatchExact(w http.ResponseWriter, r *http.Request, id auth.Identity, endpoints []repoEndpoint, repoSegs, rest []string) error {
	repo := strings.Join(repoSegs, "/")
	if err := oci.ValidateName(repo); err != nil {
		return badRequest("invalid repository name: %v", err)
	}
	if len(rest) == 0 || len(rest) == 1 && rest[0] == "" {
		return a.runEndpoint(w, r, id, endpoints, repo, "", nil)
	}
	// The suffix that matches all of rest, preferring one that takes the
	// method. matchSuffix wants a namespace/name before the suffix: two
	// placeholders stand for it.
	suffix, args, found := "", []string(nil), false
	for _, ep := range endpoints {
		pat := strings.Split(ep.suffix, "/")
		if ep.suffix == "" || len(pat) != len(rest) || found && ep.method != r.Method {
			continue
		}
		if _, as, ok := matchSuffix(append([]string{"", ""}, rest...), pat); ok {
			suffix, args, found = ep.suffix, as, true
			if ep.method == r.Method {
				break
			}
		}
	}
	if !found {
		return notFound("no such endpoint")
	}
	return a.runEndpoint(w, r, id, endpoints, repo, suffix, args)
}

// runEndpoint runs the endpoint of suffix that takes the request's method
// for the repository, or answers 405 with the methods it takes.
func (a *API) runEndpoint(w http.ResponseWriter, r *http.Request, id auth.Identity, endpoints []repoEndpoint, repo, suffix string, args []string) error {
	if !strings.Contains(repo, "/") {
		return badRequest("invalid repository name %q: want namespace/name", repo)
	}
	var allow []string
	for _, ep := range endpoints {
		if ep.suffix != suffix {
			continue
		}
		if ep.method == r.Method {
			return ep.h(w, r, id, repo, args)
		}
		allow = append(allow, ep.method)
	}
	w.Header().Set("Allow", strings.Join(allow, ", "))
	return apiError(http.StatusMethodNotAllowed, "invalid_request", "method %s is not allowed here (%s)", r.Method, strings.Join(allow, ", "))
}

// matchSuffix matches the last segments of a path against a suffix
// pattern, leaving at least two segments (namespace/name) before it.
func matchSuffix(segs, pat []string) (repo, args []string, ok bool) {
	if len(segs) < len(pat)+2 {
		return nil, nil, false
	}
	base := len(segs) - len(pat)
	for i, p := range pat {
		s := segs[base+i]
		switch {
		case p == "{}" && s != "":
			args = append(args, s)
		case p != s:
			return nil, nil, false
		}
	}
	return segs[:base], args, true
}

// repoInfo applies the action's permission and returns the repository, or
// 404 when it does not exist (after the permission check, so that only
// those who could see it learn whether it exists).
func (a *API) repoInfo(ctx context.Context, id auth.Identity, repo, action string) (meta.RepoInfo, error) {
	if err := a.allow(ctx, id, repo, action); err != nil {
		return meta.RepoInfo{}, err
	}
	ri, err := a.db.Repositories.Repository(ctx, repo)
	if err != nil {
		return meta.RepoInfo{}, err
	}
	if !ri.Exists {
		return meta.RepoInfo{}, notFound("repository %s not found", repo)
	}
	return ri, nil
}

func splitRepo(repo string) (namespace, name string) {
	namespace, name, _ = strings.Cut(repo, "/")
	return namespace, name
}

// maxRepoDescription caps a repository's description: anonymous listings
// answer a hundred of them a page.
const maxRepoDescription = 16 << 10

func checkRepoDescription(d string) error {
	if len(d) > maxRepoDescription {
		return badRequest("the description is %d bytes; at most %d (16 KiB) are allowed", len(d), maxRepoDescription)
	}
	return nil
}

func checkVisibility(v string) error {
	if v != "public" && v != "private" {
		return badRequest("invalid visibility %q (public, private)", v)
	}
	return nil
}

// createRepository creates an empty repository: whoever could create it
// by pushing may create it here, public only if it will administer it.
func (a *API) createRepository(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	if err := requireUser(id); err != nil {
		return err
	}
	var req struct {
		Namespace   string `json:"namespace"`
		Repository  string `json:"repository"`
		Visibility  string `json:"visibility"`
		Description string `json:"description"`
		RepoKind    string `json:"repo_kind"`
	}
	if err := decode(w, r, &req); err != nil {
		return err
	}
	// As Quay's, the namespace is optional: the calling user's own. Robots
	// and access tokens have none to default to.
	if req.Namespace == "" {
		if id.Kind != auth.KindUser || id.Name == "" {
			return badRequest("namespace required: only a signed-in user may leave it out, for its own namespace (the caller is a %s)", id.Kind)
		}
		req.Namespace = id.Name
	}
	if err := checkUsername(req.Namespace); err != nil {
		return badRequest("invalid namespace: %v", err)
	}
	full := req.Namespace + "/" + req.Repository
	if err := oci.ValidateName(full); err != nil || req.Repository == "" {
		return badRequest("invalid repository name %q: %v", req.Repository, err)
	}
	if err := checkVisibility(req.Visibility); err != nil {
		return err
	}
	if err := checkRepoDescription(req.Description); err != nil {
		return err
	}
	if req.RepoKind != "" && req.RepoKind != "image" {
		return badRequest("invalid repo_kind %q (image)", req.RepoKind)
	}
	ctx := r.Context()
	// The namespace first: the permission check refuses a repository in a
	// namespace that does not exist, and this says why.
	if _, err := a.db.Users.NamespaceByName(ctx, req.Namespace); errors.Is(err, meta.ErrNamespaceNotFound) {
		return notFound("namespace %q not found", req.Namespace)
	} else if err != nil {
		return err
	}
	if err := a.allow(ctx, id, full, auth.ActionPush); err != nil {
		return err
	}
	// Whoever creates it administers it, as with a push.
	admin, err := a.creatorID(ctx, id)
	if err != nil {
		return err
	}
	// Making a repository public takes its administrator. A caller that
	// will not administer it (an access token: tokens never administer)
	// creates it private, as a push would, and an administrator decides.
	if req.Visibility == "public" && admin == 0 && !id.Superuser {
		return forbidden("a %s may create only a private repository: making %s public takes an administrator of the repository", id.Kind, full)
	}
	if err := createRepositoryRefusal(req.Namespace, a.db.Repositories.CreateRepository(ctx, full, req.Visibility, req.Description, id.Actor(), admin)); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, map[string]string{"namespace": req.Namespace, "name": req.Repository, "kind": "image"})
	return nil
}

// repoListItem is a repository in a listing.
type repoListItem struct {
	Namespace    string `json:"namespace"`
	Name         string `json:"name"`
	Description  string `json:"description"`
	IsPublic     bool   `json:"is_public"`
	Kind         string `json:"kind"`
	State        string `json:"state"`
	IsStarred    bool   `json:"is_starred"`
	LastModified *int64 `json:"last_modified,omitempty"`
}

// Listing bounds: a page, and the rows read per request (so a caller who
// may see few of many private repositories cannot make one request scan
// them all; next_page continues the scan).
const (
	reposPerPage  = 100
	reposMaxRead  = 1000
	reposReadSize = 100
)

// listRepositories lists the repositories the caller may read, in one
// namespace (namespace=) or everywhere (public=true).
func (a *API) listRepositories(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	q := r.URL.Query()
	namespace := q.Get("namespace")
	public, starred, withLast := q.Get("public") == "true", q.Get("starred") == "true", q.Get("last_modified") == "true"
	if namespace == "" && !public && !starred {
		return badRequest("You must specify either 'starred=true', 'namespace=<namespace>', or 'public=true'.")
	}
	if namespace != "" {
		if err := checkUsername(namespace); err != nil {
			return badRequest("invalid namespace: %v", err)
		}
	}
	var after string
	if np := q.Get("next_page"); np != "" {
		var ok bool
		if after, ok = a.openCursor(np); !ok || oci.ValidateName(after) != nil {
			return badRequest("invalid next_page")
		}
	}
	out := struct {
		Repositories []repoListItem `json:"repositories"`
		NextPage     string         `json:"next_page,omitempty"`
	}{Repositories: []repoListItem{}}
	if starred && namespace == "" && !public {
		writeJSON(w, http.StatusOK, out) // Berth has no stars
		return nil
	}
	ctx := r.Context()
	read, more := 0, true
	for more && len(out.Repositories) < reposPerPage && read < reposMaxRead {
		batch, err := a.db.Repositories.RepositoriesPage(ctx, meta.RepoQuery{Namespace: namespace, PublicOnly: id.Kind == auth.KindAnonymous, After: after, Limit: reposReadSize})
		if err != nil {
			return err
		}
		more = len(batch) == reposReadSize
		for i, s := range batch {
			read++
			after = s.Name
			if s.Visibility != "public" {
				if ok, err := a.auth.Decide(ctx, id, s.Name, auth.ActionRead); err != nil {
					return err
				} else if !ok {
					continue
				}
			}
			ns, name := splitRepo(s.Name)
			item := repoListItem{Namespace: ns, Name: name, Description: s.Description, IsPublic: s.Visibility == "public", Kind: "image", State: s.State}
			if withLast && !s.LastModified.IsZero() {
				ts := s.LastModified.Unix()
				item.LastModified = &ts
			}
			out.Repositories = append(out.Repositories, item)
			if len(out.Repositories) == reposPerPage {
				more = more || i < len(batch)-1
				break
			}
		}
	}
	if more {
		out.NextPage = a.sealCursor(after)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// cursorPrefix keeps a sealed cursor apart from anything else the key
// seals (stored secrets).
const cursorPrefix = "next_page:"

// sealCursor makes a listing's position a next_page the client can carry
// but neither read nor forge: the position is the last repository read,
// which may be one the caller may not see (a private name), and a forged
// one would let it probe where private names fall.
func (a *API) sealCursor(after string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(a.opts.Cursors.Seal([]byte(cursorPrefix + after))))
}

// openCursor reads a next_page sealCursor made.
func (a *API) openCursor(np string) (string, bool) {
	sealed, err := base64.RawURLEncoding.DecodeString(np)
	if err != nil {
		return "", false
	}
	b, err := a.opts.Cursors.Open(string(sealed))
	if err != nil {
		return "", false
	}
	return strings.CutPrefix(string(b), cursorPrefix)
}

type repoView struct {
	repoListItem
	CanWrite       bool               `json:"can_write"`
	CanAdmin       bool               `json:"can_admin"`
	IsOrganization bool               `json:"is_organization"`
	Tags           map[string]tagView `json:"tags,omitempty"`
	// QuotaReport is the bytes of the distinct blobs the repository's
	// manifests reference, and its namespace's quota (quota.go).
	QuotaReport *quotaReport `json:"quota_report,omitempty"`
}

// repoViewTags caps the tags embedded in a repository's description (the
// tag endpoint pages through all of them).
const repoViewTags = 100

func (a *API) getRepository(w http.ResponseWriter, r *http.Request, id auth.Identity, repo string, _ []string) error {
	ctx := r.Context()
	ri, err := a.repoInfo(ctx, id, repo, auth.ActionRead)
	if err != nil {
		return err
	}
	ns, name := splitRepo(repo)
	v := repoView{repoListItem: repoListItem{Namespace: ns, Name: name, Description: ri.Description, IsPublic: ri.Visibility == "public", Kind: "image", State: ri.State}}
	// can_write is Quay's write permission, the right to push (which the
	// repository's state may take away): for an access token content/write,
	// not metadata/write.
	if v.CanWrite, err = a.auth.Decide(ctx, id, repo, auth.ActionPush); err != nil {
		return err
	}
	if v.CanAdmin, err = a.auth.Decide(ctx, id, repo, auth.ActionAdmin); err != nil {
		return err
	}
	if n, err := a.db.Users.NamespaceByName(ctx, ns); err == nil {
		v.IsOrganization = n.Kind == meta.NamespaceOrg
	} else if !errors.Is(err, meta.ErrNamespaceNotFound) {
		return err
	}
	if v.QuotaReport, err = a.repoQuotaReport(ctx, repo); err != nil {
		return err
	}
	if r.URL.Query().Get("includeTags") != "false" {
		tags, err := a.db.Tags.TagsPage(ctx, repo, meta.TagQuery{Limit: repoViewTags})
		if err != nil {
			return err
		}
		v.Tags = map[string]tagView{}
		for _, t := range tags {
			v.Tags[t.Name] = tagViewOf(t)
		}
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (a *API) deleteRepository(w http.ResponseWriter, r *http.Request, id auth.Identity, repo string, _ []string) error {
	if _, err := a.repoInfo(r.Context(), id, repo, auth.ActionAdmin); err != nil {
		return err
	}
	if err := a.db.Repositories.DeleteRepository(r.Context(), repo, id.Actor()); errors.Is(err, meta.ErrRepositoryNotFound) {
		return notFound("repository %s not found", repo)
	} else if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// repoSetting serves the endpoints that change one setting: PUT of the
// repository ({"description"}), changevisibility and changestate.
func (a *API) repoSetting(field string) repoHandler {
	return func(w http.ResponseWriter, r *http.Request, id auth.Identity, repo string, _ []string) error {
		if _, err := a.repoInfo(r.Context(), id, repo, auth.ActionAdmin); err != nil {
			return err
		}
		var req map[string]string
		if err := decode(w, r, &req); err != nil {
			return err
		}
		v, ok := req[field]
		if !ok || len(req) != 1 {
			return badRequest("the body must be {%q: ...} and nothing else", field)
		}
		var visibility, state, description *string
		kind := map[string]string{"description": "set_repo_description", "visibility": "change_repo_visibility", "state": "change_repo_state"}[field]
		switch field {
		case "description":
			if err := checkRepoDescription(v); err != nil {
				return err
			}
			description = &v
		case "visibility":
			if err := checkVisibility(v); err != nil {
				return err
			}
			visibility = &v
		case "state":
			if v != auth.StateNormal && v != auth.StateReadOnly && v != auth.StateMirror {
				return badRequest("invalid state %q (NORMAL, READ_ONLY, MIRROR)", v)
			}
			state = &v
		}
		if err := a.db.Repositories.UpdateRepository(r.Context(), repo, visibility, state, nil, description); errors.Is(err, meta.ErrRepositoryNotFound) {
			return notFound("repository %s not found", repo)
		} else if err != nil {
			return err
		}
		md := map[string]string{"repo": repo}
		if field != "description" {
			md[field] = v
		}
		a.audit(r, id, kind, repo, "", md)
		writeJSON(w, http.StatusOK, map[string]bool{"success": true})
		return nil
	}
}

func (a *API) repositoryLogs(w http.ResponseWriter, r *http.Request, id auth.Identity, repo string, _ []string) error {
	if _, err := a.repoInfo(r.Context(), id, repo, auth.ActionAdmin); err != nil {
		return err
	}
	return writeLogs(w, r, func(before int64, n int) ([]meta.AuditEntry, error) {
		return a.db.Audit.RepositoryAuditLog(r.Context(), repo, before, n)
	})
}

// Tags.

type tagView struct {
	Name           string `json:"name"`
	Reversion      bool   `json:"reversion"`
	StartTS        int64  `json:"start_ts"`
	ManifestDigest string `json:"manifest_digest"`
	IsManifestList bool   `json:"is_manifest_list"`
	Size           *int64 `json:"size"`
	LastModified   string `json:"last_modified"`
	// EndTS and Expiration are when the tag's period ended, or when the
	// tag expires (Quay's fields), absent when neither.
	EndTS      *int64 `json:"end_ts,omitempty"`
	Expiration string `json:"expiration,omitempty"`
}

// tagViewOf describes a tag; size (of the manifest's blobs) is null for an
// index, as it is for Quay's manifest lists.
func tagViewOf(t meta.TagInfo) tagView {
	v := tagView{Name: t.Name, StartTS: t.UpdatedAt.Unix(), ManifestDigest: t.Digest.String(),
		IsManifestList: oci.IsIndex(t.MediaType), LastModified: quayTime(t.UpdatedAt)}
	if !v.IsManifestList {
		v.Size = &t.Size
	}
	v.Reversion = t.Reversion
	if end := t.Until; !end.IsZero() || !t.ExpiresAt.IsZero() {
		if end.IsZero() {
			end = t.ExpiresAt
		}
		ts := end.Unix()
		v.EndTS, v.Expiration = &ts, quayTime(end)
	}
	return v
}

// boolParam reads a boolean query parameter the way Quay does (true,
// True, 1, yes; false, 0, no), def when absent, refusing anything else.
func boolParam(q url.Values, key string, def bool) (bool, error) {
	switch s := q.Get(key); strings.ToLower(s) {
	case "":
		return def, nil
	case "true", "1", "yes":
		return true, nil
	case "false", "0", "no":
		return false, nil
	default:
		return false, badRequest("invalid %s %q: want true or false", key, s)
	}
}

// intParam reads a positive integer query parameter.
func intParam(q url.Values, key string, def, maxValue int) (int, error) {
	s := q.Get(key)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > maxValue {
		return 0, badRequest("invalid %s %q: want 1 to %d", key, s, maxValue)
	}
	return n, nil
}

// A repository's usage sums its manifests' blobs (a namespace's is a
// running total): the API sums it at most once per repoUsageTTL for each
// repository and replica (quota_report may lag pushes that much); reads
// during a sum wait for it. The oldest go past repoUsageEntries.
const repoUsageTTL, repoUsageEntries = 30 * time.Second, 4096

// repoUsageCache is the UsageStore New hands the handlers: RepositoryUsage
// from the cache, the rest from the store.
type repoUsageCache struct {
	UsageStore
	now     func() time.Time
	mu      sync.Mutex
	entries map[string]*list.Element // of *repoUsage, oldest first in order
	order   list.List
}

type repoUsage struct {
	repo  string
	bytes int64
	err   error
	at    time.Time     // when the sum began
	done  chan struct{} // closed once bytes and err are set
}

func (c *repoUsageCache) RepositoryUsage(ctx context.Context, repo string) (int64, error) {
	for {
		c.mu.Lock()
		if el, ok := c.entries[repo]; ok {
			u := el.Value.(*repoUsage)
			select {
			case <-u.done:
				if c.now().Sub(u.at) < repoUsageTTL {
					c.mu.Unlock()
					return u.bytes, nil
				}
			default: // being summed: wait, and after a failure try again
				c.mu.Unlock()
				select {
				case <-u.done:
				case <-ctx.Done():
					return 0, ctx.Err()
				}
				if u.err == nil {
					return u.bytes, nil
				}
				continue
			}
			c.order.Remove(el)
		} else if c.entries == nil {
			c.entries = map[string]*list.Element{}
		}
		u := &repoUsage{repo: repo, at: c.now(), done: make(chan struct{})}
		c.entries[repo] = c.order.PushBack(u)
		for c.order.Len() > repoUsageEntries {
			delete(c.entries, c.order.Remove(c.order.Front()).(*repoUsage).repo)
		}
		c.mu.Unlock()
		u.bytes, u.err = c.UsageStore.RepositoryUsage(ctx, repo)
		if u.err != nil {
			c.mu.Lock()
			if el, ok := c.entries[repo]; ok && el.Value == u {
				delete(c.entries, c.order.Remove(el).(*repoUsage).repo)
			}
			c.mu.Unlock()
		}
		close(u.done)
		return u.bytes, u.err
	}
}
