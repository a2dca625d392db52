package meta

import (
	"context"
	"database/sql"
	"fmt"
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
