package meta

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
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
// (creation_date, by when the tag was last pushed or moved) are deleted,
// immutable tags excepted, each with its tag_deleted event ("pruned":
// true); cosign's tags follow the image they describe (cosignDoomed). The
// tags are chosen with one read and deleted DefaultPruneBatch per
// transaction (AutoPrune.PruneRepository). It returns the tags deleted;
// nothing for a repository deleted since it was listed, or not in state
// NORMAL (a READ_ONLY or MIRROR repository is not pruned).
func (db Manifests) PruneRepository(ctx context.Context, repo string, now time.Time, actor string) ([]string, error) {
	return db.WithPruneBatch(DefaultPruneBatch).PruneRepository(ctx, repo, now, actor)
}

// DefaultPruneBatch is how many tags one transaction of an auto-prune
// pass deletes: three statements each (the tag, its event and audit
// entry) and one per 200 for their history, so that SQLite's one writer
// is held for a moment at a time, not for the whole of a repository with
// 100,000 tags to prune.
const DefaultPruneBatch = 500

// AutoPrune is an auto-prune pass that deletes a batch of tags per
// transaction (Manifests.WithPruneBatch).
type AutoPrune struct {
	m     Manifests
	batch int
	// between, if set, is called after each batch the pass commits but
	// the last (tests).
	between func()
}

// WithPruneBatch returns the auto-prune pass that deletes n tags per
// transaction (n <= 0: DefaultPruneBatch).
func (db Manifests) WithPruneBatch(n int) AutoPrune {
	if n <= 0 {
		n = DefaultPruneBatch
	}
	return AutoPrune{m: db, batch: n}
}

// PruneRepository is Manifests.PruneRepository, p's batch of tags per
// transaction. What to delete is read once (prunePlan); each batch then
// takes the tag policies' lock, reads the immutability policies and the
// tags immutable by name again, keeps the tags made immutable since (and
// the cosign tags of their images), and deletes each other tag only as it
// was read, so a tag a push made, moved or pushed again since stays.
// Between batches the pass holds nothing: pushes and policy changes of
// the repository go on. An auto-prune policy of the repository created,
// changed or deleted since the read stops the pass (the next one reads
// them again), as does a repository no longer in state NORMAL
// (prunable). A pass that fails or is cancelled keeps the batches it
// committed and returns them with its error.
func (p AutoPrune) PruneRepository(ctx context.Context, repo string, now time.Time, actor string) ([]string, error) {
	db := p.m
	plan, err := db.prunePlan(ctx, repo, now)
	if err != nil || len(plan.doomed) == 0 {
		return nil, err
	}
	var deleted []string
	spared := map[string]bool{} // digests of chosen image tags kept as immutable
	for start := 0; start < len(plan.doomed); start += p.batch {
		if start > 0 && p.between != nil {
			p.between()
		}
		if err := ctx.Err(); err != nil {
			return deleted, fmt.Errorf("prune %s: %w", repo, context.Cause(ctx))
		}
		part := plan.doomed[start:min(start+p.batch, len(plan.doomed))]
		var gone []string
		stop := false
		err := db.tx(ctx, func(tx *sql.Tx) error {
			var err error
			gone, stop, err = db.pruneBatch(ctx, tx, plan, part, spared, actor)
			return err
		})
		if err != nil {
			return deleted, err
		}
		deleted = append(deleted, gone...)
		if stop {
			break
		}
	}
	return deleted, nil
}

// prunePlan is what an auto-prune pass read of a repository: its
// auto-prune policies, and the tags they delete, images first (in name
// order), then cosign's tags (cosignDoomed decided them by what happens
// to the images).
type prunePlan struct {
	repo     string
	repoID   int64
	policies []TagPolicy
	doomed   []doomedTag
}

// doomedTag is a tag an auto-prune pass deletes. A cosign tag deleted
// with its image's tag lists in follows the digests it goes with (its
// subject, the indexes holding it): it stays if a tag of one is kept.
type doomedTag struct {
	tagRow
	follows []string
}

