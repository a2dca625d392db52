package meta

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/opencontainers/go-digest"
)

// Policies are Quay's tag policies of organizations and repositories:
// immutability (a matching tag cannot be moved or deleted once pushed)
// and auto-prune (old tags are deleted by count or age).
type Policies struct{ *core }

// Policies returns the tag policy store.
func (db *DB) Policies() Policies { return Policies{db.core} }

// Tag policy kinds.
const (
	PolicyImmutability = "immutability"
	PolicyAutoPrune    = "autoprune"
)

// Auto-prune methods (Quay's).
const (
	PruneByCount = "number_of_tags"
	PruneByAge   = "creation_date"
)

// ErrPolicyNotFound is returned for an unknown policy.
var ErrPolicyNotFound = fmt.Errorf("policy %w", ErrNotFound)

// TagPolicy is an immutability or auto-prune policy of an organization
// (Repository empty) or of one repository.
type TagPolicy struct {
	UUID       string
	Kind       string
	Namespace  string
	Repository string
	// Method and Value (auto-prune): number_of_tags with a count, or
	// creation_date with an age ("7d", "2w", "24h").
	Method string
	Value  string
	// TagPattern is a regular expression (RE2) the policy applies to
	// tags that match it (TagPatternMatches) or that do not; empty: all.
	// An immutability policy's pattern matches from the start of the
	// tag, an auto-prune policy's anywhere in it (compilePattern).
	TagPattern        string
	TagPatternMatches bool
	CreatedAt         time.Time
	// re is TagPattern compiled (compilePattern), by repoPolicies: a
	// policy applies to every tag a push or a pruning pass touches, and
	// compiling it for each dominated that work.
	re *regexp.Regexp
}

// MaxTagPoliciesPerScope bounds the policies of one kind an organization
// or a repository may have.
const MaxTagPoliciesPerScope = 20

// ErrTooManyPolicies refuses a policy past MaxTagPoliciesPerScope.
var ErrTooManyPolicies = errors.New("too many policies")

// applies reports whether the policy covers a tag.
func (p TagPolicy) applies(tag string) bool {
	if p.TagPattern == "" {
		return true
	}
	re := p.re
	if re == nil {
		var err error
		if re, err = compilePattern(p.Kind, p.TagPattern); err != nil {
			return false // validated when saved
		}
	}
	return re.MatchString(tag) == p.TagPatternMatches
}

// ParseAge reads an auto-prune or expiration age the way Quay writes
// them: a number and a unit among s, m, h, d, w ("7d", "2w", "24h").
func ParseAge(s string) (time.Duration, error) {
	if len(s) < 2 {
		return 0, fmt.Errorf("invalid age %q: want a number and a unit (s, m, h, d, w), e.g. 7d", s)
	}
	n, err := strconv.ParseInt(s[:len(s)-1], 10, 64)
	unit := map[byte]time.Duration{'s': time.Second, 'm': time.Minute, 'h': time.Hour, 'd': 24 * time.Hour, 'w': 7 * 24 * time.Hour}[s[len(s)-1]]
	if err != nil || n <= 0 || unit == 0 || n > int64((100*365*24*time.Hour)/unit) {
		return 0, fmt.Errorf("invalid age %q: want a positive number and a unit (s, m, h, d, w), e.g. 7d", s)
	}
	return time.Duration(n) * unit, nil
}

