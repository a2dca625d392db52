package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/gate"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
)

// GateStore is what the gate endpoints read and change (meta.Gates).
type GateStore interface {
	PutGate(ctx context.Context, g meta.Gate) error
	GetGate(ctx context.Context, repo string) (meta.Gate, error)
	DeleteGate(ctx context.Context, repo string) error
	Candidates(ctx context.Context, repo string, q meta.CandidateQuery) ([]meta.Candidate, error)
	PostCheck(ctx context.Context, repo string, d digest.Digest, c meta.Check) error
	Checks(ctx context.Context, repo string, d digest.Digest) ([]meta.Check, error)
	ManualCandidate(ctx context.Context, repo, tag string, d digest.Digest, actor string) (meta.Candidate, error)
}

// Gates evaluates and promotes candidates (gate.Service).
type Gates interface {
	EvaluateAs(ctx context.Context, id int64, actor string) (gate.Evaluation, error)
	Override(ctx context.Context, id int64, reason, actor string) (gate.Evaluation, error)
}

func (a *API) gateEndpoints() []repoEndpoint {
	return []repoEndpoint{
		{http.MethodGet, "gate", a.getGate},
		{http.MethodPut, "gate", a.putGate},
		{http.MethodDelete, "gate", a.deleteGate},
		{http.MethodGet, "gate/candidates", a.gateCandidates},
		{http.MethodPost, "manifest/{}/checks", a.postCheck},
		{http.MethodGet, "manifest/{}/checks", a.listChecks},
		{http.MethodPost, "promote", a.promote},
		{http.MethodPost, "tag/{}/restore", a.restoreTag},
	}
}

