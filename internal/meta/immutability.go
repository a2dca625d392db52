package meta

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"
)

// The immutability of tags: by name (a gate's rollback tags,
// immutable_tags) and by an organization's or repository's immutability
// policies (Quay's).

// immutable returns an *ImmutableTagError if the tag is immutable, by
// name or by a policy.
func (db *core) immutable(ctx context.Context, tx *sql.Tx, repoID int64, tag string) error {
	return db.firstImmutable(ctx, tx, repoID, []string{tag})
}

// firstImmutable is immutable for many tags of a repository at once (a
// manifest's, which a delete of the manifest deletes): the first, in
// order, that is immutable, by name or by policy, is an
// *ImmutableTagError. The tags immutable by name are read in batches and
// the policies once, whatever the count.
func (db *core) firstImmutable(ctx context.Context, tx *sql.Tx, repoID int64, tags []string) error {
	if len(tags) == 0 {
		return nil
	}
	reasons := map[string]string{}
	err := chunks(tags, func(part []string) error {
		rows, err := tx.QueryContext(ctx, db.q("SELECT name, reason FROM immutable_tags WHERE repository_id = ? AND name IN ("+placeholders(len(part))+")"),
			append([]any{repoID}, anySlice(part)...)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var name, reason string
			if err := rows.Scan(&name, &reason); err != nil {
				return err
			}
			reasons[name] = reason
		}
		return rows.Err()
	})
	if err != nil {
		return fmt.Errorf("read immutable tags: %w", err)
	}
	ps, err := db.repoPolicies(ctx, tx, PolicyImmutability, repoID)
	if err != nil {
		return err
	}
	for _, t := range tags {
		if reason, ok := reasons[t]; ok {
			return &ImmutableTagError{Tag: t, Reason: reason}
		}
		if err := immutableByPolicy(ps, t); err != nil {
			return err
		}
	}
	return nil
}

// ImmutableByPolicy is an *ImmutableTagError, as the store's refusals
// are, if one of the immutability policies ps covers tag: for a caller
// that read the policies of a repository (its organization's and its
// own, TagPolicies) to refuse a request before it changes anything.
func ImmutableByPolicy(ps []TagPolicy, tag string) error {
	return immutableByPolicy(ps, tag)
}

// immutableByPolicy is an *ImmutableTagError if one of the immutability
// policies covers tag.
func immutableByPolicy(ps []TagPolicy, tag string) error {
	for _, p := range ps {
		if p.applies(tag) {
			scope := "organization " + p.Namespace
			if p.Repository != "" {
				scope = "repository " + p.Repository
			}
			how := "every tag"
			if p.TagPattern != "" {
				how = fmt.Sprintf("tags matching %q", p.TagPattern)
				if !p.TagPatternMatches {
					how = fmt.Sprintf("tags not matching %q", p.TagPattern)
				}
			}
			return &ImmutableTagError{Tag: tag, Reason: fmt.Sprintf("immutability policy %s of %s: %s", p.UUID, scope, how)}
		}
	}
	return nil
}

// ErrInvalidPolicy refuses (wrapped, with the reason) a policy whose
// tagPattern Quay would refuse: white space only, or over
// MaxTagPatternLength characters.
var ErrInvalidPolicy = errors.New("invalid policy")

// ErrDuplicatePolicy refuses an immutability policy whose tagPattern
// another immutability policy of its scope (the organization's, or one
// repository's) has, as Quay does.
var ErrDuplicatePolicy = fmt.Errorf("an immutability policy with the same tagPattern %w", ErrExists)

// MaxTagPatternLength is the longest tagPattern, in characters, an
// immutability policy may have (Quay's limit).
const MaxTagPatternLength = 256

// compilePattern compiles a policy's tagPattern as its kind reads it, as
// Quay does. An immutability pattern matches from the start of the tag
// (Quay's regular expression match): "dev" covers dev-1 and devel, not
// feature-dev. An auto-prune pattern matches anywhere in the tag (Quay's
// database regular expression search): "dev" covers feature-dev too.
func compilePattern(kind, pattern string) (*regexp.Regexp, error) {
	if kind == PolicyImmutability {
		pattern = "^(?:" + pattern + ")"
	}
	return regexp.Compile(pattern)
}