// CreateTagPolicy stores a policy and returns it with its UUID. The
// namespace (and repository, if named) must exist. An immutability
// policy's pattern is trimmed and checked (normalize, ErrInvalidPolicy),
// and must be the only one of its scope (ErrDuplicatePolicy).
func (db Policies) CreateTagPolicy(ctx context.Context, p TagPolicy) (TagPolicy, error) {
	if err := p.normalize(true); err != nil {
		return p, err
	}
	p.UUID, p.CreatedAt = uuid.NewString(), db.nowTime()
	scope := p.Namespace
	if p.Repository != "" {
		scope = p.Repository
	}
	err := db.tx(ctx, func(tx *sql.Tx) error {
		if err := db.lockTagPolicies(ctx, tx, scope, true); err != nil {
			return err
		}
		nsID, repoID, err := db.policyScope(ctx, tx, p.Namespace, p.Repository)
		if err != nil {
			return err
		}
		// At most MaxTagPoliciesPerScope of a kind per organization or
		// repository: each applies to every tag a push or a pass touches.
		scope := "p.repository_id IS NULL"
		args := []any{p.Kind, nsID}
		if repoID != nil {
			scope, args = "p.repository_id = ?", append(args, repoID)
		}
		var n int
		if err := tx.QueryRowContext(ctx, db.q(`SELECT COUNT(*) FROM tag_policies p WHERE p.kind = ? AND p.namespace_id = ? AND `+scope), args...).Scan(&n); err != nil {
			return fmt.Errorf("count policies: %w", err)
		}
		if n >= MaxTagPoliciesPerScope {
			return fmt.Errorf("%w: %d %s policies already", ErrTooManyPolicies, n, p.Kind)
		}
		if err := db.duplicatePattern(ctx, tx, p, nsID, repoID); err != nil {
			return err
		}
		if err := db.insertTagPolicy(ctx, tx, p, nsID, repoID); err != nil {
			return err
		}
		return db.clearImmutableExpirations(ctx, tx, p, nsID, repoID)
	})
	return p, err
}

// insertTagPolicy stores p under the namespace and repository (nil: the
// organization's policy) that policyScope found. One deleted since (its
// row was not locked, or was looked up elsewhere) is not found
// (ErrRepositoryNotFound, ErrNamespaceNotFound), not the foreign key's
// refusal.
func (db *core) insertTagPolicy(ctx context.Context, tx *sql.Tx, p TagPolicy, nsID int64, repoID any) error {
	_, err := tx.ExecContext(ctx, db.q(`INSERT INTO tag_policies (uuid, kind, namespace_id, repository_id, method, value, tag_pattern, tag_pattern_matches, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`), p.UUID, p.Kind, nsID, repoID, p.Method, p.Value, p.TagPattern, boolInt(p.TagPatternMatches), p.CreatedAt.UnixMicro())
	if foreignKeyViolation(err) {
		if repoID != nil {
			return fmt.Errorf("%s: %w", p.Repository, ErrRepositoryNotFound)
		}
		return fmt.Errorf("%s: %w", p.Namespace, ErrNamespaceNotFound)
	}
	if err != nil {
		return fmt.Errorf("store policy: %w", err)
	}
	return nil
}

// tagPolicyLockClass is the first key of the PostgreSQL advisory lock
// that serializes, per namespace, the changes of tag policies with the
// expirations set on the namespace's tags. An expiration is set after
// the immutability policies are read (SetTagExpiration, expireFromLabel),
// and a policy clears the expirations of the tags it covers
// (clearImmutableExpirations) after it reads them: without a lock both
// hold, each read missed the other's write and the tag ended immutable
// and expiring. Setting an expiration takes it shared, before any tag's
// row; changing a policy takes it exclusive, first: whichever comes
// second sees what the first committed (READ COMMITTED reads anew at
// every statement). SQLite serializes writers.
const tagPolicyLockClass = 0x706f6c69 // "poli"

// lockTagPolicies takes the tag policy lock of the namespace of scope (a
// repository, or a namespace), shared or exclusive.
func (db *core) lockTagPolicies(ctx context.Context, tx *sql.Tx, scope string, exclusive bool) error {
	if db.dialect != postgres {
		return nil
	}
	ns, _, _ := strings.Cut(scope, "/")
	fn := "pg_advisory_xact_lock_shared"
	if exclusive {
		fn = "pg_advisory_xact_lock"
	}
	if _, err := tx.ExecContext(ctx, "SELECT "+fn+"($1, hashtext($2))", tagPolicyLockClass, ns); err != nil {
		return fmt.Errorf("lock tag policies: %w", err)
	}
	return nil
}

// policyScope looks up the namespace and repository (empty: nil) of a
// policy to create. On PostgreSQL their rows are held FOR KEY SHARE, as
// the policy's foreign keys will hold them: a delete of either waits for
// the policy (and then deletes it with them), or committed first and is
// not found here.
func (db *core) policyScope(ctx context.Context, tx *sql.Tx, namespace, repo string) (int64, any, error) {
	lock := ""
	if db.dialect == postgres {
		lock = " FOR KEY SHARE"
	}
	var nsID int64
	err := tx.QueryRowContext(ctx, db.q("SELECT id FROM namespaces WHERE name = ?"+lock), namespace).Scan(&nsID)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil, ErrNamespaceNotFound
	}
	if err != nil {
		return 0, nil, fmt.Errorf("look up namespace: %w", err)
	}
	if repo == "" {
		return nsID, nil, nil
	}
	var id int64
	err = tx.QueryRowContext(ctx, db.q("SELECT id FROM repositories WHERE name = ?"+lock), repo).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil, ErrRepositoryNotFound
	}
	if err != nil {
		return 0, nil, fmt.Errorf("look up repository: %w", err)
	}
	return nsID, id, nil
}

