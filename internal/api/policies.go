package api

import (
	"context"
	"errors"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
)

// PolicyStore reads and changes Quay's tag policies (meta.Policies).
type PolicyStore interface {
	CreateTagPolicy(ctx context.Context, p meta.TagPolicy) (meta.TagPolicy, error)
	TagPolicies(ctx context.Context, kind, namespace, repo string) ([]meta.TagPolicy, error)
	TagPolicy(ctx context.Context, kind, namespace, repo, id string) (meta.TagPolicy, error)
	UpdateTagPolicy(ctx context.Context, p meta.TagPolicy) error
	DeleteTagPolicy(ctx context.Context, kind, id string) error
}

// policyPaths are the two kinds of Quay's tag policies, by path segment.
var policyPaths = map[string]string{"immutabilitypolicy": meta.PolicyImmutability, "autoprunepolicy": meta.PolicyAutoPrune}

func (a *API) policyRoutes() {
	for seg, kind := range policyPaths {
		base := "/api/v1/organization/{org}/" + seg + "/"
		a.handle("GET "+base, a.orgPolicies(kind))
		a.handle("POST "+base, a.orgPolicies(kind))
		a.handle("GET "+base+"{uuid}", a.orgPolicies(kind))
		a.handle("PUT "+base+"{uuid}", a.orgPolicies(kind))
		a.handle("DELETE "+base+"{uuid}", a.orgPolicies(kind))
	}
}

func (a *API) policyEndpoints() []repoEndpoint {
	var eps []repoEndpoint
	for seg, kind := range policyPaths {
		h := a.repoPolicies(kind)
		eps = append(eps, repoEndpoint{http.MethodGet, seg + "/", h}, repoEndpoint{http.MethodPost, seg + "/", h},
			repoEndpoint{http.MethodGet, seg + "/{}", h}, repoEndpoint{http.MethodPut, seg + "/{}", h}, repoEndpoint{http.MethodDelete, seg + "/{}", h})
	}
	return eps
}

// policyView is a policy in Quay's shape: tagPattern is null when the
// policy covers every tag.
type policyView struct {
	UUID              string  `json:"uuid"`
	Method            string  `json:"method,omitempty"`
	Value             any     `json:"value,omitempty"`
	TagPattern        *string `json:"tagPattern"`
	TagPatternMatches bool    `json:"tagPatternMatches"`
}

func policyViewOf(p meta.TagPolicy) policyView {
	v := policyView{UUID: p.UUID, Method: p.Method, TagPatternMatches: p.TagPatternMatches}
	if p.TagPattern != "" {
		v.TagPattern = &p.TagPattern
	}
	if p.Kind == meta.PolicyAutoPrune {
		v.Value = p.Value
		if n, err := strconv.Atoi(p.Value); err == nil && p.Method == meta.PruneByCount {
			v.Value = n
		}
	}
	return v
}

// policyBody is the body of a POST or PUT, in Quay's names. uuid, which
// Quay's UI sends with the whole policy, is ignored by a POST (the new
// policy gets its own); a PUT refuses one naming another policy than its
// path's.
type policyBody struct {
	UUID              string `json:"uuid"`
	Method            string `json:"method"`
	Value             any    `json:"value"`
	TagPattern        string `json:"tagPattern"`
	TagPatternMatches *bool  `json:"tagPatternMatches"`
}

// parse validates a body into a policy of kind. stored is the pattern of
// the policy a PUT changes: sent back as it is, it is not held to the
// length cap (the upgrade to schema 37 made some stored patterns longer
// than it; the store checks a changed pattern's length).
func (b policyBody) parse(kind, stored string) (meta.TagPolicy, error) {
	p := meta.TagPolicy{Kind: kind, TagPattern: b.TagPattern, TagPatternMatches: true}
	if b.TagPatternMatches != nil {
		p.TagPatternMatches = *b.TagPatternMatches
	}
	if len(b.TagPattern) > 1024 && (stored == "" || b.TagPattern != stored) {
		return p, badRequest("tagPattern: over 1024 bytes")
	}
	if _, err := regexp.Compile(b.TagPattern); err != nil {
		return p, badRequest("tagPattern: not a regular expression: %v", err)
	}
	switch kind {
	case meta.PolicyImmutability:
		if b.Method != "" || b.Value != nil {
			return p, badRequest("an immutability policy takes tagPattern and tagPatternMatches only")
		}
		if b.TagPattern == "" {
			return p, badRequest("tagPattern is required: the tags that cannot be moved or deleted once pushed")
		}
	case meta.PolicyAutoPrune:
		p.Method = b.Method
		switch b.Method {
		case meta.PruneByCount:
			n, ok := b.Value.(float64)
			if !ok || n < 1 || n != float64(int(n)) || n > 1e6 {
				return p, badRequest("value: number_of_tags takes a whole number of tags to keep, at least 1")
			}
			p.Value = strconv.Itoa(int(n))
		case meta.PruneByAge:
			s, ok := b.Value.(string)
			if !ok {
				return p, badRequest(`value: creation_date takes an age such as "7d", "2w" or "24h"`)
			}
			if _, err := meta.ParseAge(s); err != nil {
				return p, badRequest("value: %v", err)
			}
			p.Value = s
		default:
			return p, badRequest("method: %q is not number_of_tags or creation_date", b.Method)
		}
	}
	return p, nil
}

