package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
)

// Graph is the base-image graph as the API reads it (meta.Graph).
type Graph interface {
	Bases(ctx context.Context, repo string, d digest.Digest) ([]meta.GraphBase, error)
	ReadableDependentsPage(ctx context.Context, repo string, d digest.Digest, q meta.DependentsQuery) (meta.DependentsPage, error)
}

// dependentsMaxRead bounds the dependents one answer reads, the caller's
// or not, and so the answer (a base of a large organization): one
// permission decision per repository read and one tags lookup per
// dependent answered, as the repository listing (reposMaxRead), so that
// an anonymous caller cannot make one request of a shared public base
// with thousands of private dependents cost tens of thousands of
// queries. Past it, the answer says it was truncated and gives a
// next_page that goes on from there.
const dependentsMaxRead = reposMaxRead

func (a *API) graphEndpoints() []repoEndpoint {
	return []repoEndpoint{
		{http.MethodGet, "manifest/{}/bases", a.manifestBases},
		{http.MethodGet, "manifest/{}/dependents", a.manifestDependents},
	}
}

// readable answers, per repository, whether the caller may read it: each
// side of the graph is shown only to whoever can read it.
type readable struct {
	a    *API
	id   auth.Identity
	seen map[string]bool
}

// ok decides once per repository; a failure to decide (the store) is an
// error, neither remembered nor taken for a refusal.
func (rd *readable) ok(ctx context.Context, repo string) (bool, error) {
	if v, ok := rd.seen[repo]; ok {
		return v, nil
	}
	v, err := rd.a.auth.Decide(ctx, rd.id, repo, auth.ActionRead)
	if err != nil {
		return false, fmt.Errorf("decide whether %s may read %s: %w", rd.id.Actor(), repo, err)
	}
	rd.seen[repo] = v
	return v, nil
}

// graphDigest reads the manifest argument and checks the caller may read
// the repository asked about.
func (a *API) graphDigest(r *http.Request, id auth.Identity, repo, arg string) (digest.Digest, error) {
	if a.opts.Graph == nil {
		return "", apiError(http.StatusNotImplemented, "not_implemented", "the base-image graph is disabled on this registry (graph.enabled)")
	}
	d, err := oci.ParseDigest(arg)
	if err != nil {
		return "", badRequest("invalid manifest digest: %v", err)
	}
	if _, err := a.repoInfo(r.Context(), id, repo, auth.ActionRead); err != nil {
		return "", err
	}
	if err := a.hideHeld(r.Context(), id, repo, d); err != nil {
		return "", err
	}
	return d, nil
}

// baseTagView is a tag a base was reached through.
type baseTagView struct {
	Name string `json:"name"`
	// PointedAt is what the tag pointed at when the base was matched: the
	// base, or an index holding it.
	PointedAt digest.Digest `json:"pointed_at"`
	// Current is what it points at now ("" if the tag was deleted).
	Current digest.Digest `json:"current"`
	Moved   bool          `json:"moved"`
}

// baseView is one base of the chain.
type baseView struct {
	Repository string        `json:"repository"`
	Digest     digest.Digest `json:"digest"`
	Tags       []baseTagView `json:"tags"`
	Method     string        `json:"method"`
	Level      int           `json:"level"`
	Layers     int           `json:"layers"`
	MatchedAt  time.Time     `json:"matched_at"`
	// Moved is true when a tag the base was reached through has moved on
	// (the image is built on an old base).
	Moved bool `json:"moved"`
}

// manifestBases answers the chain an image is built on, immediate base
// first (for an index, its platforms' bases).
func (a *API) manifestBases(w http.ResponseWriter, r *http.Request, id auth.Identity, repo string, args []string) error {
	d, err := a.graphDigest(r, id, repo, args[0])
	if err != nil {
		return err
	}
	rows, err := a.opts.Graph.Bases(r.Context(), repo, d)
	if err != nil {
		return err
	}
	rd := &readable{a: a, id: id, seen: map[string]bool{}}
	out := []baseView{}
	index := map[string]int{}
	for _, b := range rows {
		if ok, err := rd.ok(r.Context(), b.Repository); err != nil {
			return err
		} else if !ok {
			continue
		}
		k := b.Repository + "@" + b.Digest.String() + "#" + strconv.Itoa(b.Level)
		i, ok := index[k]
		if !ok {
			i = len(out)
			index[k] = i
			out = append(out, baseView{Repository: b.Repository, Digest: b.Digest, Tags: []baseTagView{}, Method: b.Method,
				Level: b.Level, Layers: b.Layers, MatchedAt: b.MatchedAt})
		}
		if b.Tag != "" {
			out[i].Tags = append(out[i].Tags, baseTagView{Name: b.Tag, PointedAt: b.Top, Current: b.Current, Moved: b.Moved})
			out[i].Moved = out[i].Moved || b.Moved
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"bases": out})
	return nil
}

// dependentView is an image built on the one asked about.
type dependentView struct {
	Repository string        `json:"repository"`
	Digest     digest.Digest `json:"digest"`
	// Tagged are the digests its tags point at (it, or indexes holding
	// it), and Tags those tags.
	Tagged []digest.Digest `json:"tagged_digests"`
	Tags   []string        `json:"tags"`
	// Level is 1 for an image built directly on it, 2 for one built on
	// such an image, and so on.
	Level  int    `json:"level"`
	Method string `json:"method"`
	// Stale is true when the tag its immediate base was reached through
	// has moved on: it should be rebuilt. It is false for a caller who may
	// not read that base (a transitive dependent's).
	Stale bool `json:"stale"`
}

