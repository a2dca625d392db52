package meta

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Quotas are namespace storage quotas, as Quay's: a limit in bytes per
// namespace with Warning and Reject thresholds in percent of it, and the
// usage they are compared with. Usage is kept by the transactions that
// change what manifests reference (quota_accounting.go); this store sets
// the limits and reads the usage.
type Quotas struct{ *core }

// Quotas returns the store of namespace quotas.
func (db *DB) Quotas() Quotas { return Quotas{db.core} }

// Quota limit types (Quay's names).
const (
	QuotaWarning = "Warning"
	QuotaReject  = "Reject"
)

// Quota events: a namespace's usage crossed a Warning threshold, or a
// Reject threshold (a push refused, or usage that grew past it without a
// refusal: content the pull-through cache or Berth itself stored). Their
// payload is Quay's (threshold_percent, usage_bytes, limit_bytes,
// usage_percent) for the repository whose push caused them.
const (
	EventQuotaWarning = "quota_warning"
	EventQuotaError   = "quota_error"
)

// Errors of quota management.
var (
	ErrQuotaNotFound      = fmt.Errorf("quota %w", ErrNotFound)
	ErrQuotaLimitNotFound = fmt.Errorf("quota limit %w", ErrNotFound)
	// ErrInvalidQuota wraps a limit or threshold out of range.
	ErrInvalidQuota = errors.New("invalid quota")
)

// QuotaLimit is a threshold of a quota: at ThresholdPercent of the
// quota's bytes, a Warning announces, a Reject refuses pushes that add
// bytes.
type QuotaLimit struct {
	ID               int64
	Type             string // QuotaWarning or QuotaReject
	ThresholdPercent int
}

// Quota is a namespace's storage quota.
type Quota struct {
	ID         int64
	Namespace  string
	LimitBytes int64
	Limits     []QuotaLimit // by type (Reject first), then threshold
	CreatedBy  string
	CreatedAt  time.Time
}

// ThresholdBytes is pct percent of limit, rounded down, without overflow.
func ThresholdBytes(limit int64, pct int) int64 {
	p := int64(pct)
	return limit/100*p + limit%100*p/100
}

func checkQuotaLimit(limitBytes int64) error {
	if limitBytes <= 0 {
		return fmt.Errorf("%w: limit_bytes must be positive", ErrInvalidQuota)
	}
	return nil
}

func checkThreshold(typ string, pct int) error {
	if typ != QuotaWarning && typ != QuotaReject {
		return fmt.Errorf("%w: type must be %q or %q", ErrInvalidQuota, QuotaWarning, QuotaReject)
	}
	if pct < 1 || pct > 100 {
		return fmt.Errorf("%w: threshold_percent must be from 1 to 100", ErrInvalidQuota)
	}
	return nil
}

// namespaceOf is the namespace of a repository: its first path component.
func namespaceOf(repo string) string {
	ns, _, _ := strings.Cut(repo, "/")
	return ns
}

// NamespaceQuotas returns the namespace's quotas: none or one.
func (db Quotas) NamespaceQuotas(ctx context.Context, ns string) ([]Quota, error) {
	return db.quotas(ctx, db.read, ns, 0)
}

// NamespaceQuota returns one quota of the namespace, or ErrQuotaNotFound.
func (db Quotas) NamespaceQuota(ctx context.Context, ns string, id int64) (Quota, error) {
	qs, err := db.quotas(ctx, db.read, ns, id)
	if err != nil {
		return Quota{}, err
	}
	if len(qs) == 0 {
		return Quota{}, ErrQuotaNotFound
	}
	return qs[0], nil
}

type quotaQuerier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// quotas reads a namespace's quotas (one if id is set) with their limits.
func (db *core) quotas(ctx context.Context, q quotaQuerier, ns string, id int64) ([]Quota, error) {
	query := `SELECT q.id, q.limit_bytes, q.created_by, q.created_at, COALESCE(l.id, 0), COALESCE(l.kind, ''), COALESCE(l.threshold_percent, 0)
		FROM namespaces n JOIN namespace_quotas q ON q.namespace_id = n.id
		LEFT JOIN namespace_quota_limits l ON l.quota_id = q.id WHERE n.name = ?`
	args := []any{ns}
	if id != 0 {
		query += " AND q.id = ?"
		args = append(args, id)
	}
	rows, err := q.QueryContext(ctx, db.q(query+" ORDER BY q.id, l.kind, l.threshold_percent, l.id"), args...)
	if err != nil {
		return nil, fmt.Errorf("read quotas: %w", err)
	}
	defer rows.Close()
	out := []Quota{}
	for rows.Next() {
		var qu Quota
		var created int64
		var l QuotaLimit
		if err := rows.Scan(&qu.ID, &qu.LimitBytes, &qu.CreatedBy, &created, &l.ID, &l.Type, &l.ThresholdPercent); err != nil {
			return nil, fmt.Errorf("read quotas: %w", err)
		}
		if len(out) == 0 || out[len(out)-1].ID != qu.ID {
			qu.Namespace, qu.CreatedAt, qu.Limits = ns, fromMicros(created), []QuotaLimit{}
			out = append(out, qu)
		}
		if l.ID != 0 {
			last := &out[len(out)-1]
			last.Limits = append(last.Limits, l)
		}
	}
	return out, rows.Err()
}

