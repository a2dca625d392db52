package api

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
)

// ProxyCaches is the pull-through cache as the API manages it
// (internal/proxy.Service).
type ProxyCaches interface {
	// SealPassword seals an upstream password for the store.
	SealPassword(pw string) string
	// ValidateUpstream checks an upstream_registry value.
	ValidateUpstream(upstream string, insecure bool) error
	// Invalidate makes this replica read the configuration again.
	Invalidate()
}

func (a *API) proxyCacheRoutes() {
	a.handle("GET /api/v1/organization/{org}/proxycache", a.getProxyCache)
	a.handle("POST /api/v1/organization/{org}/proxycache", a.setProxyCache)
	a.handle("DELETE /api/v1/organization/{org}/proxycache", a.deleteProxyCache)
}

// proxyCacheBody is Quay's proxy cache configuration. The password is
// accepted, sealed at rest, and never returned. org_name, which Quay's
// clients send, names the organization of the path, or is refused.
type proxyCacheBody struct {
	OrgName                  *string `json:"org_name,omitempty"`
	UpstreamRegistry         string  `json:"upstream_registry"`
	UpstreamRegistryUsername *string `json:"upstream_registry_username,omitempty"`
	UpstreamRegistryPassword *string `json:"upstream_registry_password,omitempty"`
	ExpirationS              *int64  `json:"expiration_s,omitempty"`
	Insecure                 bool    `json:"insecure"`
}

type proxyCacheView struct {
	UpstreamRegistry         string `json:"upstream_registry"`
	UpstreamRegistryUsername string `json:"upstream_registry_username"`
	ExpirationS              int64  `json:"expiration_s"`
	Insecure                 bool   `json:"insecure"`
}

const defaultProxyExpiration = 86400

func (a *API) proxyCaches() (ProxyCaches, error) {
	if a.opts.ProxyCache == nil {
		return nil, apiError(http.StatusNotImplemented, "not_implemented", "the proxy cache is not enabled on this server")
	}
	return a.opts.ProxyCache, nil
}

// refuseInProxyCache refuses what would write a repository's tags in a
// proxy cache organization (what, e.g. "mirrors"): its content is its
// upstream's, as a /v2 push there is refused.
func (a *API) refuseInProxyCache(ctx context.Context, repo, what string) error {
	ns, _, _ := strings.Cut(repo, "/")
	_, err := a.db.ProxyCaches.ProxyCacheOf(ctx, ns)
	if err == nil {
		return forbidden("%s is a proxy cache organization: its content comes from its upstream, so %s are refused there (as pushes are)", ns, what)
	}
	if errors.Is(err, meta.ErrNotFound) {
		return nil
	}
	return err
}

func (a *API) getProxyCache(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	org := r.PathValue("org")
	if _, err := a.orgAdmin(r.Context(), id, org); err != nil {
		return err
	}
	pc, err := a.db.ProxyCaches.ProxyCacheOf(r.Context(), org)
	if errors.Is(err, meta.ErrProxyCacheNotFound) {
		return notFound("organization %s is not a proxy cache", org)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, proxyCacheView{UpstreamRegistry: pc.Upstream, UpstreamRegistryUsername: pc.Username,
		ExpirationS: pc.ExpirationS, Insecure: pc.Insecure})
	return nil
}

func (a *API) setProxyCache(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	org := r.PathValue("org")
	pcs, err := a.proxyCaches()
	if err != nil {
		return err
	}
	if _, err := a.orgAdmin(r.Context(), id, org); err != nil {
		return err
	}
	var body proxyCacheBody
	if err := decode(w, r, &body); err != nil {
		return err
	}
	if body.OrgName != nil && *body.OrgName != org {
		return badRequest("org_name %q is not the organization of the path, %s", *body.OrgName, org)
	}
	body.UpstreamRegistry = strings.TrimSpace(body.UpstreamRegistry)
	if body.UpstreamRegistry == "" {
		return badRequest("upstream_registry is required")
	}
	if err := pcs.ValidateUpstream(body.UpstreamRegistry, body.Insecure); err != nil {
		return badRequest("%v", err)
	}
	pc := meta.ProxyCache{Namespace: org, Upstream: body.UpstreamRegistry, ExpirationS: defaultProxyExpiration,
		Insecure: body.Insecure, CreatedBy: id.Actor()}
	if body.ExpirationS != nil {
		if *body.ExpirationS <= 0 || *body.ExpirationS > maxIntervalSeconds {
			return badRequest("expiration_s must be a positive number of seconds, at most %d (10 years)", maxIntervalSeconds)
		}
		pc.ExpirationS = *body.ExpirationS
	}
	if body.UpstreamRegistryUsername != nil {
		pc.Username = *body.UpstreamRegistryUsername
	}
	if body.UpstreamRegistryPassword != nil && *body.UpstreamRegistryPassword != "" {
		if pc.Username == "" {
			return badRequest("upstream_registry_password needs upstream_registry_username")
		}
		pc.PasswordSealed = pcs.SealPassword(*body.UpstreamRegistryPassword)
	}
	err = a.db.ProxyCaches.SetProxyCache(r.Context(), pc)
	if errors.Is(err, meta.ErrNamespaceNotFound) {
		return notFound("organization %q not found", org)
	}
	if errors.Is(err, meta.ErrProxyCacheConflict) {
		return badRequest("%v: remove their mirrors first", err)
	}
	if err != nil {
		return err
	}
	pcs.Invalidate()
	a.audit(r, id, "org_proxy_cache_set", "", org, map[string]any{"upstream_registry": pc.Upstream, "expiration_s": pc.ExpirationS, "insecure": pc.Insecure})
	writeJSON(w, http.StatusCreated, "Created")
	return nil
}

func (a *API) deleteProxyCache(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	org := r.PathValue("org")
	if _, err := a.orgAdmin(r.Context(), id, org); err != nil {
		return err
	}
	err := a.db.ProxyCaches.DeleteProxyCache(r.Context(), org)
	if errors.Is(err, meta.ErrProxyCacheNotFound) {
		return notFound("organization %s is not a proxy cache", org)
	}
	if err != nil {
		return err
	}
	if a.opts.ProxyCache != nil {
		a.opts.ProxyCache.Invalidate()
	}
	a.audit(r, id, "org_proxy_cache_delete", "", org, map[string]string{"namespace": org})
	w.WriteHeader(http.StatusNoContent)
	return nil
}
