package meta

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Auto-prune: Quay's policies applied to a repository's tags by each
// garbage-collection pass.

// PruneRepository applies a repository's auto-prune policies (its
// organization's and its own) at now: per policy, the tags it covers
// beyond the newest Value (number_of_tags) or older than Value
// (creation_date, by when the tag last moved) are deleted, immutable tags
// excepted, each with its tag_deleted event ("pruned": true); cosign's
// tags follow the image they describe (cosignDoomed). It returns the tags
// deleted; nothing for a repository deleted since it was listed.
func (db Manifests) PruneRepository(ctx context.Context, repo string, now time.Time, actor string) ([]string, error) {
	var deleted []string
	err := db.tx(ctx, func(tx *sql.Tx) error {
		deleted = nil
		repoID, err := db.repoID(ctx, tx, repo)
		if errors.Is(err, ErrRepositoryNotFound) {
			return nil // deleted since it was listed: nothing left to prune
		}
		if err != nil {
			return err
		}
		policies, err := db.repoPolicies(ctx, tx, PolicyAutoPrune, repoID)
		if err != nil || len(policies) == 0 {
			return err
		}
		// Expired tags are gone already (ExpireTag deletes their rows).
		rows, err := tx.QueryContext(ctx, db.q("SELECT name, manifest_digest, updated_at FROM tags WHERE repository_id = ? AND "+liveTag("")+" ORDER BY updated_at DESC, name"),
			repoID, now.UnixMicro())
		if err != nil {
			return fmt.Errorf("list tags: %w", err)
		}
		var tags []tagRow
		for rows.Next() {
			var t tagRow
			if err := rows.Scan(&t.name, &t.digest, &t.at); err != nil {
				rows.Close()
				return fmt.Errorf("list tags: %w", err)
			}
			tags = append(tags, t)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("list tags: %w", err)
		}
		// Immutable tags are never pruned, and do not count among the
		// newest N a policy keeps: a gated repository's immutable
		// rollback tags (one per promotion) would otherwise use up every
		// place, and its mutable tags would all go.
		// (What immutable decides for one tag, for all of them at once: the
		// tags made immutable by name, then the policies, read once.)
		immutable := map[string]bool{}
		pinned, err := tx.QueryContext(ctx, db.q("SELECT name FROM immutable_tags WHERE repository_id = ?"), repoID)
		if err != nil {
			return fmt.Errorf("read immutable tags: %w", err)
		}
		pinnedNames, err := scanStrings(pinned)
		if err != nil {
			return fmt.Errorf("read immutable tags: %w", err)
		}
		for _, n := range pinnedNames {
			immutable[n] = true
		}
		immPolicies, err := db.repoPolicies(ctx, tx, PolicyImmutability, repoID)
		if err != nil {
			return err
		}
		for _, t := range tags {
			for _, p := range immPolicies {
				if p.applies(t.name) {
					immutable[t.name] = true
					break
				}
			}
		}
		// Cosign's signature, attestation and SBOM tags (sha256-<hex>.sig,
		// .att, .sbom) follow the image they describe: never counted
		// among the newest N nor judged by age, kept while it stays
		// tagged, pruned with it (cosignDoomed).
		var images, cosign []tagRow
		for _, t := range tags {
			if isCosignTag(t.name) {
				cosign = append(cosign, t)
			} else {
				images = append(images, t)
			}
		}
		at := map[string]int64{}
		doomed := map[string]string{}
		for _, p := range policies {
			kept := 0
			for _, t := range images {
				if !p.applies(t.name) || immutable[t.name] {
					continue
				}
				switch p.Method {
				case PruneByCount:
					n, err := strconv.Atoi(p.Value)
					if err != nil {
						continue
					}
					if kept < n {
						kept++
						continue
					}
				case PruneByAge:
					age, err := ParseAge(p.Value)
					if err != nil || fromMicros(t.at).After(now.Add(-age)) {
						continue
					}
				default:
					continue
				}
				doomed[t.name], at[t.name] = t.digest, t.at
			}
		}
		if len(cosign) > 0 {
			// What stays tagged after the pass, and what it prunes.
			stays, goes := map[string]bool{}, map[string]bool{}
			for _, t := range images {
				if _, ok := doomed[t.name]; ok {
					goes[t.digest] = true
				} else {
					stays[t.digest] = true
				}
			}
			for _, t := range cosign {
				if immutable[t.name] {
					continue
				}
				prune, err := db.cosignDoomed(ctx, tx, repoID, t, now, policies, stays, goes)
				if err != nil {
					return err
				}
				if prune {
					doomed[t.name], at[t.name] = t.digest, t.at
				}
			}
		}
		names := make([]string, 0, len(doomed))
		for n := range doomed {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			// Only the tag as it was read: on PostgreSQL a push may have
			// moved it since (the read takes no lock), and the image just
			// pushed is not what the policy chose; another replica may
			// have pruned it already.
			res, err := tx.ExecContext(ctx, db.q("DELETE FROM tags WHERE repository_id = ? AND name = ? AND manifest_digest = ? AND updated_at = ?"),
				repoID, n, doomed[n], at[n])
			if err != nil {
				return fmt.Errorf("prune tag: %w", err)
			}
			if k, err := res.RowsAffected(); err != nil {
				return fmt.Errorf("prune tag: %w", err)
			} else if k == 0 {
				continue
			}
			if err := db.endTagHistory(ctx, tx, repoID, n); err != nil {
				return err
			}
			if err := db.appendEvent(ctx, tx, Event{Kind: EventTagDeleted, Repository: repo, Actor: actor,
				Data: mustJSON(map[string]any{"tag": n, "digest": doomed[n], "pruned": true})}); err != nil {
				return err
			}
			deleted = append(deleted, n)
		}
		return nil
	})
	return deleted, err
}

