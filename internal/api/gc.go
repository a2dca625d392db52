package api

import (
	"context"
	"errors"
	"net/http"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/gc"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
)

// Collector is garbage collection as the API shows it (*gc.Collector).
type Collector interface {
	Explain(d digest.Digest, k meta.ManifestKeepers, seeHeld bool) gc.Verdict
	Status(ctx context.Context) (gc.Status, error)
}

// noCollector answers where the API was built without a collector (a
// server always gives it one, gc.enabled or not: a replica that runs no
// passes still reports, and says so).
func noCollector() error {
	return apiError(http.StatusNotImplemented, "not_implemented", "garbage collection reports are not served here")
}

func (a *API) gcEndpoints() []repoEndpoint {
	return []repoEndpoint{{http.MethodGet, "manifest/{}/gc", a.manifestGC}}
}

func (a *API) gcRoutes() {
	a.handle("GET /api/v1/superuser/gc", a.gcStatus)
}

// manifestGC explains why garbage collection keeps a manifest (its tags,
// the indexes that list it, its stored subject, the delay after its push),
// or that the next pass collects it; on a replica with gc.enabled false,
// also that this replica runs no passes (collection_disabled).
func (a *API) manifestGC(w http.ResponseWriter, r *http.Request, id auth.Identity, repo string, args []string) error {
	if a.opts.GC == nil {
		return noCollector()
	}
	d, err := oci.ParseDigest(args[0])
	if err != nil {
		return badRequest("invalid manifest digest: %v", err)
	}
	if _, err := a.repoInfo(r.Context(), id, repo, auth.ActionRead); err != nil {
		return err
	}
	if err := a.hideHeld(r.Context(), id, repo, d); err != nil {
		return err
	}
	k, err := a.db.Keepers.ManifestGCKeepers(r.Context(), repo, d)
	if errors.Is(err, meta.ErrNotFound) {
		return notFound("manifest %s is not in %s", d, repo)
	}
	if err != nil {
		return err
	}
	// Held indexes that list it and its own candidacy are a checker's to
	// see, as held content is.
	seeHeld := false
	if len(k.HeldParents) > 0 || len(k.Candidates) > 0 {
		if seeHeld, err = a.auth.Decide(r.Context(), id, repo, auth.ActionChecks); err != nil {
			return err
		}
	}
	writeJSON(w, http.StatusOK, a.opts.GC.Explain(d, k, seeHeld))
	return nil
}

// gcStatus is the superuser's view of garbage collection: its settings,
// what a pass would collect now, deletions in progress, and this
// replica's last pass.
func (a *API) gcStatus(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	if err := needSuperuser(id); err != nil {
		return err
	}
	if a.opts.GC == nil {
		return noCollector()
	}
	st, err := a.opts.GC.Status(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}