const policyColumns = `p.uuid, p.kind, n.name, COALESCE(r.name, ''), p.method, p.value, p.tag_pattern, p.tag_pattern_matches, p.created_at`

func scanPolicy(row interface{ Scan(...any) error }) (TagPolicy, error) {
	var p TagPolicy
	var matches int
	var created int64
	if err := row.Scan(&p.UUID, &p.Kind, &p.Namespace, &p.Repository, &p.Method, &p.Value, &p.TagPattern, &matches, &created); err != nil {
		return TagPolicy{}, err
	}
	p.TagPatternMatches, p.CreatedAt = matches == 1, fromMicros(created)
	return p, nil
}

// TagPolicies lists the policies of a kind set on an organization
// (repo empty) or on one repository, oldest first.
func (db Policies) TagPolicies(ctx context.Context, kind, namespace, repo string) ([]TagPolicy, error) {
	query := `SELECT ` + policyColumns + ` FROM tag_policies p JOIN namespaces n ON n.id = p.namespace_id
		LEFT JOIN repositories r ON r.id = p.repository_id WHERE p.kind = ? AND n.name = ?`
	args := []any{kind, namespace}
	if repo == "" {
		query += " AND p.repository_id IS NULL"
	} else {
		query += " AND r.name = ?"
		args = append(args, repo)
	}
	return db.listPolicies(ctx, db.read, query+" ORDER BY p.id", args...)
}