// CreateQuota sets a namespace's quota. A namespace has one quota at most:
// a second is refused with an error wrapping ErrExists. An unknown
// namespace is ErrNamespaceNotFound.
func (db Quotas) CreateQuota(ctx context.Context, ns string, limitBytes int64, actor string) (Quota, error) {
	if err := checkQuotaLimit(limitBytes); err != nil {
		return Quota{}, err
	}
	var out Quota
	err := db.tx(ctx, func(tx *sql.Tx) error {
		var nsID int64
		err := tx.QueryRowContext(ctx, db.q("SELECT id FROM namespaces WHERE name = ?"+db.lockSuffix()), ns).Scan(&nsID)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNamespaceNotFound
		}
		if err != nil {
			return fmt.Errorf("look up namespace: %w", err)
		}
		var id int64
		err = tx.QueryRowContext(ctx, db.q(`INSERT INTO namespace_quotas (namespace_id, limit_bytes, created_by, created_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (namespace_id) DO NOTHING RETURNING id`), nsID, limitBytes, actor, db.now()).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("a quota for namespace %s %w", ns, ErrExists)
		}
		if err != nil {
			return fmt.Errorf("create quota: %w", err)
		}
		qs, err := db.quotas(ctx, tx, ns, id)
		if err != nil {
			return err
		}
		out = qs[0]
		return nil
	})
	return out, err
}

// UpdateQuota changes a quota's limit.
func (db Quotas) UpdateQuota(ctx context.Context, ns string, id, limitBytes int64) (Quota, error) {
	if err := checkQuotaLimit(limitBytes); err != nil {
		return Quota{}, err
	}
	var out Quota
	err := db.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, db.q(`UPDATE namespace_quotas SET limit_bytes = ?
			WHERE id = ? AND namespace_id = (SELECT id FROM namespaces WHERE name = ?)`), limitBytes, id, ns)
		if err != nil {
			return fmt.Errorf("update quota: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrQuotaNotFound
		}
		qs, err := db.quotas(ctx, tx, ns, id)
		if err != nil {
			return err
		}
		out = qs[0]
		return nil
	})
	return out, err
}

// DeleteQuota removes a quota with its limits. The namespace's usage is
// still counted.
func (db Quotas) DeleteQuota(ctx context.Context, ns string, id int64) error {
	res, err := db.write.ExecContext(ctx, db.q(`DELETE FROM namespace_quotas WHERE id = ? AND namespace_id = (SELECT id FROM namespaces WHERE name = ?)`), id, ns)
	if err != nil {
		return fmt.Errorf("delete quota: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrQuotaNotFound
	}
	return nil
}

// CreateQuotaLimit adds a threshold to a quota. The same type and
// threshold twice, or a second Reject, is refused with an error wrapping
// ErrExists.
func (db Quotas) CreateQuotaLimit(ctx context.Context, ns string, quotaID int64, typ string, pct int) (QuotaLimit, error) {
	if err := checkThreshold(typ, pct); err != nil {
		return QuotaLimit{}, err
	}
	l := QuotaLimit{Type: typ, ThresholdPercent: pct}
	err := db.tx(ctx, func(tx *sql.Tx) error {
		if err := db.lockQuota(ctx, tx, ns, quotaID); err != nil {
			return err
		}
		if err := db.limitConflict(ctx, tx, quotaID, 0, typ, pct); err != nil {
			return err
		}
		err := tx.QueryRowContext(ctx, db.q(`INSERT INTO namespace_quota_limits (quota_id, kind, threshold_percent) VALUES (?, ?, ?) RETURNING id`),
			quotaID, typ, pct).Scan(&l.ID)
		if err != nil {
			return fmt.Errorf("create quota limit: %w", err)
		}
		return nil
	})
	return l, err
}

// UpdateQuotaLimit changes a limit's type or threshold (nil keeps it) and
// returns its quota.
func (db Quotas) UpdateQuotaLimit(ctx context.Context, ns string, quotaID, limitID int64, typ *string, pct *int) (Quota, error) {
	var out Quota
	err := db.tx(ctx, func(tx *sql.Tx) error {
		if err := db.lockQuota(ctx, tx, ns, quotaID); err != nil {
			return err
		}
		var l QuotaLimit
		err := tx.QueryRowContext(ctx, db.q("SELECT kind, threshold_percent FROM namespace_quota_limits WHERE id = ? AND quota_id = ?"), limitID, quotaID).
			Scan(&l.Type, &l.ThresholdPercent)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrQuotaLimitNotFound
		}
		if err != nil {
			return fmt.Errorf("read quota limit: %w", err)
		}
		if typ != nil {
			l.Type = *typ
		}
		if pct != nil {
			l.ThresholdPercent = *pct
		}
		if err := checkThreshold(l.Type, l.ThresholdPercent); err != nil {
			return err
		}
		if err := db.limitConflict(ctx, tx, quotaID, limitID, l.Type, l.ThresholdPercent); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, db.q("UPDATE namespace_quota_limits SET kind = ?, threshold_percent = ? WHERE id = ?"),
			l.Type, l.ThresholdPercent, limitID); err != nil {
			return fmt.Errorf("update quota limit: %w", err)
		}
		qs, err := db.quotas(ctx, tx, ns, quotaID)
		if err != nil {
			return err
		}
		out = qs[0]
		return nil
	})
	return out, err
}

