package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
)

// listTags pages through a repository's tags as Quay does: by default
// its whole tag history, alive and dead (each period of each tag whose
// manifest is still stored, an ended one with end_ts), and with
// onlyActiveTags=true the tags that exist now; most recently started
// first either way. specificTag and filter_tag_name (like:<part> or
// eq:<name>) narrow it.
func (a *API) listTags(w http.ResponseWriter, r *http.Request, id auth.Identity, repo string, _ []string) error {
	q := r.URL.Query()
	// Quay's bounds: a limit is brought into 1..100 and a page to at least
	// 1, not refused.
	limit, err := clampedIntParam(q, "limit", 50, 1, 100)
	if err != nil {
		return err
	}
	page, err := clampedIntParam(q, "page", 1, 1, math.MaxInt)
	if err != nil {
		return err
	}
	// No repository has a tag that far (and the offset would overflow):
	// the page is empty.
	none := page > maxTagPage
	tq := meta.TagQuery{Name: q.Get("specificTag"), Limit: limit + 1}
	if !none {
		tq.Offset = (page - 1) * limit
	}
	if tq.Name != "" {
		if err := oci.ValidateTag(tq.Name); err != nil {
			return badRequest("invalid specificTag: %v", err)
		}
	}
	active, err := boolParam(q, "onlyActiveTags", false)
	if err != nil {
		return err
	}
	tq.History = !active
	if f := q.Get("filter_tag_name"); f != "" {
		op, value, _ := strings.Cut(f, ":")
		switch {
		case op == "like" && value != "":
			tq.Contains = value
		case op == "eq" && value != "":
			if err := oci.ValidateTag(value); err != nil {
				return badRequest("invalid filter_tag_name: %v", err)
			}
			// Two different names (specificTag too): no tag is both.
			none = none || tq.Name != "" && tq.Name != value
			tq.Name = value
		default:
			return badRequest("unsupported filter_tag_name %q: expected like:<part of a name> or eq:<name>", f)
		}
	}
	if _, err := a.repoInfo(r.Context(), id, repo, auth.ActionRead); err != nil {
		return err
	}
	if none {
		writeJSON(w, http.StatusOK, map[string]any{"tags": []tagView{}, "page": page, "has_additional": false})
		return nil
	}
	tags, err := a.db.Tags.TagsPage(r.Context(), repo, tq)
	if errors.Is(err, meta.ErrRepositoryNotFound) {
		return notFound("repository %s not found", repo)
	} else if err != nil {
		return err
	}
	more := len(tags) > limit
	if more {
		tags = tags[:limit]
	}
	out := []tagView{}
	for _, t := range tags {
		out = append(out, tagViewOf(t))
	}
	writeJSON(w, http.StatusOK, map[string]any{"tags": out, "page": page, "has_additional": more})
	return nil
}

// maxTagPage is the last page of tags listTags reads.
const maxTagPage = 1 << 40

// clampedIntParam reads an integer query parameter and brings it into
// lo..hi (an integer too large for an int counts as the largest); def
// when absent. Anything but an integer is refused.
func clampedIntParam(q url.Values, key string, def, lo, hi int) (int, error) {
	s := q.Get(key)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, badRequest("invalid %s %q: want an integer", key, s)
	}
	return min(max(n, lo), hi), nil
}