// tagRow is a tag an auto-prune pass reads: where it points, since when.
type tagRow struct {
	name, digest string
	at           int64
}

// cosignDoomed reports whether an auto-prune pass deletes a cosign tag
// (sha256-<hex>.sig, .att, .sbom), given the digests that stay tagged
// after it (stays) and those whose tags it deletes (goes). The tag stays
// while its subject does: tagged, an image of a tagged index, or a gate's
// live candidate (the signature a pipeline made of it). Otherwise it is
// deleted with its subject's tag; its subject untagged already, it is
// deleted if a policy covers its name (number_of_tags: it takes no place;
// creation_date: if older than the policy's age).
func (db *core) cosignDoomed(ctx context.Context, tx *sql.Tx, repoID int64, t tagRow, now time.Time, policies []TagPolicy, stays, goes map[string]bool) (bool, error) {
	hex, _, _ := strings.Cut(strings.TrimPrefix(t.name, "sha256-"), ".")
	subject := "sha256:" + hex
	if stays[subject] {
		return false, nil
	}
	rows, err := tx.QueryContext(ctx, db.q("SELECT manifest_digest FROM manifest_references WHERE repository_id = ? AND ref_digest = ? AND is_manifest = 1"),
		repoID, subject)
	if err != nil {
		return false, fmt.Errorf("read the indexes of a signed image: %w", err)
	}
	parents, err := scanStrings(rows)
	if err != nil {
		return false, fmt.Errorf("read the indexes of a signed image: %w", err)
	}
	withPruned := goes[subject]
	for _, p := range parents {
		if stays[p] {
			return false, nil
		}
		withPruned = withPruned || goes[p]
	}
	var live int
	if err := tx.QueryRowContext(ctx, db.q(`SELECT COUNT(*) FROM gate_candidates WHERE repository_id = ? AND state IN ('pending', 'blocked') AND (digest = ? OR digest IN
		(SELECT manifest_digest FROM manifest_references WHERE repository_id = ? AND ref_digest = ? AND is_manifest = 1))`),
		repoID, subject, repoID, subject).Scan(&live); err != nil {
		return false, fmt.Errorf("read the candidates of a signed image: %w", err)
	}
	if live > 0 {
		return false, nil
	}
	if withPruned {
		return true, nil
	}
	for _, p := range policies {
		if !p.applies(t.name) {
			continue
		}
		switch p.Method {
		case PruneByCount:
			return true, nil
		case PruneByAge:
			if age, err := ParseAge(p.Value); err == nil && !fromMicros(t.at).After(now.Add(-age)) {
				return true, nil
			}
		}
	}
	return false, nil
}

// PrunedRepositories lists the repositories some auto-prune policy
// covers (their organization's or their own).
func (db Manifests) PrunedRepositories(ctx context.Context) ([]string, error) {
	rows, err := db.read.QueryContext(ctx, db.q(`SELECT r.name FROM repositories r WHERE EXISTS (SELECT 1 FROM tag_policies p JOIN namespaces n ON n.id = p.namespace_id
		WHERE p.kind = 'autoprune' AND (p.repository_id = r.id OR p.repository_id IS NULL AND substr(r.name, 1, length(n.name) + 1) = n.name || '/')) ORDER BY r.name`))
	if err != nil {
		return nil, fmt.Errorf("list pruned repositories: %w", err)
	}
	return scanStringsClose(rows)
}

func scanStringsClose(rows *sql.Rows) ([]string, error) {
	out, err := scanStrings(rows)
	if err != nil {
		return nil, fmt.Errorf("scan: %w", err)
	}
	return out, nil
}