// DeleteQuotaLimit removes a limit of a quota.
func (db Quotas) DeleteQuotaLimit(ctx context.Context, ns string, quotaID, limitID int64) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		if err := db.lockQuota(ctx, tx, ns, quotaID); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, db.q("DELETE FROM namespace_quota_limits WHERE id = ? AND quota_id = ?"), limitID, quotaID)
		if err != nil {
			return fmt.Errorf("delete quota limit: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrQuotaLimitNotFound
		}
		return nil
	})
}

// lockQuota locks a quota of the namespace (so that two changes of its
// limits check for conflicts one after the other), or ErrQuotaNotFound.
func (db *core) lockQuota(ctx context.Context, tx *sql.Tx, ns string, id int64) error {
	var one int
	err := tx.QueryRowContext(ctx, db.q(`SELECT 1 FROM namespace_quotas WHERE id = ? AND namespace_id = (SELECT id FROM namespaces WHERE name = ?)`+db.lockSuffix()),
		id, ns).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrQuotaNotFound
	}
	if err != nil {
		return fmt.Errorf("look up quota: %w", err)
	}
	return nil
}

// limitConflict refuses a limit (other than except) that the quota has
// already, or a second Reject (Quay allows one).
func (db *core) limitConflict(ctx context.Context, tx *sql.Tx, quotaID, except int64, typ string, pct int) error {
	var same, rejects int
	if err := tx.QueryRowContext(ctx, db.q(`SELECT
		COALESCE(SUM(CASE WHEN kind = ? AND threshold_percent = ? THEN 1 ELSE 0 END), 0),
		COALESCE(SUM(CASE WHEN kind = ? THEN 1 ELSE 0 END), 0)
		FROM namespace_quota_limits WHERE quota_id = ? AND id <> ?`), typ, pct, QuotaReject, quotaID, except).Scan(&same, &rejects); err != nil {
		return fmt.Errorf("read quota limits: %w", err)
	}
	if same > 0 {
		return fmt.Errorf("a %s limit at %d%% %w", typ, pct, ErrExists)
	}
	if typ == QuotaReject && rejects > 0 {
		return fmt.Errorf("a Reject limit %w (a quota has one at most)", ErrExists)
	}
	return nil
}

// NamespaceUsage is the bytes of the distinct blobs that the manifests of
// the namespace's repositories reference, as counted.
func (db Quotas) NamespaceUsage(ctx context.Context, ns string) (int64, error) {
	var n int64
	err := db.read.QueryRowContext(ctx, db.q("SELECT bytes FROM quota_usage WHERE namespace = ?"), ns).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read namespace usage: %w", err)
	}
	return n, nil
}

// RepositoryUsage is the bytes of the distinct blobs the repository's
// manifests reference (computed when asked; a blob shared with other
// repositories counts in each).
func (db Quotas) RepositoryUsage(ctx context.Context, repo string) (int64, error) {
	var n int64
	err := db.read.QueryRowContext(ctx, db.q(`SELECT COALESCE(SUM(b.size), 0) FROM blobs b WHERE b.digest IN
		(SELECT mr.ref_digest FROM manifest_references mr JOIN repositories r ON r.id = mr.repository_id
		WHERE r.name = ? AND mr.is_manifest = 0)`), repo).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("repository usage: %w", err)
	}
	return n, nil
}

