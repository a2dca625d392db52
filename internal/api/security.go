package api

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/scan"
)

// Scanner answers the security endpoints.
type Scanner interface {
	Security(ctx context.Context, repo string, m meta.Manifest, withVulns bool) (scan.SecurityInfo, error)
}

// maxVulnDBUpload bounds an advisory upload (osv.dev's largest all.zip is
// a few hundred MiB).
const maxVulnDBUpload = 2 << 30

func (a *API) securityEndpoints() []repoEndpoint {
	return []repoEndpoint{{http.MethodGet, "manifest/{}/security", a.manifestSecurity}}
}

func (a *API) securityRoutes() {
	a.handle("GET /api/v1/superuser/vulndb", a.vulnDBStatus)
	a.handle("POST /api/v1/superuser/vulndb", a.vulnDBImport)
}

// manifestSecurity is Quay's GET /repository/{repo}/manifest/{digest}/security.
func (a *API) manifestSecurity(w http.ResponseWriter, r *http.Request, id auth.Identity, repo string, args []string) error {
	if a.opts.Scanner == nil {
		return apiError(http.StatusNotImplemented, "not_implemented", "security scanning is disabled on this registry (scan.enabled)")
	}
	d, err := oci.ParseDigest(args[0])
	if err != nil {
		return badRequest("invalid manifest digest: %v", err)
	}
	withVulns := false
	if v := r.URL.Query().Get("vulnerabilities"); v != "" {
		switch strings.ToLower(v) {
		case "true", "1":
			withVulns = true
		case "false", "0":
		default:
			return badRequest("vulnerabilities must be true or false")
		}
	}
	if _, err := a.repoInfo(r.Context(), id, repo, auth.ActionRead); err != nil {
		return err
	}
	m, err := a.db.Tags.GetManifest(r.Context(), repo, "", d, true)
	if errors.Is(err, meta.ErrNotFound) {
		return notFound("manifest %s not found in %s", d, repo)
	} else if err != nil {
		return err
	}
	if err := a.hideHeld(r.Context(), id, repo, d); err != nil {
		return err
	}
	info, err := a.opts.Scanner.Security(r.Context(), repo, m, withVulns)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, info)
	return nil
}

func (a *API) vulnDBStatus(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	if err := needSuperuser(id); err != nil {
		return err
	}
	srcs, err := a.db.VulnDB.VulnSources(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"ecosystems": srcs})
	return nil
}

// vulnDBImport imports advisories from the body: an osv.dev all.zip
// (application/zip) or OSV JSON, one record or an array. The zip is spooled
// to a temporary file first (a zip is read from its end).
func (a *API) vulnDBImport(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	if err := needSuperuser(id); err != nil {
		return err
	}
	ctx := r.Context()
	body := bufio.NewReader(http.MaxBytesReader(w, r.Body, maxVulnDBUpload))
	head, _ := body.Peek(2)
	im := a.db.VulnDB.NewImport()
	var err error
	if string(head) == "PK" || strings.HasPrefix(r.Header.Get("Content-Type"), "application/zip") {
		err = a.importZip(ctx, im, body)
	} else {
		err = im.JSON(ctx, body, "request body")
	}
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return apiError(http.StatusRequestEntityTooLarge, "too_large", "the upload exceeds %d bytes", int64(maxVulnDBUpload))
	case err != nil && ctx.Err() == nil && !errors.Is(err, scan.ErrStore):
		return badRequest("%v", err)
	case err != nil:
		return err
	}
	stats, err := im.Finish(ctx)
	if err != nil {
		return err
	}
	a.audit(r, id, "vulndb_import", "", "", stats)
	writeJSON(w, http.StatusOK, stats)
	return nil
}

func (a *API) importZip(ctx context.Context, im VulnImport, body io.Reader) error {
	f, err := os.CreateTemp("", "berth-vulndb-*.zip")
	if err != nil {
		return fmt.Errorf("%w: spool upload: %w", scan.ErrStore, err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	n, err := io.Copy(f, body)
	if err != nil {
		return err
	}
	return im.Zip(ctx, f, n, "upload.zip")
}
