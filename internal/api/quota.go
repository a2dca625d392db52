package api

import (
	"context"
	"errors"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
)

// QuotaStore reads and changes namespaces' quotas and their limits (the
// quota endpoints).
type QuotaStore interface {
	NamespaceQuotas(ctx context.Context, ns string) ([]meta.Quota, error)
	NamespaceQuota(ctx context.Context, ns string, id int64) (meta.Quota, error)
	CreateQuota(ctx context.Context, ns string, limitBytes int64, actor string) (meta.Quota, error)
	UpdateQuota(ctx context.Context, ns string, id, limitBytes int64) (meta.Quota, error)
	DeleteQuota(ctx context.Context, ns string, id int64) error
	CreateQuotaLimit(ctx context.Context, ns string, quotaID int64, typ string, pct int) (meta.QuotaLimit, error)
	UpdateQuotaLimit(ctx context.Context, ns string, quotaID, limitID int64, typ *string, pct *int) (meta.Quota, error)
	DeleteQuotaLimit(ctx context.Context, ns string, quotaID, limitID int64) error
}

// UsageStore reads what namespaces and repositories store (the quota
// reports of organizations and repositories, the verification).
type UsageStore interface {
	NamespaceUsage(ctx context.Context, ns string) (int64, error)
	RepositoryUsage(ctx context.Context, repo string) (int64, error)
	VerifyNamespaceUsage(ctx context.Context, ns string) (meta.QuotaCheck, error)
}

// Quotas, as Quay's /api/v1/organization/{org}/quota endpoints: a
// superuser sets an organization's quota and its Warning and Reject
// limits; the organization's members (and superusers) read them. The
// organization's administrators do not set their own limit.
func (a *API) quotaRoutes() {
	a.handle("GET /api/v1/organization/{org}/quota", a.listQuotas)
	a.handle("POST /api/v1/organization/{org}/quota", a.createQuota)
	a.handle("GET /api/v1/organization/{org}/quota/verify", a.verifyQuota)
	a.handle("GET /api/v1/organization/{org}/quota/{quota_id}", a.getQuota)
	a.handle("PUT /api/v1/organization/{org}/quota/{quota_id}", a.updateQuota)
	a.handle("DELETE /api/v1/organization/{org}/quota/{quota_id}", a.deleteQuota)
	a.handle("GET /api/v1/organization/{org}/quota/{quota_id}/limit", a.listQuotaLimits)
	a.handle("POST /api/v1/organization/{org}/quota/{quota_id}/limit", a.createQuotaLimit)
	a.handle("GET /api/v1/organization/{org}/quota/{quota_id}/limit/{limit_id}", a.getQuotaLimit)
	a.handle("PUT /api/v1/organization/{org}/quota/{quota_id}/limit/{limit_id}", a.updateQuotaLimit)
	a.handle("DELETE /api/v1/organization/{org}/quota/{quota_id}/limit/{limit_id}", a.deleteQuotaLimit)
}

// quotaLimitView is Quay's view of a limit.
type quotaLimitView struct {
	ID           int64  `json:"id"`
	Type         string `json:"type"`
	LimitPercent int    `json:"limit_percent"`
}

// quotaView is Quay's view of a quota. Berth has no system-wide default
// quota: default_config and default_config_exists are false.
type quotaView struct {
	ID                  int64            `json:"id"`
	LimitBytes          int64            `json:"limit_bytes"`
	Limit               string           `json:"limit"`
	DefaultConfig       bool             `json:"default_config"`
	Limits              []quotaLimitView `json:"limits"`
	DefaultConfigExists bool             `json:"default_config_exists"`
}

func quotaLimitViewOf(l meta.QuotaLimit) quotaLimitView {
	return quotaLimitView{ID: l.ID, Type: l.Type, LimitPercent: l.ThresholdPercent}
}

func quotaViewOf(q meta.Quota) quotaView {
	v := quotaView{ID: q.ID, LimitBytes: q.LimitBytes, Limit: meta.HumanBytes(q.LimitBytes), Limits: []quotaLimitView{}}
	for _, l := range q.Limits {
		v.Limits = append(v.Limits, quotaLimitViewOf(l))
	}
	return v
}

// quotaReport is Quay's quota_report of an organization or a repository:
// the bytes it stores and its namespace's quota (null without one).
// Berth counts usage as content changes, so there is never a backfill
// to wait for: the backfill fields Quay's clients read say "complete".
type quotaReport struct {
	QuotaBytes      int64  `json:"quota_bytes"`
	ConfiguredQuota *int64 `json:"configured_quota"`
	RunningBackfill string `json:"running_backfill"`
	BackfillStatus  string `json:"backfill_status"`
}

