package mirror

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/berth-dev/berth/internal/events"
)

// What one sync may cost, whatever its upstream answers: an upstream is
// chosen by a repository administrator, who may run it themselves.
const (
	// DefaultMaxTags is how many tags a sync lists at most: an upstream
	// that lists more fails the sync, saying so.
	DefaultMaxTags = 100_000
	// DefaultMaxTagPages is how many tag list pages a sync reads at most
	// (a Link: rel="next" chain without end fails the sync).
	DefaultMaxTagPages = 10_000
	// MaxTagListBytes caps one tag list page.
	MaxTagListBytes = 8 << 20
	// DefaultSyncTimeout bounds one sync: one still running then fails
	// (and its job ends, freeing the worker).
	DefaultSyncTimeout = 6 * time.Hour
	// answerTimeout bounds one manifest or tag list request, its body
	// included.
	answerTimeout = 5 * time.Minute
	// DefaultImportTimeout bounds one import through the API (which runs
	// in its request): as long as a whole sync, since one import may copy
	// as much as a sync's largest image.
	DefaultImportTimeout = DefaultSyncTimeout
)

// What one copy (an import, or the tags of a sync that moved to one
// upstream digest) may fetch, whatever its upstream answers. The copier
// walks an index depth first, each level holding its manifest (up to
// registry.maxManifestBytes, 4 MiB by default) until its children are
// stored: without a bound, an upstream nesting indexes in each other
// would make it run out of memory, or of stack.
const (
	// MaxManifestDepth is how many manifests deep a copy follows an
	// upstream's indexes: the top manifest is the first, an index's
	// entries the second, and so on. Real images are an image (1) or an
	// index of images (2), and nested indexes rarely go past 3 levels;
	// 8 leaves room for those while holding at most 8 manifests (32 MiB
	// of bodies at the default cap, with their parsed forms) at once.
	MaxManifestDepth = 8
	// DefaultMaxManifests is how many manifests one copy fetches at most:
	// far above the few hundred of the largest multi-platform images with
	// their attestations, and a bound on the requests, the bytes (at most
	// 4 MiB each) and the stored rows a single copy may cost.
	DefaultMaxManifests = 10_000
)

// ErrIndexTooDeep and ErrTooManyManifests are the refusals of a copy
// past MaxManifestDepth or its manifest cap (wrapped, saying the limit):
// nothing is tagged.
var (
	ErrIndexTooDeep     = errors.New("the upstream's indexes nest too deep")
	ErrTooManyManifests = errors.New("the upstream's index lists too many manifests")
)

// upstreamLimits bounds what the upstream answers the copier reads whole
// may cost: a manifest is read no further than Berth's cap, a tag list
// page no further than MaxTagListBytes, and a body that stalls is cut.
func (c *Copier) upstreamLimits(next http.RoundTripper) http.RoundTripper {
	return events.UpstreamLimits{Next: next, MaxManifestBytes: c.maxManifest, MaxTagListBytes: MaxTagListBytes,
		Stall: c.stall, Timeout: answerTimeout}
}

// listTags lists the upstream's tags page by page, following Link:
// rel="next" on the upstream's host, at most MaxTags tags over at most
// MaxTagPages pages, each page bounded by the transport (upstreamLimits).
// (go-containerregistry's lister checks a next page's scheme against the
// one it guesses for the host, plain HTTP for a private address, and so
// refuses the pages of such an upstream served over HTTPS.)
func (s *MirrorService) listTags(ctx context.Context, up upstream) ([]string, error) {
	rt, err := transport.NewWithContext(ctx, up.repo.Registry, up.auth, up.rt, []string{up.repo.Scope(transport.PullScope)})
	if err != nil {
		return nil, err
	}
	client := &http.Client{Transport: rt}
	// No page size is asked: CNCF Distribution refuses an n above its
	// tags.maxtags (400 PAGINATION_NUMBER_INVALID), and without one lists
	// every tag; others page at their default.
	next := (&url.URL{Scheme: up.repo.Scheme(), Host: up.repo.RegistryStr(), Path: "/v2/" + up.repo.RepositoryStr() + "/tags/list"}).String()
	var tags []string
	for pages := 0; next != ""; pages++ {
		if pages >= s.opts.MaxTagPages {
			return nil, fmt.Errorf("the upstream's tag list goes on past %d pages (Berth's limit for one mirror sync)", s.opts.MaxTagPages)
		}
		var page []string
		page, next, err = listPage(ctx, client, next, up.repo.RegistryStr())
		if err != nil {
			return nil, err
		}
		if len(tags)+len(page) > s.opts.MaxTags {
			return nil, fmt.Errorf("the upstream lists more than %d tags (Berth's limit for one mirror sync)", s.opts.MaxTags)
		}
		tags = append(tags, page...)
	}
	return tags, nil
}

// listPage reads one tag list page and the next page's URL ("" at the
// end), which must be on the upstream's host.
func listPage(ctx context.Context, client *http.Client, u, host string) ([]string, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		return nil, "", err
	}
	var page struct {
		Tags []string `json:"tags"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		return nil, "", fmt.Errorf("read a tag list page: %w", err)
	}
	next, err := nextPage(resp, host)
	if err != nil {
		return nil, "", err
	}
	return page.Tags, next, nil
}

// nextPage is the URL of a Link header's rel="next" (RFC 8288), resolved
// against the request's: "" if there is none.
func nextPage(resp *http.Response, host string) (string, error) {
	for _, link := range resp.Header.Values("Link") {
		for _, l := range strings.Split(link, ",") {
			target, params, ok := strings.Cut(strings.TrimSpace(l), ";")
			target = strings.TrimSpace(target)
			if !ok || !strings.HasPrefix(target, "<") || !strings.HasSuffix(target, ">") || !isNext(params) {
				continue
			}
			u, err := resp.Request.URL.Parse(strings.TrimSuffix(strings.TrimPrefix(target, "<"), ">"))
			if err != nil {
				return "", fmt.Errorf("the upstream's next tag list page: %w", err)
			}
			if u.Host != host || (u.Scheme != "https" && u.Scheme != "http") {
				return "", fmt.Errorf("the upstream's next tag list page %q is not on %s", u.Redacted(), host)
			}
			return u.String(), nil
		}
	}
	return "", nil
}

func isNext(params string) bool {
	for _, p := range strings.Split(params, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		if strings.EqualFold(strings.TrimSpace(k), "rel") && slices.Contains(strings.Fields(strings.ToLower(strings.Trim(strings.TrimSpace(v), `"`))), "next") {
			return true
		}
	}
	return false
}
