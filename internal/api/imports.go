package api

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/mirror"
	"github.com/berth-dev/berth/internal/oci"
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
	// Checked before anything is decided or created: an invalid name
	// would otherwise be made a repository no route can reach.
	if err := oci.ValidateName(body.Repository); err != nil || !strings.Contains(body.Repository, "/") {
		if err == nil {
			err = errors.New("the repository must be namespace/name")
		}
		return badRequest("repository %q: %v", body.Repository, err)
	}
	// So are the tags and the source, which the importer checks again:
	// refused there, the import would leave behind the repository (and
	// organization) createForImport made for it.
	for _, t := range body.Tags {
		if err := oci.ValidateTag(t); err != nil {
			return badRequest("target tag: %v", err)
		}
	}
	var nameOpts []name.Option
	if body.Insecure {
		nameOpts = append(nameOpts, name.Insecure)
	}
	if _, err := name.ParseReference(body.Source, nameOpts...); err != nil {
		return badRequest("source %q: %v", body.Source, err)
	}
	if err := a.allow(r.Context(), id, body.Repository, auth.ActionPush); err != nil {
		ns, _, _ := strings.Cut(body.Repository, "/")
		if _, nerr := a.db.Users.NamespaceByName(r.Context(), ns); errors.Is(nerr, meta.ErrNamespaceNotFound) && id.Kind != auth.KindAnonymous {
			return notFound("%v", &meta.NamespaceMissingError{Namespace: ns})
		}
		return err
	}
	// A proxy cache organization's content is its upstream's: an import
	// there would serve every puller the importer's image, so it is
	// refused as a /v2 push there is.
	if err := a.refuseInProxyCache(r.Context(), body.Repository, "imports"); err != nil {
		return err
	}
	// Each import holds a connection, a copy's buffers and an upstream's
	// time for up to DefaultImportTimeout: a caller (and the server) runs
	// a bounded number at once. Taken before the repository is made, so
	// that a refused import leaves nothing; released however this ends.
	release, ok := a.imports.acquire(id.Actor())
	if !ok {
		w.Header().Set("Retry-After", strconv.Itoa(importRetryAfter))
		return apiError(http.StatusTooManyRequests, "too_many_requests",
			"too many imports running (at most %d per account, %d on the server); retry when one ends", maxImportsPerCaller, maxImports)
	}
	defer release()
	created, err := a.createForImport(r.Context(), id, body.Repository)
	if err != nil {
		return err
	}
	d, st, err := a.opts.Importer.Import(r.Context(), mirror.ImportRequest{Source: body.Source, Username: body.Username, Password: body.Password,
		Insecure: body.Insecure, Repo: body.Repository, Tags: body.Tags, Force: body.Mode == "Force", Actor: id.Actor(),
		// Made above: a deletion during the copy is not undone by it.
		Create: &meta.RepoCreate{MustExist: true},
		// It runs in the request: a client holding the connection open
		// must not hold the copy (and its worker's memory) for ever.
		Timeout: mirror.DefaultImportTimeout,
		// A blob is linked without a download only from a repository the
		// caller may pull from, as a /v2 mount: naming a layer of one it
		// may not read must not make the layer readable in the target.
		MayLink: a.mayPull(id)})
	if err != nil && created {
		// The repository made for the copy goes with the failed copy,
		// unless something was stored in it meanwhile (a push); its
		// blob links go with it.
		ctx := context.WithoutCancel(r.Context())
		if _, derr := a.db.Repositories.DeleteEmptyRepository(ctx, body.Repository, id.Actor()); derr != nil && !errors.Is(derr, meta.ErrRepositoryNotFound) {
			a.log.ErrorContext(ctx, "remove the repository of a failed import", "repository", body.Repository, "err", derr)
		}
	}
	var inv *mirror.InvalidImportError
	var quota *meta.QuotaExceededError
	var immutable *meta.ImmutableTagError
	switch {
	case errors.As(err, &inv):
		return badRequest("%s", inv.Msg)
	case errors.As(err, &quota):
		return apiError(http.StatusForbidden, "quota_exceeded", "%v", quota)
	case errors.As(err, &immutable):
		return forbidden("%v", immutable)
	case errors.Is(err, mirror.ErrTagExists):
		return apiError(http.StatusConflict, "conflict", "%v", err)
	case errors.Is(err, meta.ErrRepositoryNotFound):
		return apiError(http.StatusNotFound, "not_found", "repository %s was deleted during the import", body.Repository)
	case err != nil && r.Context().Err() == nil:
		// Upstream failures are the caller's to see (without credentials);
		// a source the SSRF guard refuses says so once, with the setting
		// that allows it.
		var refused *events.RefusedError
		if errors.As(err, &refused) {
			err = refused
		}
		return apiError(http.StatusBadGateway, "upstream_error", "import from %s failed: %v", body.Source, err)
	case err != nil:
		return err
	}
	a.audit(r, id, "import", body.Repository, "", map[string]any{"source": body.Source, "digest": d, "tags": body.Tags})
	writeJSON(w, http.StatusCreated, map[string]any{"digest": d, "repository": body.Repository, "tags": body.Tags,
		"manifests": st.Manifests, "blobs_fetched": st.BlobsFetched, "blobs_linked": st.BlobsLinked, "bytes_fetched": st.BytesFetched})
	return nil
}