func (db *core) listPolicies(ctx context.Context, q querier, query string, args ...any) ([]TagPolicy, error) {
	rows, err := q.QueryContext(ctx, db.q(query), args...)
	if err != nil {
		return nil, fmt.Errorf("list policies: %w", err)
	}
	defer rows.Close()
	var out []TagPolicy
	for rows.Next() {
		p, err := scanPolicy(rows)
		if err != nil {
			return nil, fmt.Errorf("list policies: %w", err)
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// TagPolicy returns one policy by UUID, of a kind and scope.
func (db Policies) TagPolicy(ctx context.Context, kind, namespace, repo, id string) (TagPolicy, error) {
	ps, err := db.TagPolicies(ctx, kind, namespace, repo)
	if err != nil {
		return TagPolicy{}, err
	}
	for _, p := range ps {
		if p.UUID == id {
			return p, nil
		}
	}
	return TagPolicy{}, ErrPolicyNotFound
}

// UpdateTagPolicy replaces a policy's method, value and pattern; an
// immutability policy's pattern is checked as CreateTagPolicy checks it.
func (db Policies) UpdateTagPolicy(ctx context.Context, p TagPolicy) error {
	if err := p.normalize(false); err != nil {
		return err
	}
	return db.tx(ctx, func(tx *sql.Tx) error {
		var nsID int64
		var repoID sql.NullInt64
		var scope, stored string
		err := tx.QueryRowContext(ctx, db.q(`SELECT p.namespace_id, p.repository_id, COALESCE(r.name, n.name), p.tag_pattern FROM tag_policies p
			JOIN namespaces n ON n.id = p.namespace_id LEFT JOIN repositories r ON r.id = p.repository_id
			WHERE p.uuid = ? AND p.kind = ?`), p.UUID, p.Kind).Scan(&nsID, &repoID, &scope, &stored)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrPolicyNotFound
		}
		if err != nil {
			return fmt.Errorf("read policy: %w", err)
		}
		if p.TagPattern != stored {
			// A pattern sent back as stored (one the upgrade to schema 37
			// rewrote, or one stored before the limit) is not checked
			// again.
			if err := p.checkLength(); err != nil {
				return err
			}
		}
		if err := db.lockTagPolicies(ctx, tx, scope, true); err != nil {
			return err
		}
		var repo any
		if repoID.Valid {
			repo = repoID.Int64
		}
		if err := db.duplicatePattern(ctx, tx, p, nsID, repo); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, db.q(`UPDATE tag_policies SET method = ?, value = ?, tag_pattern = ?, tag_pattern_matches = ? WHERE uuid = ? AND kind = ?`),
			p.Method, p.Value, p.TagPattern, boolInt(p.TagPatternMatches), p.UUID, p.Kind); err != nil {
			return fmt.Errorf("update policy: %w", err)
		}
		return db.clearImmutableExpirations(ctx, tx, p, nsID, repo)
	})
}

// DeleteTagPolicy removes a policy.
func (db Policies) DeleteTagPolicy(ctx context.Context, kind, id string) error {
	res, err := db.write.ExecContext(ctx, db.q(`DELETE FROM tag_policies WHERE uuid = ? AND kind = ?`), id, kind)
	if err != nil {
		return fmt.Errorf("delete policy: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrPolicyNotFound
	}
	return nil
}

// repoPolicies are the policies of a kind that apply to a repository:
// its organization's and its own.
func (db *core) repoPolicies(ctx context.Context, q querier, kind string, repoID int64) ([]TagPolicy, error) {
	ps, err := db.listPolicies(ctx, q, `SELECT `+policyColumns+` FROM tag_policies p JOIN namespaces n ON n.id = p.namespace_id
		LEFT JOIN repositories r ON r.id = p.repository_id
		WHERE p.kind = ? AND (p.repository_id = ? OR p.repository_id IS NULL AND
			(SELECT substr(name, 1, length(n.name) + 1) FROM repositories WHERE id = ?) = n.name || '/')
		ORDER BY p.id`, kind, repoID, repoID)
	for i := range ps {
		if ps[i].TagPattern != "" {
			ps[i].re, _ = compilePattern(kind, ps[i].TagPattern) // validated when saved; nil: applies compiles (and refuses) it
		}
	}
	return ps, err
}

// deleteGeneratedReferrers deletes, in the transaction deleting their
// subject d, the referrers stored to go with it (deleted_with_subject:
// the scanner's SBOM), except those a tag points at or a manifest of the
// repository lists: they stay, as any tagged or listed manifest does
// (before, a tagged one's delete broke the tag's foreign key, and the
// subject could never be deleted). Untagged and unlisted later, with
// their subject gone, garbage collection takes them. On PostgreSQL they
// are locked first: a tag set or an index push that names one holds it
// until it commits, and the tags and parents read in a later statement
// see it.
func (db *core) deleteGeneratedReferrers(ctx context.Context, tx *sql.Tx, repoID int64, repo string, d digest.Digest) error {
	lock := ""
	if db.dialect == postgres {
		lock = " FOR UPDATE"
	}
	rows, err := tx.QueryContext(ctx, db.q("SELECT digest FROM manifests WHERE repository_id = ? AND subject = ? AND deleted_with_subject = 1 ORDER BY digest"+lock),
		repoID, d.String())
	if err != nil {
		return fmt.Errorf("list referrers deleted with their subject: %w", err)
	}
	generated, err := scanStrings(rows)
	if err != nil {
		return fmt.Errorf("list referrers deleted with their subject: %w", err)
	}
	for _, g := range generated {
		var kept int
		if err := tx.QueryRowContext(ctx, db.q(`SELECT
			(SELECT COUNT(*) FROM tags WHERE repository_id = ? AND manifest_digest = ?) +
			(SELECT COUNT(*) FROM manifest_references WHERE repository_id = ? AND ref_digest = ?)`),
			repoID, g, repoID, g).Scan(&kept); err != nil {
			return fmt.Errorf("read the tags of a generated referrer: %w", err)
		}
		if kept > 0 {
			continue
		}
		// Its links were dated with its subject's (DeleteManifest): this
		// waits only for those of a referrer stored since.
		if err := db.restartLinkCap(ctx, tx, repoID, g, false, true); err != nil {
			return err
		}
		if err := db.quotaUnref(ctx, tx, repoID, repo, g); err != nil { // namespace quota
			return err
		}
		for _, stmt := range []string{"DELETE FROM manifest_references WHERE repository_id = ? AND manifest_digest = ?",
			"DELETE FROM manifests WHERE repository_id = ? AND digest = ?"} {
			if _, err := tx.ExecContext(ctx, db.q(stmt), repoID, g); err != nil {
				return fmt.Errorf("delete generated referrer: %w", err)
			}
		}
	}
	return nil
}