// namespaceRefs selects the blob references of a namespace's manifests;
// its arguments are nsArgs(ns).
const namespaceRefs = `SELECT mr.ref_digest FROM manifest_references mr JOIN repositories r ON r.id = mr.repository_id
	WHERE mr.is_manifest = 0 AND (r.name = ? OR (r.name > ? AND r.name < ?))`

// nsArgs are the bounds of a namespace's repository names: the name
// itself, and the names between "ns/" and "ns0" ('0' is the byte after
// '/'), a range the name index answers on both dialects.
func nsArgs(ns string) []any { return []any{ns, ns + "/", ns + "0"} }

// RecomputeNamespaceUsage computes the namespace's usage from scratch:
// the sizes of the distinct stored blobs its manifests reference.
func (db Quotas) RecomputeNamespaceUsage(ctx context.Context, ns string) (int64, error) {
	return db.recompute(ctx, db.read, ns)
}

func (db *core) recompute(ctx context.Context, q quotaQuerier, ns string) (int64, error) {
	var n int64
	if err := q.QueryRowContext(ctx, db.q(`SELECT COALESCE(SUM(b.size), 0) FROM blobs b WHERE b.digest IN (`+namespaceRefs+`)`),
		nsArgs(ns)...).Scan(&n); err != nil {
		return 0, fmt.Errorf("recompute namespace usage: %w", err)
	}
	return n, nil
}

// QuotaCheck compares a namespace's counted usage with a recomputation,
// in one snapshot of the database.
type QuotaCheck struct {
	Namespace  string
	Counted    int64 // the usage pushes are checked against
	Recomputed int64 // from scratch
	Blobs      int   // distinct blobs referenced
	// Mismatches counts the blobs whose reference count or size differs
	// from what the manifests say (0 when the books are exact).
	Mismatches int
}

// Exact reports whether counted and recomputed agree in every blob.
func (c QuotaCheck) Exact() bool { return c.Counted == c.Recomputed && c.Mismatches == 0 }

// VerifyNamespaceUsage recomputes the namespace's usage and reference
// counts from the manifests and compares them with the counted ones. It
// reads the whole namespace: an administrator's check, not a hot path.
func (db Quotas) VerifyNamespaceUsage(ctx context.Context, ns string) (QuotaCheck, error) {
	c := QuotaCheck{Namespace: ns}
	var opts *sql.TxOptions
	if db.dialect == postgres {
		opts = &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true}
	}
	tx, err := db.read.BeginTx(ctx, opts)
	if err != nil {
		return c, fmt.Errorf("verify quota: %w", err)
	}
	defer tx.Rollback()
	type count struct {
		refs int64
		size sql.NullInt64
	}
	readCounts := func(query string, args ...any) (map[string]count, error) {
		rows, err := tx.QueryContext(ctx, db.q(query), args...)
		if err != nil {
			return nil, fmt.Errorf("verify quota: %w", err)
		}
		defer rows.Close()
		out := map[string]count{}
		for rows.Next() {
			var d string
			var c count
			if err := rows.Scan(&d, &c.refs, &c.size); err != nil {
				return nil, fmt.Errorf("verify quota: %w", err)
			}
			out[d] = c
		}
		return out, rows.Err()
	}
	counted, err := readCounts("SELECT digest, refs, size FROM quota_blob_refs WHERE namespace = ?", ns)
	if err != nil {
		return c, err
	}
	want, err := readCounts(`SELECT x.ref_digest, COUNT(*), MAX(b.size) FROM (`+namespaceRefs+`) x
		LEFT JOIN blobs b ON b.digest = x.ref_digest GROUP BY x.ref_digest`, nsArgs(ns)...)
	if err != nil {
		return c, err
	}
	c.Blobs = len(want)
	for d, w := range want {
		if got, ok := counted[d]; !ok || got != w {
			c.Mismatches++
		}
	}
	for d := range counted {
		if _, ok := want[d]; !ok {
			c.Mismatches++
		}
	}
	if err := tx.QueryRowContext(ctx, db.q("SELECT COALESCE((SELECT bytes FROM quota_usage WHERE namespace = ?), 0)"), ns).Scan(&c.Counted); err != nil {
		return c, fmt.Errorf("verify quota: %w", err)
	}
	if c.Recomputed, err = db.recompute(ctx, tx, ns); err != nil {
		return c, err
	}
	return c, nil
}

// HumanBytes writes a size as Quay's quota views do: one decimal and the
// largest binary unit that keeps the value at 1 or more ("1.0 GiB").
func HumanBytes(n int64) string {
	units := []string{"Byte", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	v, i := float64(n), 0
	for ; i < len(units)-1 && (v >= 1024 || v <= -1024); i++ {
		v /= 1024
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}
