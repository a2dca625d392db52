package mirror

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
)

// ImportRequest is a one-shot import in the manner of Azure's
// `az acr import`.
type ImportRequest struct {
	// Source is the upstream image: host[:port]/repo[:tag|@digest].
	Source             string
	Username, Password string
	// Insecure allows plain HTTP to the upstream.
	Insecure bool
	Repo     string   // target repository
	Tags     []string // target tags; none imports by digest only
	// Force overwrites target tags; without it (NoForce) an existing
	// target tag fails the import before anything is copied.
	Force bool
	Actor string
	// Transport for upstream requests (the API passes the SSRF guard's).
	Transport http.RoundTripper
	Progress  Progress
	// Create is how the copy creates the repository (Request.Create): the
	// API creates it first and passes MustExist.
	Create *meta.RepoCreate
	// Timeout, if set, bounds the import (the API's, which runs in its
	// request, DefaultImportTimeout): one still running then fails,
	// saying so.
	Timeout time.Duration
	// MayLink is whether the importer may read a repository of the
	// target's namespace (Request.MayLink): nil links nothing.
	MayLink MayLink
}

// ErrTagExists is returned by a NoForce import whose target tag exists.
var ErrTagExists = errors.New("target tag exists (use Force to overwrite)")

// InvalidImportError is a request to refuse with a clear message.
type InvalidImportError struct{ Msg string }

func (e *InvalidImportError) Error() string { return e.Msg }

// Import copies an image or index, every platform, into the repository
// and tags it, announcing the result with one repo_push event.
func (c *Copier) Import(ctx context.Context, req ImportRequest) (digest.Digest, Stats, error) {
	if err := oci.ValidateName(req.Repo); err != nil {
		return "", Stats{}, &InvalidImportError{Msg: fmt.Sprintf("target repository: %v", err)}
	}
	for _, t := range req.Tags {
		if err := oci.ValidateTag(t); err != nil {
			return "", Stats{}, &InvalidImportError{Msg: fmt.Sprintf("target tag: %v", err)}
		}
	}
	opts := []name.Option{}
	if req.Insecure {
		opts = append(opts, name.Insecure)
	}
	src, err := name.ParseReference(req.Source, opts...)
	if err != nil {
		return "", Stats{}, &InvalidImportError{Msg: fmt.Sprintf("source %q: %v", req.Source, err)}
	}
	if !req.Force {
		for _, t := range req.Tags {
			if _, err := c.db.Manifests.GetManifest(ctx, req.Repo, t, "", false); err == nil {
				return "", Stats{}, fmt.Errorf("%s:%s: %w", req.Repo, t, ErrTagExists)
			} else if !errors.Is(err, meta.ErrManifestNotFound) {
				return "", Stats{}, err
			}
		}
	}
	ropts := []remote.Option{remote.WithAuth(authn.Anonymous)}
	if req.Username != "" {
		ropts = []remote.Option{remote.WithAuth(&authn.Basic{Username: req.Username, Password: req.Password})}
	}
	transport := req.Transport
	if transport == nil {
		transport = remote.DefaultTransport
	}
	// An upstream manifest is read no further than Berth's cap.
	transport = c.upstreamLimits(transport)
	if !req.Insecure {
		// go-containerregistry falls back to plain HTTP for loopback and
		// private addresses by itself: without Insecure, credentials and
		// content go over HTTPS or not at all.
		transport = events.HTTPSOnly{Next: transport, Host: src.Context().RegistryStr(), Allow: "import with insecure to allow it"}
	}
	ropts = append(ropts, remote.WithTransport(transport))
	cctx := ctx
	if req.Timeout > 0 {
		var cancel context.CancelFunc
		cctx, cancel = context.WithTimeoutCause(ctx, req.Timeout,
			fmt.Errorf("the import did not finish within %s (Berth's limit for one import)", req.Timeout))
		defer cancel()
	}
	d, st, err := c.Copy(cctx, Request{Source: src, Options: ropts, Repo: req.Repo, Tags: req.Tags, Actor: req.Actor, Progress: req.Progress, Create: req.Create,
		MayLink: req.MayLink})
	if err != nil && cctx.Err() != nil && ctx.Err() == nil {
		err = context.Cause(cctx) // past its Timeout: say so, not which request it cut
	}
	return d, st, err
}