// quotaReportOf reports usage against the namespace's quota.
func (a *API) quotaReportOf(ctx context.Context, ns string, usage int64) (*quotaReport, error) {
	r := &quotaReport{QuotaBytes: usage, RunningBackfill: "complete", BackfillStatus: "complete"}
	qs, err := a.db.Quotas.NamespaceQuotas(ctx, ns)
	if err != nil {
		return nil, err
	}
	if len(qs) > 0 {
		r.ConfiguredQuota = &qs[0].LimitBytes
	}
	return r, nil
}

// orgQuotas are the quotas and the report an organization's description
// shows its members, as Quay's.
func (a *API) orgQuotas(ctx context.Context, org string) ([]quotaView, *quotaReport, error) {
	qs, err := a.db.Quotas.NamespaceQuotas(ctx, org)
	if err != nil {
		return nil, nil, err
	}
	views := make([]quotaView, 0, len(qs))
	for _, q := range qs {
		views = append(views, quotaViewOf(q))
	}
	usage, err := a.db.Usage.NamespaceUsage(ctx, org)
	if err != nil {
		return nil, nil, err
	}
	rep, err := a.quotaReportOf(ctx, org, usage)
	return views, rep, err
}

// repoQuotaReport is a repository's quota_report: the bytes of the
// distinct blobs its own manifests reference.
func (a *API) repoQuotaReport(ctx context.Context, repo string) (*quotaReport, error) {
	usage, err := a.db.Usage.RepositoryUsage(ctx, repo)
	if err != nil {
		return nil, err
	}
	ns, _ := splitRepo(repo)
	return a.quotaReportOf(ctx, ns, usage)
}

// quotaReader answers 401 to anonymous callers, 404 for an unknown
// organization and 403 to callers who are not its members.
func (a *API) quotaReader(ctx context.Context, id auth.Identity, org string) error {
	if err := requireUser(id); err != nil {
		return err
	}
	c, err := a.orgStanding(ctx, id, org)
	if err != nil {
		return err
	}
	if !c.member {
		return forbidden("%s is not a member of organization %s", id.Actor(), org)
	}
	return nil
}

// quotaWriter answers 401 to anonymous callers, 404 for an unknown
// organization and 403 to anyone but a superuser.
func (a *API) quotaWriter(ctx context.Context, id auth.Identity, org string) error {
	if err := requireUser(id); err != nil {
		return err
	}
	if _, err := a.orgStanding(ctx, id, org); err != nil {
		return err
	}
	if id.Kind != auth.KindUser || !id.Superuser {
		return forbidden("only a superuser sets quotas; %s is not one", id.Actor())
	}
	return nil
}

// pathID reads a numeric id from the path: anything else names nothing.
func pathID(r *http.Request, name, what string) (int64, error) {
	id, err := strconv.ParseInt(r.PathValue(name), 10, 64)
	if err != nil || id <= 0 {
		return 0, notFound("%s %q not found", what, r.PathValue(name))
	}
	return id, nil
}

// quotaError maps the store's refusals to answers.
func quotaError(err error, org string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, meta.ErrQuotaNotFound):
		return notFound("organization %s has no such quota", org)
	case errors.Is(err, meta.ErrQuotaLimitNotFound):
		return notFound("the quota of organization %s has no such limit", org)
	case errors.Is(err, meta.ErrNamespaceNotFound):
		return notFound("organization %q not found", org)
	case errors.Is(err, meta.ErrInvalidQuota), errors.Is(err, meta.ErrExists):
		return badRequest("%v", err)
	}
	return err
}

func (a *API) listQuotas(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	org := r.PathValue("org")
	if err := a.quotaReader(r.Context(), id, org); err != nil {
		return err
	}
	views, _, err := a.orgQuotas(r.Context(), org)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, views)
	return nil
}

func (a *API) getQuota(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	org := r.PathValue("org")
	if err := a.quotaReader(r.Context(), id, org); err != nil {
		return err
	}
	qid, err := pathID(r, "quota_id", "quota")
	if err != nil {
		return err
	}
	q, err := a.db.Quotas.NamespaceQuota(r.Context(), org, qid)
	if err != nil {
		return quotaError(err, org)
	}
	writeJSON(w, http.StatusOK, quotaViewOf(q))
	return nil
}

// quotaBody sets a quota's size: limit_bytes, or limit as Quay's human
// form ("10 GiB", "500M": K, M, G... and KB, MB, GB... are powers of
// 1000, Ki, Mi... and KiB, MiB... powers of 1024).
type quotaBody struct {
	LimitBytes *int64  `json:"limit_bytes"`
	Limit      *string `json:"limit"`
}