// prunePlan reads, in one read-only transaction, the tags a pass of the
// repository's auto-prune policies deletes at now; an empty plan for a
// repository without policies or deleted since it was listed.
func (db Manifests) prunePlan(ctx context.Context, repo string, now time.Time) (prunePlan, error) {
	plan := prunePlan{repo: repo}
	var opts *sql.TxOptions
	if db.dialect == postgres {
		opts = &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true}
	}
	tx, err := db.read.BeginTx(ctx, opts)
	if err != nil {
		return plan, fmt.Errorf("read tags to prune: %w", err)
	}
	defer tx.Rollback()
	plan.repoID, err = db.repoID(ctx, tx, repo)
	if errors.Is(err, ErrRepositoryNotFound) {
		return plan, nil // deleted since it was listed: nothing left to prune
	}
	if err != nil {
		return plan, err
	}
	if normal, err := db.prunable(ctx, tx, plan.repoID, false); err != nil || !normal {
		return plan, err // READ_ONLY or MIRROR since it was listed: not pruned
	}
	plan.policies, err = db.repoPolicies(ctx, tx, PolicyAutoPrune, plan.repoID)
	if err != nil || len(plan.policies) == 0 {
		return plan, err
	}
	// Expired tags are gone already (ExpireTag deletes their rows).
	rows, err := tx.QueryContext(ctx, db.q("SELECT name, manifest_digest, updated_at FROM tags WHERE repository_id = ? AND "+liveTag("")+" ORDER BY updated_at DESC, name"),
		plan.repoID, now.UnixMicro())
	if err != nil {
		return plan, fmt.Errorf("list tags: %w", err)
	}
	var tags []tagRow
	for rows.Next() {
		var t tagRow
		if err := rows.Scan(&t.name, &t.digest, &t.at); err != nil {
			rows.Close()
			return plan, fmt.Errorf("list tags: %w", err)
		}
		tags = append(tags, t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return plan, fmt.Errorf("list tags: %w", err)
	}
	// Immutable tags are never pruned, and do not count among the
	// newest N a policy keeps: a gated repository's immutable rollback
	// tags (one per promotion) would otherwise use up every place, and
	// its mutable tags would all go.
	names := make([]string, len(tags))
	for i, t := range tags {
		names[i] = t.name
	}
	immutable, err := db.immutableAmong(ctx, tx, plan.repoID, names)
	if err != nil {
		return plan, err
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
	doomed := map[string]tagRow{}
	for _, p := range plan.policies {
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
			doomed[t.name] = t
		}
	}
	for _, t := range images {
		if _, ok := doomed[t.name]; ok {
			plan.doomed = append(plan.doomed, doomedTag{tagRow: t})
		}
	}
	sort.Slice(plan.doomed, func(i, j int) bool { return plan.doomed[i].name < plan.doomed[j].name })
	if len(cosign) == 0 {
		return plan, nil
	}
	// What stays tagged after the pass, and what it prunes.
	stays, goes := map[string]bool{}, map[string]bool{}
	for _, t := range images {
		if _, ok := doomed[t.name]; ok {
			goes[t.digest] = true
		} else {
			stays[t.digest] = true
		}
	}
	var signatures []doomedTag
	for _, t := range cosign {
		if immutable[t.name] {
			continue
		}
		prune, follows, err := db.cosignDoomed(ctx, tx, plan.repoID, t, now, plan.policies, stays, goes)
		if err != nil {
			return plan, err
		}
		if prune {
			signatures = append(signatures, doomedTag{tagRow: t, follows: follows})
		}
	}
	sort.Slice(signatures, func(i, j int) bool { return signatures[i].name < signatures[j].name })
	plan.doomed = append(plan.doomed, signatures...)
	return plan, nil
}