// Bounds on the API's imports running at once (each in its request).
const (
	maxImportsPerCaller = 4
	maxImports          = 32
	// importRetryAfter is the Retry-After, in seconds, of an import
	// refused for them: when a slot frees is not known.
	importRetryAfter = 60
)

// importSlots counts the imports running in this process, in all and per
// caller. It is a bound on this replica's resources, not a coordination
// between replicas: each replica has its own.
type importSlots struct {
	mu        sync.Mutex
	perCaller int
	total     int
	running   int
	byCaller  map[string]int
}

func newImportSlots(perCaller, total int) *importSlots {
	return &importSlots{perCaller: perCaller, total: total, byCaller: map[string]int{}}
}

// acquire takes a slot for caller (its Actor) and returns its release,
// which may be called more than once; ok is false, and nothing taken,
// when the caller or the server runs as many imports as it may. The
// caller "" (auth mode "none", where every client is the same identity)
// is bounded by the server's limit only.
func (s *importSlots) acquire(caller string) (release func(), ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running >= s.total || (caller != "" && s.byCaller[caller] >= s.perCaller) {
		return nil, false
	}
	s.running++
	s.byCaller[caller]++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.running--
			if s.byCaller[caller]--; s.byCaller[caller] <= 0 {
				delete(s.byCaller, caller)
			}
		})
	}, true
}

// mayPull is whether the caller may pull from a repository, as the
// authorizer decides (an error decides no).
func (a *API) mayPull(id auth.Identity) mirror.MayLink {
	return func(ctx context.Context, repo string) bool {
		ok, err := a.auth.Decide(ctx, id, repo, auth.ActionPull)
		if err != nil {
			a.log.WarnContext(ctx, "import link decision: the blob is downloaded", "source", repo, "err", err)
		}
		return err == nil && ok
	}
}

// creatorID is the user or robot a repository the caller creates is
// administered by (0: none, such as auth mode "none" or an access token).
func (a *API) creatorID(ctx context.Context, id auth.Identity) (int64, error) {
	if (id.Kind != auth.KindUser && id.Kind != auth.KindRobot) || id.Name == "" {
		return 0, nil
	}
	u, err := a.db.Users.UserByName(ctx, id.Name)
	if err != nil {
		return 0, err
	}
	return u.ID, nil
}

// createForImport creates a missing target repository as a push would:
// private, administered by whoever creates it, in a namespace that exists
// or that the caller may create (the permission check refused the others):
// an organization the caller owns, or one without owners in auth mode
// "none". It reports whether it created the repository.
func (a *API) createForImport(ctx context.Context, id auth.Identity, repo string) (bool, error) {
	ri, err := a.db.Repositories.Repository(ctx, repo)
	if err != nil || ri.Exists {
		return false, err
	}
	plan := &meta.RepoCreate{Visibility: "private"}
	if plan.AdminUserID, err = a.creatorID(ctx, id); err != nil {
		return false, err
	}
	if id.Kind == auth.KindUser {
		plan.OrgOwnerID = plan.AdminUserID
	}
	if id.Kind == auth.KindUser && id.Name == "" {
		plan.OwnerlessOrg = true // auth mode "none"
	}
	err = a.db.Repositories.EnsureRepository(ctx, repo, meta.Writer{Actor: id.Actor(), Create: plan})
	var missing *meta.NamespaceMissingError
	if errors.As(err, &missing) {
		return false, notFound("%v", missing)
	}
	return err == nil, err
}