// tag serves PUT .../tag/{tag} {"manifest_digest"}, which points the tag
// at a manifest of the repository, and DELETE .../tag/{tag}.
func (a *API) tag(w http.ResponseWriter, r *http.Request, id auth.Identity, repo string, args []string) error {
	tag := args[0]
	if err := oci.ValidateTag(tag); err != nil {
		return badRequest("%v", err)
	}
	// The action is the one /v2 asks for the same change, so that an
	// access token's scopes mean the same on both (ACR's scope maps):
	// deleting a tag is content/delete, pointing it at a manifest
	// content/write, setting when it expires metadata/write. For users
	// and robots, all three are the write role.
	// (A move needs push alone, an expiration write, as on /v2: a token
	// with content/write and no content/read moves tags.)
	if r.Method == http.MethodDelete {
		if _, err := a.repoInfo(r.Context(), id, repo, auth.ActionDelete); err != nil {
			return err
		}
	}
	var immutable *meta.ImmutableTagError
	if r.Method == http.MethodDelete {
		if err := a.db.Tags.DeleteTag(r.Context(), repo, tag, id.Actor()); errors.Is(err, meta.ErrManifestNotFound) {
			return notFound("tag %s not found in %s", tag, repo)
		} else if errors.As(err, &immutable) {
			return forbidden("%v", immutable)
		} else if err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	var req struct {
		ManifestDigest string          `json:"manifest_digest"`
		Expiration     json.RawMessage `json:"expiration"`
	}
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if req.ManifestDigest == "" && req.Expiration == nil {
		return badRequest("manifest_digest or expiration is required")
	}
	if req.ManifestDigest != "" {
		if _, err := a.repoInfo(r.Context(), id, repo, auth.ActionPush); err != nil {
			return err
		}
	}
	if req.Expiration != nil {
		if _, err := a.repoInfo(r.Context(), id, repo, auth.ActionWrite); err != nil {
			return err
		}
	}
	// The expiration is read, and refused, before the tag moves: a
	// refused request changes nothing.
	var at time.Time // Quay's: a Unix time, or null to clear
	if req.Expiration != nil && string(req.Expiration) != "null" {
		// Quay reads float(expiration): a fractional time (Python's
		// time.time() + 86400) is taken, to the whole second.
		var f float64
		err := json.Unmarshal(req.Expiration, &f)
		sec := int64(0)
		if err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) && f < maxUnixSeconds+1 {
			sec = int64(math.Trunc(f))
		}
		if sec <= 0 || sec > maxUnixSeconds {
			return badRequest("expiration must be a Unix time in seconds (before the year 10000), or null")
		}
		at = time.Unix(sec, 0)
		if !at.After(time.Now()) {
			return badRequest("expiration must be in the future")
		}
		// The store bounds it, as Quay does, to between an hour and 104
		// weeks (lifecycle.expirationMinimum, expirationMaximum) after
		// the tag's start_ts: SetTagExpiration.
	}
	if req.ManifestDigest != "" {
		if !at.IsZero() {
			// A tag an immutability policy covers is created, but
			// cannot expire (SetTagExpiration's refusal, after the move).
			if err := a.immutableByPolicy(r.Context(), repo, tag); errors.As(err, &immutable) {
				return forbidden("%v: it cannot expire", immutable)
			} else if err != nil {
				return err
			}
		}
		err := a.moveTag(r, id, repo, tag, req.ManifestDigest)
		if errors.Is(err, meta.ErrRolledBack) {
			return apiError(http.StatusConflict, "invalid_request", "%s", err.Error())
		}
		if errors.Is(err, meta.ErrGuardedTag) {
			// A gate guards the tag: the manifest is its candidate now.
			writeJSON(w, http.StatusAccepted, map[string]any{"candidate": true, "tag": tag, "manifest_digest": req.ManifestDigest,
				"message": err.Error()})
			return nil
		}
		if err != nil {
			return err
		}
	}
	if req.Expiration != nil {
		switch err := a.db.Tags.SetTagExpiration(r.Context(), repo, tag, at); {
		case errors.Is(err, meta.ErrManifestNotFound):
			return notFound("tag %s not found in %s", tag, repo)
		case errors.As(err, &immutable):
			return forbidden("%v: it cannot expire", immutable)
		case err != nil:
			return err
		}
	}
	writeJSON(w, http.StatusCreated, "Updated")
	return nil
}

// immutableByPolicy is an *meta.ImmutableTagError if an immutability
// policy of the repository's organization or of the repository covers
// the tag (nil without a policy store).
func (a *API) immutableByPolicy(ctx context.Context, repo, tag string) error {
	if a.db.Policies == nil {
		return nil
	}
	ns, _, _ := strings.Cut(repo, "/")
	var ps []meta.TagPolicy
	for _, scope := range []string{"", repo} {
		got, err := a.db.Policies.TagPolicies(ctx, meta.PolicyImmutability, ns, scope)
		if err != nil {
			return fmt.Errorf("read immutability policies: %w", err)
		}
		ps = append(ps, got...)
	}
	return meta.ImmutableByPolicy(ps, tag)
}

// moveTag points a tag at a manifest of the repository.
func (a *API) moveTag(r *http.Request, id auth.Identity, repo, tag, manifestDigest string) error {
	var immutable *meta.ImmutableTagError
	d, err := oci.ParseDigest(manifestDigest)
	if err != nil {
		return badRequest("invalid manifest_digest: %v", err)
	}
	if err := a.refuseInProxyCache(r.Context(), repo, "tag moves"); err != nil {
		return err
	}
	err = a.db.Tags.MoveTag(r.Context(), repo, tag, d, id.Actor())
	switch {
	case errors.Is(err, meta.ErrRepositoryNotFound):
		return notFound("repository %s not found", repo)
	case errors.Is(err, meta.ErrManifestNotFound):
		return notFound("manifest %s not found in %s", d, repo)
	case errors.As(err, &immutable):
		return forbidden("%v", immutable)
	}
	return err
}

// Permissions of users, robots ("ns+name") and teams of the repository's
// organization.

type permView struct {
	Role        string `json:"role"`
	Name        string `json:"name"`
	IsRobot     *bool  `json:"is_robot,omitempty"`
	IsOrgMember *bool  `json:"is_org_member,omitempty"`
}

// maxUnixSeconds is the last second of the year 9999: later times do not
// fit the microseconds the store keeps (they wrapped to 1970, and the
// tag expired at the next pass).
const maxUnixSeconds = 253402300799