// gateView is a gate as the API answers it: its configuration with the
// ids of its keys.
type gateView struct {
	gate.Config
	KeyIDs    []string  `json:"key_ids"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

func (a *API) gates() (GateStore, error) {
	if a.db.Gates == nil || a.opts.Gates == nil {
		return nil, apiError(http.StatusNotImplemented, "not_implemented", "gates are not available on this registry")
	}
	return a.db.Gates, nil
}

func gateViewOf(g meta.Gate) (gateView, error) {
	c, err := gate.Parse(g.Config)
	if err != nil {
		return gateView{}, err
	}
	v := gateView{Config: c.Config, KeyIDs: []string{}, CreatedAt: g.CreatedAt, UpdatedAt: g.UpdatedAt}
	// The checkers as the store has them: the accounts named now (one
	// deleted since is not a checker, and not shown as one).
	v.Checkers = g.Checkers
	if v.Checkers == nil {
		v.Checkers = []string{}
	}
	for _, k := range c.Keys {
		v.KeyIDs = append(v.KeyIDs, k.ID)
	}
	return v, nil
}

func (a *API) getGate(w http.ResponseWriter, r *http.Request, id auth.Identity, repo string, _ []string) error {
	gs, err := a.gates()
	if err != nil {
		return err
	}
	if _, err := a.repoInfo(r.Context(), id, repo, auth.ActionAdmin); err != nil {
		return err
	}
	return writeGate(w, r.Context(), gs, repo)
}

// writeGate answers a repository's gate.
func writeGate(w http.ResponseWriter, ctx context.Context, gs GateStore, repo string) error {
	g, err := gs.GetGate(ctx, repo)
	if errors.Is(err, meta.ErrGateNotFound) {
		return notFound("repository %s has no gate", repo)
	}
	if err != nil {
		return err
	}
	v, err := gateViewOf(g)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (a *API) putGate(w http.ResponseWriter, r *http.Request, id auth.Identity, repo string, _ []string) error {
	gs, err := a.gates()
	if err != nil {
		return err
	}
	ri, err := a.repoInfo(r.Context(), id, repo, auth.ActionAdmin)
	if err != nil {
		return err
	}
	if err := a.refuseInProxyCache(r.Context(), repo, "gates"); err != nil {
		return err
	}
	// What GET answers can be PUT back: its read-only fields are ignored.
	var body struct {
		gate.Config
		KeyIDs    any `json:"key_ids"`
		CreatedAt any `json:"created_at"`
		UpdatedAt any `json:"updated_at"`
	}
	if err := decode(w, r, &body); err != nil {
		return err
	}
	compiled, err := body.Config.Compile()
	if err == nil {
		err = body.Config.CheckNew()
	}
	if err != nil {
		return apiError(http.StatusBadRequest, "invalid_request", "%v", err)
	}
	raw, _ := json.Marshal(compiled.Config)
	var unknown *meta.UnknownCheckerError
	if err := gs.PutGate(r.Context(), meta.Gate{Repository: ri.Name, Tags: compiled.Tags, Checkers: compiled.Checkers, Config: raw}); errors.As(err, &unknown) {
		return apiError(http.StatusBadRequest, "invalid_request", "%v", err)
	} else if err != nil {
		return err
	}
	a.audit(r, id, "gate_change", repo, "", map[string]any{"tags": compiled.Tags, "policy": compiled.Config.Policy,
		"required_checks": compiled.RequiredChecks, "checkers": compiled.Checkers, "keys": len(compiled.Keys)})
	return writeGate(w, r.Context(), gs, repo)
}

func (a *API) deleteGate(w http.ResponseWriter, r *http.Request, id auth.Identity, repo string, _ []string) error {
	gs, err := a.gates()
	if err != nil {
		return err
	}
	if _, err := a.repoInfo(r.Context(), id, repo, auth.ActionAdmin); err != nil {
		return err
	}
	if err := gs.DeleteGate(r.Context(), repo); errors.Is(err, meta.ErrGateNotFound) {
		return notFound("repository %s has no gate", repo)
	} else if err != nil {
		return err
	}
	a.audit(r, id, "gate_delete", repo, "", map[string]any{})
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// candidateView is a candidate with its checks and last decision.
type candidateView struct {
	ID          int64           `json:"id"`
	Tag         string          `json:"tag"`
	Digest      digest.Digest   `json:"digest"`
	State       string          `json:"state"`
	Reasons     []string        `json:"reasons"`
	RollbackTag string          `json:"rollback_tag,omitempty"`
	Actor       string          `json:"actor"`
	CreatedAt   time.Time       `json:"created_at"`
	DecidedAt   *time.Time      `json:"decided_at,omitempty"`
	Checks      []meta.Check    `json:"checks"`
	Evaluation  json.RawMessage `json:"evaluation,omitempty"`
}

func (a *API) gateCandidates(w http.ResponseWriter, r *http.Request, id auth.Identity, repo string, _ []string) error {
	gs, err := a.gates()
	if err != nil {
		return err
	}
	if _, err := a.repoInfo(r.Context(), id, repo, auth.ActionChecks); err != nil {
		return err
	}
	q := r.URL.Query()
	limit, err := intParam(q, "limit", 20, 100)
	if err != nil {
		return err
	}
	cq := meta.CandidateQuery{Live: q.Get("live") == "true" || q.Get("live") == "1", Tag: q.Get("tag"), Limit: limit}
	cs, err := gs.Candidates(r.Context(), repo, cq)
	if err != nil {
		return err
	}
	out := []candidateView{}
	for _, c := range cs {
		checks, err := gs.Checks(r.Context(), repo, c.Digest)
		if err != nil {
			return err
		}
		v := candidateView{ID: c.ID, Tag: c.Tag, Digest: c.Digest, State: c.State, Reasons: c.Reasons, RollbackTag: c.RollbackTag,
			Actor: c.Actor, CreatedAt: c.CreatedAt, Checks: checks}
		if v.Reasons == nil {
			v.Reasons = []string{}
		}
		if v.Checks == nil {
			v.Checks = []meta.Check{}
		}
		if !c.DecidedAt.IsZero() {
			t := c.DecidedAt
			v.DecidedAt = &t
		}
		if len(c.Decision) > 2 {
			v.Evaluation = c.Decision
		}
		out = append(out, v)
	}
	writeJSON(w, http.StatusOK, map[string]any{"candidates": out})
	return nil
}

// hideHeld answers 404 for a manifest a gate holds (a candidate) when
// the caller may not check it: by digest, a candidate is unknown to
// readers through the API as through /v2.
func (a *API) hideHeld(ctx context.Context, id auth.Identity, repo string, d digest.Digest) error {
	m, err := a.db.Tags.GetManifest(ctx, repo, "", d, false)
	if errors.Is(err, meta.ErrNotFound) || err == nil && !m.Held {
		return nil
	}
	if err != nil {
		return err
	}
	ok, err := a.auth.Decide(ctx, id, repo, auth.ActionChecks)
	if err != nil {
		return err
	}
	if !ok {
		return notFound("manifest %s not found in %s", d, repo)
	}
	return nil
}

// manifestArg reads a manifest argument and applies the permission to
// see it: checks for held content (a candidate), read otherwise.
func (a *API) manifestArg(r *http.Request, id auth.Identity, repo, arg, action string) (digest.Digest, error) {
	d, err := oci.ParseDigest(arg)
	if err != nil {
		return "", badRequest("invalid manifest digest: %v", err)
	}
	if _, err := a.repoInfo(r.Context(), id, repo, action); err != nil {
		return "", err
	}
	return d, nil
}

func (a *API) postCheck(w http.ResponseWriter, r *http.Request, id auth.Identity, repo string, args []string) error {
	gs, err := a.gates()
	if err != nil {
		return err
	}
	d, err := a.manifestArg(r, id, repo, args[0], auth.ActionChecks)
	if err != nil {
		return err
	}
	var pc gate.PostedCheck
	if err := decode(w, r, &pc); err != nil {
		return err
	}
	if err := pc.Validate(); err != nil {
		return badRequest("%v", err)
	}
	c := meta.Check{Name: pc.Name, Status: pc.Status, DetailsURL: pc.DetailsURL, Summary: pc.Summary, Actor: id.Actor()}
	if err := gs.PostCheck(r.Context(), repo, d, c); errors.Is(err, meta.ErrManifestNotFound) || errors.Is(err, meta.ErrRepositoryNotFound) {
		return notFound("manifest %s not found in %s", d, repo)
	} else if err != nil {
		return err
	}
	a.audit(r, id, "gate_check", repo, "", map[string]any{"digest": d, "name": pc.Name, "status": pc.Status})
	c.UpdatedAt = time.Now().UTC()
	writeJSON(w, http.StatusCreated, c)
	return nil
}

func (a *API) listChecks(w http.ResponseWriter, r *http.Request, id auth.Identity, repo string, args []string) error {
	gs, err := a.gates()
	if err != nil {
		return err
	}
	d, err := a.manifestArg(r, id, repo, args[0], auth.ActionChecks)
	if err != nil {
		return err
	}
	checks, err := gs.Checks(r.Context(), repo, d)
	if err != nil {
		return err
	}
	if checks == nil {
		checks = []meta.Check{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"checks": checks})
	return nil
}

// promote serves POST .../promote {digest, tag[, override_reason]}: the
// candidate is evaluated by the gate's policy now and promoted if it
// passes; a superuser may promote regardless with a reason, audited.
func (a *API) promote(w http.ResponseWriter, r *http.Request, id auth.Identity, repo string, _ []string) error {
	gs, err := a.gates()
	if err != nil {
		return err
	}
	ri, err := a.repoInfo(r.Context(), id, repo, auth.ActionAdmin)
	if err != nil {
		return err
	}
	if ri.State == auth.StateReadOnly {
		// A promotion moves the tag: refused as every write is.
		return forbidden("%s is read-only (repository state %s): it takes no promotions", repo, ri.State)
	}
	var req struct {
		Digest         string `json:"digest"`
		Tag            string `json:"tag"`
		OverrideReason string `json:"override_reason"`
	}
	if err := decode(w, r, &req); err != nil {
		return err
	}
	d, err := oci.ParseDigest(req.Digest)
	if err != nil {
		return badRequest("invalid digest: %v", err)
	}
	if err := oci.ValidateTag(req.Tag); err != nil {
		return badRequest("invalid tag: %v", err)
	}
	if req.OverrideReason != "" && !id.Superuser {
		return forbidden("only a superuser may promote regardless of the policy (override_reason)")
	}
	if len(req.OverrideReason) > 1024 {
		return badRequest("override_reason: over 1024 bytes")
	}
	g, err := gs.GetGate(r.Context(), repo)
	if errors.Is(err, meta.ErrGateNotFound) {
		return badRequest("repository %s has no gate: move the tag with PUT .../tag/%s", repo, req.Tag)
	}
	if err != nil {
		return err
	}
	if !meta.GuardsTag(g.Tags, req.Tag) {
		return badRequest("tag %s is not guarded by the gate of %s: move it with PUT .../tag/%s", req.Tag, repo, req.Tag)
	}
	c, err := gs.ManualCandidate(r.Context(), repo, req.Tag, d, id.Actor())
	var immutable *meta.ImmutableTagError
	switch {
	case errors.As(err, &immutable): // the guarded tag exists and may not move
		return forbidden("%v", immutable)
	case errors.Is(err, meta.ErrGateNotFound): // deleted meanwhile
		return badRequest("repository %s has no gate: move the tag with PUT .../tag/%s", repo, req.Tag)
	case errors.Is(err, meta.ErrManifestNotFound):
		return notFound("manifest %s not found in %s", d, repo)
	case errors.Is(err, meta.ErrExists):
		return apiError(http.StatusConflict, "invalid_request", "tag %s already points at %s", req.Tag, d)
	case err != nil:
		return err
	}
	var ev gate.Evaluation
	if req.OverrideReason != "" {
		ev, err = a.opts.Gates.Override(r.Context(), c.ID, req.OverrideReason, id.Actor())
	} else {
		ev, err = a.opts.Gates.EvaluateAs(r.Context(), c.ID, id.Actor())
	}
	if errors.Is(err, meta.ErrCandidateNotLive) || err == nil && ev.State == "" {
		return apiError(http.StatusConflict, "invalid_request", "candidate %d was decided meanwhile (promoted, superseded or withdrawn)", c.ID)
	}
	if errors.As(err, &immutable) {
		return forbidden("%v", immutable)
	}
	if errors.Is(err, meta.ErrChecksChanged) {
		return apiError(http.StatusConflict, "invalid_request", "the checks of candidate %d kept changing while it was evaluated: try again", c.ID)
	}
	if err != nil {
		return err
	}
	if ev.State != meta.CandidatePromoted {
		writeJSON(w, http.StatusConflict, map[string]any{"error_type": "policy_not_passed", "candidate": c.ID, "state": ev.State,
			"reasons": ev.Reasons, "evaluation": ev,
			"error_message": "the gate's policy does not pass: " + joinReasons(ev.Reasons)})
		return nil
	}
	writeJSON(w, http.StatusOK, map[string]any{"candidate": c.ID, "state": ev.State, "tag": req.Tag, "digest": d,
		"rollback_tag": ev.RollbackTag, "evaluation": ev})
	return nil
}

func joinReasons(rs []string) string { return strings.Join(rs, "; ") }

// TagRestorer puts a tag back on a digest it pointed at (meta.Manifests).
type TagRestorer interface {
	RestoreTag(ctx context.Context, repo, tag string, d digest.Digest, actor string) error
}

// guarded reports whether the repository's gate guards a tag (false if it
// has none, or the gate cannot be read).
func (a *API) guarded(ctx context.Context, repo, tag string) bool {
	gs, err := a.gates()
	if err != nil {
		return false
	}
	g, err := gs.GetGate(ctx, repo)
	return err == nil && meta.GuardsTag(g.Tags, tag)
}

// restoreTag serves Quay's POST .../tag/{tag}/restore {manifest_digest}:
// the tag goes back to a digest from its history (for a guarded tag,
// one it was promoted to: a rollback).
func (a *API) restoreTag(w http.ResponseWriter, r *http.Request, id auth.Identity, repo string, args []string) error {
	tag := args[0]
	if err := oci.ValidateTag(tag); err != nil {
		return badRequest("%v", err)
	}
	if _, err := a.repoInfo(r.Context(), id, repo, auth.ActionPush); err != nil { // moves the tag: content/write, as a push
		// A gated repository's admins roll its guarded tags back, also
		// where only a mirror robot writes; never in a read-only one.
		ri, rerr := a.repoInfo(r.Context(), id, repo, auth.ActionAdmin)
		if rerr != nil || !ri.Gated || ri.State == auth.StateReadOnly || !a.guarded(r.Context(), repo, tag) {
			return err
		}
	}
	var req struct {
		ManifestDigest string `json:"manifest_digest"`
	}
	if err := decode(w, r, &req); err != nil {
		return err
	}
	d, err := oci.ParseDigest(req.ManifestDigest)
	if err != nil {
		return badRequest("invalid manifest_digest: %v", err)
	}
	if a.db.Restorer == nil {
		return apiError(http.StatusNotImplemented, "not_implemented", "tag restore is not available")
	}
	if err := a.refuseInProxyCache(r.Context(), repo, "tag restores"); err != nil {
		return err
	}
	err = a.db.Restorer.RestoreTag(r.Context(), repo, tag, d, id.Actor())
	var immutable *meta.ImmutableTagError
	switch {
	case errors.As(err, &immutable):
		return forbidden("%v", immutable)
	case errors.Is(err, meta.ErrTagHistoryNotFound):
		return notFound("tag %s of %s never pointed at %s: only a digest from the tag's history can be restored", tag, repo, d)
	case errors.Is(err, meta.ErrManifestNotFound), errors.Is(err, meta.ErrRepositoryNotFound):
		return notFound("manifest %s not found in %s", d, repo)
	case err != nil:
		return err
	}
	a.audit(r, id, "restore_tag", repo, "", map[string]any{"tag": tag, "digest": d})
	writeJSON(w, http.StatusOK, map[string]any{"tag": tag, "manifest_digest": d, "restored": true})
	return nil
}