// immutableAmong returns which of a repository's tags are immutable, by
// name (immutable_tags) or by an immutability policy (read once). The
// tags immutable by name are looked up by name for a batch, and all read
// at once for more (a whole repository's tags).
func (db *core) immutableAmong(ctx context.Context, tx *sql.Tx, repoID int64, tags []string) (map[string]bool, error) {
	immutable := map[string]bool{}
	var pinned []string
	var err error
	if len(tags) > refBatch {
		var rows *sql.Rows
		rows, err = tx.QueryContext(ctx, db.q("SELECT name FROM immutable_tags WHERE repository_id = ?"), repoID)
		if err == nil {
			pinned, err = scanStrings(rows)
		}
	} else if len(tags) > 0 {
		var rows *sql.Rows
		rows, err = tx.QueryContext(ctx, db.q("SELECT name FROM immutable_tags WHERE repository_id = ? AND name IN ("+placeholders(len(tags))+")"),
			append([]any{repoID}, anySlice(tags)...)...)
		if err == nil {
			pinned, err = scanStrings(rows)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("read immutable tags: %w", err)
	}
	for _, n := range pinned {
		immutable[n] = true
	}
	policies, err := db.repoPolicies(ctx, tx, PolicyImmutability, repoID)
	if err != nil {
		return nil, err
	}
	for _, t := range tags {
		for _, p := range policies {
			if p.applies(t) {
				immutable[t] = true
				break
			}
		}
	}
	return immutable, nil
}

// repoStateNormal is the state of a repository that takes every write
// its permissions allow (auth.StateNormal).
const repoStateNormal = "NORMAL"

// prunable reports whether auto-prune may delete tags of a repository:
// only in state NORMAL, as Quay's auto-prune worker. A READ_ONLY
// repository refuses every write, a pass's too; a MIRROR repository's
// tags are its mirror's (pruned, they would be copied back at the next
// sync, every cycle). With lock, on PostgreSQL, the row is held FOR
// SHARE until the caller's transaction ends: a state change waits for
// the batch, or committed first and is read here. A repository deleted
// since is not prunable.
func (db *core) prunable(ctx context.Context, tx *sql.Tx, repoID int64, lock bool) (bool, error) {
	suffix := ""
	if lock && db.dialect == postgres {
		suffix = " FOR SHARE"
	}
	var state string
	err := tx.QueryRowContext(ctx, db.q("SELECT state FROM repositories WHERE id = ?"+suffix), repoID).Scan(&state)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read repository state: %w", err)
	}
	return state == repoStateNormal, nil
}

// pruneBatch deletes a batch of a plan's tags in the caller's
// transaction, each with its event, ends their history, and returns
// those it deleted. Under the tag policies' shared lock (a policy change
// waits, or committed first and is read here), it reads the repository's
// state and its auto-prune policies again, and reports stop, deleting
// nothing, if the repository is no longer NORMAL (prunable) or the
// policies are no longer those of the plan; then which tags of the batch are
// immutable now: they stay, their digests join spared, and a cosign tag
// that follows a spared digest stays too.
func (db *core) pruneBatch(ctx context.Context, tx *sql.Tx, plan prunePlan, part []doomedTag, spared map[string]bool, actor string) (deleted []string, stop bool, err error) {
	if err := db.lockTagPolicies(ctx, tx, plan.repo, false); err != nil {
		return nil, false, err
	}
	if normal, err := db.prunable(ctx, tx, plan.repoID, true); err != nil || !normal {
		return nil, !normal, err
	}
	policies, err := db.repoPolicies(ctx, tx, PolicyAutoPrune, plan.repoID)
	if err != nil {
		return nil, false, err
	}
	if !samePrunePolicies(policies, plan.policies) {
		return nil, true, nil
	}
	names := make([]string, len(part))
	for i, t := range part {
		names[i] = t.name
	}
	immutable, err := db.immutableAmong(ctx, tx, plan.repoID, names)
	if err != nil {
		return nil, false, err
	}
	for _, t := range part {
		if immutable[t.name] {
			if !isCosignTag(t.name) {
				spared[t.digest] = true
			}
			continue
		}
		if slices.ContainsFunc(t.follows, func(d string) bool { return spared[d] }) {
			continue
		}
		// A signature goes with its image's tags: not if one of them stays
		// after all (pushed again, or another tag pointed at the image,
		// since the plan; its batch came before this one).
		if len(t.follows) > 0 {
			var one int
			err := tx.QueryRowContext(ctx, db.q("SELECT 1 FROM tags WHERE repository_id = ? AND manifest_digest IN ("+placeholders(len(t.follows))+") LIMIT 1"),
				append([]any{plan.repoID}, anySlice(t.follows)...)...).Scan(&one)
			if err == nil {
				continue
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return nil, false, fmt.Errorf("prune tag: is its image still tagged: %w", err)
			}
		}
		// Only the tag as it was read: a push may have moved it, or
		// pushed its image again, since (the read takes no lock), and
		// another replica may have pruned it already.
		res, err := tx.ExecContext(ctx, db.q("DELETE FROM tags WHERE repository_id = ? AND name = ? AND manifest_digest = ? AND updated_at = ?"),
			plan.repoID, t.name, t.digest, t.at)
		if err != nil {
			return nil, false, fmt.Errorf("prune tag: %w", err)
		}
		if k, err := res.RowsAffected(); err != nil {
			return nil, false, fmt.Errorf("prune tag: %w", err)
		} else if k == 0 {
			continue
		}
		if err := db.appendEvent(ctx, tx, Event{Kind: EventTagDeleted, Repository: plan.repo, Actor: actor,
			Data: mustJSON(map[string]any{"tag": t.name, "digest": t.digest, "pruned": true})}); err != nil {
			return nil, false, err
		}
		deleted = append(deleted, t.name)
	}
	if err := db.endTagHistory(ctx, tx, plan.repoID, deleted...); err != nil {
		return nil, false, err
	}
	return deleted, false, nil
}