// manifestDependents answers the images built on an image (on any
// platform of an index), directly or, with ?transitive=true, at any depth;
// ?next_page= goes on where the answer before stopped.
func (a *API) manifestDependents(w http.ResponseWriter, r *http.Request, id auth.Identity, repo string, args []string) error {
	d, err := a.graphDigest(r, id, repo, args[0])
	if err != nil {
		return err
	}
	q := r.URL.Query()
	transitive := false
	if v := q.Get("transitive"); v != "" {
		if transitive, err = strconv.ParseBool(v); err != nil {
			return badRequest("transitive must be true or false")
		}
	}
	var after meta.DependentsPosition
	if np := q.Get("next_page"); np != "" {
		var ok bool
		if after, ok = a.openDependentsCursor(np, repo, d, transitive); !ok {
			return badRequest("invalid next_page (it goes on only the listing it was given for: the same repository, digest and transitive)")
		}
	}
	// The store reads on past the dependents the caller may not read
	// (a shared base's other tenants), up to dependentsMaxRead: truncated
	// says the caller may read more, or the bound stopped the search, and
	// next_page goes on from there.
	rd := &readable{a: a, id: id, seen: map[string]bool{}}
	page, err := a.opts.Graph.ReadableDependentsPage(r.Context(), repo, d, meta.DependentsQuery{Transitive: transitive, N: dependentsMaxRead,
		MaxRows: dependentsMaxRead, After: after, Readable: func(repo string) (bool, error) { return rd.ok(r.Context(), repo) }})
	if err != nil {
		return err
	}
	out := struct {
		Dependents []dependentView `json:"dependents"`
		Truncated  bool            `json:"truncated"`
		NextPage   string          `json:"next_page,omitempty"`
	}{Dependents: []dependentView{}, Truncated: page.More}
	for _, dep := range page.Dependents {
		// Stale says the dependent's immediate base's tag moved: for a
		// transitive dependent, a base in another repository, told only to
		// a caller who may read it.
		stale := dep.Stale
		if stale {
			if stale, err = rd.ok(r.Context(), dep.StaleBase); err != nil {
				return err
			}
		}
		v := dependentView{Repository: dep.Repository, Digest: dep.Digest, Tagged: dep.Tagged, Tags: dep.Tags, Level: dep.Base.Level,
			Method: dep.Base.Method, Stale: stale}
		if v.Tagged == nil {
			v.Tagged = []digest.Digest{}
		}
		if v.Tags == nil {
			v.Tags = []string{}
		}
		out.Dependents = append(out.Dependents, v)
	}
	if page.More {
		out.NextPage = a.sealDependentsCursor(repo, d, transitive, page.Next)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// dependentsCursorPrefix keeps a dependents listing's sealed position
// apart from the repository listing's (cursorPrefix) and anything else
// the key seals.
const dependentsCursorPrefix = "dependents:"

// dependentsCursor is what a dependents listing's next_page seals: the
// listing it goes on (the repository, digest and transitive flag asked
// about: a next_page given for one base is refused for another, whose
// listing its position means nothing in) and where the page stopped,
// which may be a dependent the caller may not read (another tenant's
// private repository), so the client can neither read nor forge it.
type dependentsCursor struct {
	Repository string        `json:"r"`
	Digest     digest.Digest `json:"d"`
	Transitive bool          `json:"t"`
	Level      int           `json:"l"`
	AfterRepo  string        `json:"ar"`
	AfterDg    digest.Digest `json:"ad"`
}

// sealDependentsCursor makes a dependents listing's next_page.
func (a *API) sealDependentsCursor(repo string, d digest.Digest, transitive bool, at meta.DependentsPosition) string {
	b, _ := json.Marshal(dependentsCursor{Repository: repo, Digest: d, Transitive: transitive, Level: at.Level, AfterRepo: at.Repository, AfterDg: at.Digest})
	return base64.RawURLEncoding.EncodeToString([]byte(a.opts.Cursors.Seal(append([]byte(dependentsCursorPrefix), b...))))
}

// openDependentsCursor reads a next_page sealDependentsCursor made for
// the same listing (repository, digest and transitive flag).
func (a *API) openDependentsCursor(np, repo string, d digest.Digest, transitive bool) (meta.DependentsPosition, bool) {
	sealed, err := base64.RawURLEncoding.DecodeString(np)
	if err != nil {
		return meta.DependentsPosition{}, false
	}
	b, err := a.opts.Cursors.Open(string(sealed))
	if err != nil {
		return meta.DependentsPosition{}, false
	}
	rest, ok := bytes.CutPrefix(b, []byte(dependentsCursorPrefix))
	if !ok {
		return meta.DependentsPosition{}, false
	}
	var c dependentsCursor
	if err := json.Unmarshal(rest, &c); err != nil {
		return meta.DependentsPosition{}, false
	}
	if c.Repository != repo || c.Digest != d || c.Transitive != transitive || c.Level < 1 || c.AfterRepo == "" || c.AfterDg == "" {
		return meta.DependentsPosition{}, false
	}
	return meta.DependentsPosition{Level: c.Level, Repository: c.AfterRepo, Digest: c.AfterDg}, true
}