// normalize trims an immutability policy's tagPattern of the white space
// around it and checks it as Quay does: not white space only, a regular
// expression, and, with length, at most MaxTagPatternLength characters
// (*ErrInvalidPolicy). An empty pattern (every tag) is left to the caller.
func (p *TagPolicy) normalize(length bool) error {
	if p.Kind != PolicyImmutability {
		return nil
	}
	trimmed := strings.TrimSpace(p.TagPattern)
	if trimmed == "" && p.TagPattern != "" {
		return fmt.Errorf("%w: tagPattern is white space only", ErrInvalidPolicy)
	}
	p.TagPattern = trimmed
	if length {
		if err := p.checkLength(); err != nil {
			return err
		}
	}
	if _, err := compilePattern(p.Kind, trimmed); err != nil {
		return fmt.Errorf("%w: tagPattern is not a regular expression: %w", ErrInvalidPolicy, err)
	}
	return nil
}

// checkLength refuses an immutability pattern over MaxTagPatternLength
// characters (*ErrInvalidPolicy).
func (p *TagPolicy) checkLength() error {
	if p.Kind == PolicyImmutability && utf8.RuneCountInString(p.TagPattern) > MaxTagPatternLength {
		return fmt.Errorf("%w: tagPattern is over %d characters", ErrInvalidPolicy, MaxTagPatternLength)
	}
	return nil
}

// duplicatePattern refuses (ErrDuplicatePolicy) an immutability policy
// whose tagPattern another immutability policy of its scope has: the
// organization's (repoID nil) or the repository's. The caller holds the
// tag policies' lock exclusive (on SQLite the one writer), so two
// policies of one pattern cannot both be stored.
func (db *core) duplicatePattern(ctx context.Context, tx *sql.Tx, p TagPolicy, nsID int64, repoID any) error {
	if p.Kind != PolicyImmutability {
		return nil
	}
	scope := "repository_id IS NULL"
	args := []any{p.Kind, nsID, p.TagPattern, p.UUID}
	if repoID != nil {
		scope, args = "repository_id = ?", append(args, repoID)
	}
	var one int
	err := tx.QueryRowContext(ctx, db.q(`SELECT 1 FROM tag_policies WHERE kind = ? AND namespace_id = ? AND tag_pattern = ? AND uuid <> ? AND `+scope+` LIMIT 1`), args...).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read policies of the pattern: %w", err)
	}
	return fmt.Errorf("%w: %q", ErrDuplicatePolicy, p.TagPattern)
}

// clearImmutableExpirations clears the expirations of the tags an
// immutability policy covers, in the transaction that creates or changes
// it: an immutable tag does not expire (SetTagExpiration refuses one),
// and reads would otherwise lose it when its expiration passed, until a
// pass cleared it (ExpireTag). A tag already past its expiration that no
// pass has deleted yet is kept too, as the pass would have kept it. The
// tags with an expiration are few, and found through tags_expires.
func (db *core) clearImmutableExpirations(ctx context.Context, tx *sql.Tx, p TagPolicy, nsID int64, repoID any) error {
	if p.Kind != PolicyImmutability {
		return nil
	}
	query := `SELECT t.repository_id, t.name FROM tags t JOIN repositories r ON r.id = t.repository_id JOIN namespaces n ON n.id = ?
		WHERE t.expires_at > 0 AND substr(r.name, 1, length(n.name) + 1) = n.name || '/'`
	args := []any{nsID}
	if repoID != nil {
		query += " AND t.repository_id = ?"
		args = append(args, repoID)
	}
	rows, err := tx.QueryContext(ctx, db.q(query), args...)
	if err != nil {
		return fmt.Errorf("read expiring tags: %w", err)
	}
	type covered struct {
		repoID int64
		name   string
	}
	var clear []covered
	for rows.Next() {
		var c covered
		if err := rows.Scan(&c.repoID, &c.name); err != nil {
			rows.Close()
			return fmt.Errorf("read expiring tags: %w", err)
		}
		if p.applies(c.name) {
			clear = append(clear, c)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read expiring tags: %w", err)
	}
	for _, c := range clear {
		if _, err := tx.ExecContext(ctx, db.q("UPDATE tags SET expires_at = 0 WHERE repository_id = ? AND name = ?"), c.repoID, c.name); err != nil {
			return fmt.Errorf("clear the expiration of an immutable tag: %w", err)
		}
	}
	return nil
}