func (b quotaBody) bytes(required bool) (int64, bool, error) {
	switch {
	case b.LimitBytes != nil && b.Limit != nil:
		return 0, false, badRequest("give limit_bytes or limit, not both")
	case b.LimitBytes != nil:
		if *b.LimitBytes <= 0 {
			return 0, false, badRequest("limit_bytes must be a positive number of bytes")
		}
		return *b.LimitBytes, true, nil
	case b.Limit != nil:
		n, err := parseHumanBytes(*b.Limit)
		if err != nil {
			return 0, false, err
		}
		return n, true, nil
	case required:
		return 0, false, badRequest("limit_bytes is required")
	}
	return 0, false, nil
}

var humanBytes = regexp.MustCompile(`^(\d+)\s?([KMGTPE]?)(i?)(B?)$`)

// parseHumanBytes reads Quay's human-readable limit.
func parseHumanBytes(s string) (int64, error) {
	m := humanBytes.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil || (m[2] == "" && m[3] != "") {
		return 0, badRequest("invalid limit %q: use a number followed by a unit (e.g. 1GiB)", s)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil || n <= 0 {
		return 0, badRequest("invalid limit %q: the number must be positive", s)
	}
	base, unit := int64(1000), int64(1)
	if m[3] == "i" {
		base = 1024
	}
	if m[2] != "" {
		for range strings.Index("KMGTPE", m[2]) + 1 {
			unit *= base
		}
	}
	if n > math.MaxInt64/unit {
		return 0, badRequest("invalid limit %q: too large", s)
	}
	return n * unit, nil
}

func (a *API) createQuota(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	org := r.PathValue("org")
	if err := a.quotaWriter(r.Context(), id, org); err != nil {
		return err
	}
	var body quotaBody
	if err := decode(w, r, &body); err != nil {
		return err
	}
	n, _, err := body.bytes(true)
	if err != nil {
		return err
	}
	q, err := a.db.Quotas.CreateQuota(r.Context(), org, n, id.Actor())
	if errors.Is(err, meta.ErrExists) {
		return badRequest("organization quota for %q already exists", org)
	}
	if err != nil {
		return quotaError(err, org)
	}
	a.audit(r, id, "org_create_quota", "", org, map[string]any{"namespace": org, "quota_id": q.ID, "limit_bytes": n})
	writeJSON(w, http.StatusCreated, "Created")
	return nil
}

func (a *API) updateQuota(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	org := r.PathValue("org")
	if err := a.quotaWriter(r.Context(), id, org); err != nil {
		return err
	}
	qid, err := pathID(r, "quota_id", "quota")
	if err != nil {
		return err
	}
	var body quotaBody
	if err := decode(w, r, &body); err != nil {
		return err
	}
	n, set, err := body.bytes(false)
	if err != nil {
		return err
	}
	var q meta.Quota
	if set {
		q, err = a.db.Quotas.UpdateQuota(r.Context(), org, qid, n)
		if err == nil {
			a.audit(r, id, "org_change_quota", "", org, map[string]any{"namespace": org, "quota_id": qid, "limit_bytes": n})
		}
	} else {
		q, err = a.db.Quotas.NamespaceQuota(r.Context(), org, qid)
	}
	if err != nil {
		return quotaError(err, org)
	}
	writeJSON(w, http.StatusOK, quotaViewOf(q))
	return nil
}

func (a *API) deleteQuota(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	org := r.PathValue("org")
	if err := a.quotaWriter(r.Context(), id, org); err != nil {
		return err
	}
	qid, err := pathID(r, "quota_id", "quota")
	if err != nil {
		return err
	}
	if err := a.db.Quotas.DeleteQuota(r.Context(), org, qid); err != nil {
		return quotaError(err, org)
	}
	a.audit(r, id, "org_delete_quota", "", org, map[string]any{"namespace": org, "quota_id": qid})
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *API) listQuotaLimits(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	org := r.PathValue("org")
	if err := a.quotaReader(r.Context(), id, org); err != nil {
		return err
	}
	qid, err := pathID(r, "quota_id", "quota")
	if err != nil {
		return err
	}
	q, err := a.db.Quotas.NamespaceQuota(r.Context(), org, qid)
	if err != nil {
		return quotaError(err, org)
	}
	writeJSON(w, http.StatusOK, quotaViewOf(q).Limits)
	return nil
}

func (a *API) getQuotaLimit(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	org := r.PathValue("org")
	if err := a.quotaReader(r.Context(), id, org); err != nil {
		return err
	}
	qid, err := pathID(r, "quota_id", "quota")
	if err != nil {
		return err
	}
	lid, err := pathID(r, "limit_id", "quota limit")
	if err != nil {
		return err
	}
	q, err := a.db.Quotas.NamespaceQuota(r.Context(), org, qid)
	if err != nil {
		return quotaError(err, org)
	}
	for _, l := range q.Limits {
		if l.ID == lid {
			writeJSON(w, http.StatusOK, quotaLimitViewOf(l))
			return nil
		}
	}
	return quotaError(meta.ErrQuotaLimitNotFound, org)
}

// quotaLimitBody is a limit: its type (Warning or Reject, in any case)
// and threshold in percent of the quota.
type quotaLimitBody struct {
	Type             *string `json:"type"`
	ThresholdPercent *int    `json:"threshold_percent"`
}

// normalize checks the fields given (both when required).
func (b *quotaLimitBody) normalize(required bool) error {
	if required && (b.Type == nil || b.ThresholdPercent == nil) {
		return badRequest("type and threshold_percent are required")
	}
	if b.Type != nil {
		switch strings.ToLower(*b.Type) {
		case "warning":
			*b.Type = meta.QuotaWarning
		case "reject":
			*b.Type = meta.QuotaReject
		default:
			return badRequest("type must be %q or %q", meta.QuotaWarning, meta.QuotaReject)
		}
	}
	if b.ThresholdPercent != nil && (*b.ThresholdPercent < 1 || *b.ThresholdPercent > 100) {
		return badRequest("threshold_percent must be from 1 to 100")
	}
	return nil
}

func (a *API) createQuotaLimit(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	org := r.PathValue("org")
	if err := a.quotaWriter(r.Context(), id, org); err != nil {
		return err
	}
	qid, err := pathID(r, "quota_id", "quota")
	if err != nil {
		return err
	}
	var body quotaLimitBody
	if err := decode(w, r, &body); err != nil {
		return err
	}
	if err := body.normalize(true); err != nil {
		return err
	}
	l, err := a.db.Quotas.CreateQuotaLimit(r.Context(), org, qid, *body.Type, *body.ThresholdPercent)
	if err != nil {
		return quotaError(err, org)
	}
	a.audit(r, id, "org_create_quota_limit", "", org, map[string]any{"namespace": org, "quota_id": qid, "limit_id": l.ID,
		"type": l.Type, "threshold_percent": l.ThresholdPercent})
	writeJSON(w, http.StatusCreated, "Created")
	return nil
}

func (a *API) updateQuotaLimit(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	org := r.PathValue("org")
	if err := a.quotaWriter(r.Context(), id, org); err != nil {
		return err
	}
	qid, err := pathID(r, "quota_id", "quota")
	if err != nil {
		return err
	}
	lid, err := pathID(r, "limit_id", "quota limit")
	if err != nil {
		return err
	}
	var body quotaLimitBody
	if err := decode(w, r, &body); err != nil {
		return err
	}
	if err := body.normalize(false); err != nil {
		return err
	}
	q, err := a.db.Quotas.UpdateQuotaLimit(r.Context(), org, qid, lid, body.Type, body.ThresholdPercent)
	if err != nil {
		return quotaError(err, org)
	}
	a.audit(r, id, "org_change_quota_limit", "", org, map[string]any{"namespace": org, "quota_id": qid, "limit_id": lid,
		"type": body.Type, "threshold_percent": body.ThresholdPercent})
	writeJSON(w, http.StatusOK, quotaViewOf(q))
	return nil
}

func (a *API) deleteQuotaLimit(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	org := r.PathValue("org")
	if err := a.quotaWriter(r.Context(), id, org); err != nil {
		return err
	}
	qid, err := pathID(r, "quota_id", "quota")
	if err != nil {
		return err
	}
	lid, err := pathID(r, "limit_id", "quota limit")
	if err != nil {
		return err
	}
	if err := a.db.Quotas.DeleteQuotaLimit(r.Context(), org, qid, lid); err != nil {
		return quotaError(err, org)
	}
	a.audit(r, id, "org_delete_quota_limit", "", org, map[string]any{"namespace": org, "quota_id": qid, "limit_id": lid})
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// verifyQuota (Berth's) recomputes the organization's usage and reference
// counts from its manifests and compares them with the counted ones.
func (a *API) verifyQuota(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	org := r.PathValue("org")
	if err := a.quotaWriter(r.Context(), id, org); err != nil {
		return err
	}
	c, err := a.db.Usage.VerifyNamespaceUsage(r.Context(), org)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"namespace": org, "counted_bytes": c.Counted, "recomputed_bytes": c.Recomputed,
		"blobs": c.Blobs, "mismatches": c.Mismatches, "exact": c.Exact()})
	return nil
}
