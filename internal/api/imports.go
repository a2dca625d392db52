package api

import (
	"context"
	"errors"
	"net/http"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/mirror"
)

// Importer runs one-shot imports.
type Importer interface {
	Import(ctx context.Context, req mirror.ImportRequest) (digestString string, stats mirror.Stats, err error)
}

func (a *API) importRoutes() {
	a.handle("POST /api/v1/import", a.importImage)
}

// importImage is Berth's `az acr import`: POST /api/v1/import
// {source, repository, tags, username, password, insecure, mode:
// NoForce|Force} copies an image or index (every platform) into a
// repository the caller may push to, and answers 201 with the digest and
// what was moved.
func (a *API) importImage(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	if a.opts.Importer == nil {
		return apiError(http.StatusNotImplemented, "not_implemented", "import is not enabled on this server")
	}
	var body struct {
		Source     string   `json:"source"`
		Repository string   `json:"repository"`
		Tags       []string `json:"tags"`
		Username   string   `json:"username"`
		Password   string   `json:"password"`
		Insecure   bool     `json:"insecure"`
		Mode       string   `json:"mode"`
	}
	if err := decode(w, r, &body); err != nil {
		return err
	}
	if body.Mode != "" && body.Mode != "NoForce" && body.Mode != "Force" {
		return badRequest("mode %q: NoForce or Force", body.Mode)
	}
	if body.Source == "" || body.Repository == "" {
		return badRequest("source and repository are required")
	}
	if err := a.allow(r.Context(), id, body.Repository, auth.ActionPush); err != nil {
		return err
	}
	if err := a.createForImport(r.Context(), id, body.Repository); err != nil {
		return err
	}
	d, st, err := a.opts.Importer.Import(r.Context(), mirror.ImportRequest{Source: body.Source, Username: body.Username, Password: body.Password,
		Insecure: body.Insecure, Repo: body.Repository, Tags: body.Tags, Force: body.Mode == "Force", Actor: id.Actor()})
	var inv *mirror.InvalidImportError
	switch {
	case errors.As(err, &inv):
		return badRequest("%s", inv.Msg)
	case errors.Is(err, mirror.ErrTagExists):
		return apiError(http.StatusConflict, "conflict", "%v", err)
	case err != nil && r.Context().Err() == nil:
		// Upstream failures are the caller's to see (without credentials).
		return apiError(http.StatusBadGateway, "upstream_error", "import from %s failed: %v", body.Source, err)
	case err != nil:
		return err
	}
	a.audit(r, id, "import", body.Repository, "", map[string]any{"source": body.Source, "digest": d, "tags": body.Tags})
	writeJSON(w, http.StatusCreated, map[string]any{"digest": d, "repository": body.Repository, "tags": body.Tags,
		"manifests": st.Manifests, "blobs_fetched": st.BlobsFetched, "blobs_linked": st.BlobsLinked, "bytes_fetched": st.BytesFetched})
	return nil
}

// createForImport creates a missing target repository as a push would:
// private, administered by whoever creates it.
func (a *API) createForImport(ctx context.Context, id auth.Identity, repo string) error {
	ri, err := a.db.Repository(ctx, repo)
	if err != nil || ri.Exists {
		return err
	}
	if err := a.db.CreateRepository(ctx, repo, "private", "", id.Actor()); err != nil && !errors.Is(err, meta.ErrExists) {
		return err
	}
	if id.Kind != auth.KindUser && id.Kind != auth.KindRobot || id.Name == "" {
		return nil
	}
	u, err := a.db.UserByName(ctx, id.Name)
	if err != nil {
		return err
	}
	if ri, err = a.db.Repository(ctx, repo); err != nil {
		return err
	}
	return a.db.SetPermission(ctx, ri.ID, u.ID, 0, "admin")
}