// samePrunePolicies reports whether two reads of a repository's
// auto-prune policies found the same policies, the same way.
func samePrunePolicies(a, b []TagPolicy) bool {
	return slices.EqualFunc(a, b, func(x, y TagPolicy) bool {
		return x.UUID == y.UUID && x.Method == y.Method && x.Value == y.Value && x.TagPattern == y.TagPattern && x.TagPatternMatches == y.TagPatternMatches
	})
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
// creation_date: if older than the policy's age). Deleted with its
// subject's tag, it returns the digests it goes with (the subject and the
// indexes holding it).
func (db *core) cosignDoomed(ctx context.Context, tx *sql.Tx, repoID int64, t tagRow, now time.Time, policies []TagPolicy, stays, goes map[string]bool) (bool, []string, error) {
	hex, _, _ := strings.Cut(strings.TrimPrefix(t.name, "sha256-"), ".")
	subject := "sha256:" + hex
	if stays[subject] {
		return false, nil, nil
	}
	rows, err := tx.QueryContext(ctx, db.q("SELECT manifest_digest FROM manifest_references WHERE repository_id = ? AND ref_digest = ? AND is_manifest = 1"),
		repoID, subject)
	if err != nil {
		return false, nil, fmt.Errorf("read the indexes of a signed image: %w", err)
	}
	parents, err := scanStrings(rows)
	if err != nil {
		return false, nil, fmt.Errorf("read the indexes of a signed image: %w", err)
	}
	withPruned := goes[subject]
	for _, p := range parents {
		if stays[p] {
			return false, nil, nil
		}
		withPruned = withPruned || goes[p]
	}
	var live int
	if err := tx.QueryRowContext(ctx, db.q(`SELECT COUNT(*) FROM gate_candidates WHERE repository_id = ? AND state IN ('pending', 'blocked') AND (digest = ? OR digest IN
		(SELECT manifest_digest FROM manifest_references WHERE repository_id = ? AND ref_digest = ? AND is_manifest = 1))`),
		repoID, subject, repoID, subject).Scan(&live); err != nil {
		return false, nil, fmt.Errorf("read the candidates of a signed image: %w", err)
	}
	if live > 0 {
		return false, nil, nil
	}
	if withPruned {
		return true, append([]string{subject}, parents...), nil
	}
	for _, p := range policies {
		if !p.applies(t.name) {
			continue
		}
		switch p.Method {
		case PruneByCount:
			return true, nil, nil
		case PruneByAge:
			if age, err := ParseAge(p.Value); err == nil && !fromMicros(t.at).After(now.Add(-age)) {
				return true, nil, nil
			}
		}
	}
	return false, nil, nil
}

// PrunedRepositories lists the repositories in state NORMAL that some
// auto-prune policy covers (their organization's or their own): a
// READ_ONLY or MIRROR repository is not pruned (prunable).
func (db Manifests) PrunedRepositories(ctx context.Context) ([]string, error) {
	rows, err := db.read.QueryContext(ctx, db.q(`SELECT r.name FROM repositories r WHERE r.state = ? AND EXISTS (SELECT 1 FROM tag_policies p JOIN namespaces n ON n.id = p.namespace_id
		WHERE p.kind = 'autoprune' AND (p.repository_id = r.id OR p.repository_id IS NULL AND substr(r.name, 1, length(n.name) + 1) = n.name || '/')) ORDER BY r.name`), repoStateNormal)
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