func (a *API) orgPolicies(kind string) handler {
	return func(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
		org := r.PathValue("org")
		if _, err := a.orgAdmin(r.Context(), id, org); err != nil {
			return err
		}
		return a.servePolicies(w, r, id, kind, org, "", r.PathValue("uuid"))
	}
}

func (a *API) repoPolicies(kind string) repoHandler {
	return func(w http.ResponseWriter, r *http.Request, id auth.Identity, repo string, args []string) error {
		if _, err := a.repoInfo(r.Context(), id, repo, auth.ActionAdmin); err != nil {
			return err
		}
		uuid := ""
		if len(args) > 0 {
			uuid = args[0]
		}
		ns, _, _ := strings.Cut(repo, "/")
		return a.servePolicies(w, r, id, kind, ns, repo, uuid)
	}
}

func (a *API) servePolicies(w http.ResponseWriter, r *http.Request, id auth.Identity, kind, ns, repo, uuid string) error {
	if a.db.Policies == nil {
		return apiError(http.StatusNotImplemented, "not_implemented", "tag policies are not available")
	}
	ctx := r.Context()
	notFoundErr := func(err error) error {
		switch {
		case errors.Is(err, meta.ErrPolicyNotFound):
			return notFound("policy %s not found", uuid)
		case errors.Is(err, meta.ErrNamespaceNotFound), errors.Is(err, meta.ErrRepositoryNotFound):
			return notFound("%s not found", ns+repo)
		case errors.Is(err, meta.ErrInvalidPolicy), errors.Is(err, meta.ErrDuplicatePolicy):
			return badRequest("%v", err)
		}
		return err
	}
	auditKind := "change_" + kind + "_policy"
	switch {
	case r.Method == http.MethodGet && uuid == "":
		ps, err := a.db.Policies.TagPolicies(ctx, kind, ns, repo)
		if err != nil {
			return notFoundErr(err)
		}
		out := []policyView{}
		for _, p := range ps {
			out = append(out, policyViewOf(p))
		}
		writeJSON(w, http.StatusOK, map[string]any{"policies": out})
	case r.Method == http.MethodGet:
		p, err := a.db.Policies.TagPolicy(ctx, kind, ns, repo, uuid)
		if err != nil {
			return notFoundErr(err)
		}
		writeJSON(w, http.StatusOK, policyViewOf(p))
	case r.Method == http.MethodPost:
		var b policyBody
		if err := decode(w, r, &b); err != nil {
			return err
		}
		p, err := b.parse(kind, "")
		if err != nil {
			return err
		}
		p.Namespace, p.Repository = ns, repo
		p, err = a.db.Policies.CreateTagPolicy(ctx, p)
		if errors.Is(err, meta.ErrTooManyPolicies) {
			return badRequest("at most %d %s policies per organization or repository: %v", meta.MaxTagPoliciesPerScope, kind, err)
		}
		if err != nil {
			return notFoundErr(err)
		}
		a.audit(r, id, "create_"+kind+"_policy", repo, ns, policyViewOf(p))
		writeJSON(w, http.StatusCreated, map[string]string{"uuid": p.UUID})
	case r.Method == http.MethodPut:
		old, err := a.db.Policies.TagPolicy(ctx, kind, ns, repo, uuid)
		if err != nil {
			return notFoundErr(err)
		}
		var b policyBody
		if err := decode(w, r, &b); err != nil {
			return err
		}
		if b.UUID != "" && !strings.EqualFold(b.UUID, old.UUID) {
			return badRequest("uuid %q is not the uuid of the policy the path names, %s: leave it out or send that one", b.UUID, old.UUID)
		}
		p, err := b.parse(kind, old.TagPattern)
		if err != nil {
			return err
		}
		p.UUID, p.Namespace, p.Repository = old.UUID, ns, repo
		if err := a.db.Policies.UpdateTagPolicy(ctx, p); err != nil {
			return notFoundErr(err)
		}
		a.audit(r, id, auditKind, repo, ns, policyViewOf(p))
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodDelete:
		if _, err := a.db.Policies.TagPolicy(ctx, kind, ns, repo, uuid); err != nil {
			return notFoundErr(err)
		}
		if err := a.db.Policies.DeleteTagPolicy(ctx, kind, uuid); err != nil {
			return notFoundErr(err)
		}
		a.audit(r, id, "delete_"+kind+"_policy", repo, ns, map[string]string{"uuid": uuid})
		writeJSON(w, http.StatusOK, map[string]string{"uuid": uuid}) // Quay's answer
	}
	return nil
}
