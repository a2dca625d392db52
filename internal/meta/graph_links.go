package meta

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/opencontainers/go-digest"
)

// Linking a base indexed after its dependents is bounded: at most
// maxRelinked images, among relinkScan images read that have its layers.
const (
	maxRelinked = 100
	relinkScan  = 1000
)

// linkDependents records an image indexed for the first time as a base
// of the images indexed before it that are built on its layers and have
// no base at its depth: the applications of a namespace pushed before
// their base, or built on upstream's image before the namespace's mirror
// or pull-through cache brought it. Only images of the image's own
// namespace: another tenant's copy stored after an image was built is not
// what that image was built on, a mirror's or a cache's no more than any
// (their admins choose the upstream). Each is recorded on the best copy
// at that depth for it (copyRank), its shallower bases one level further
// down. The level
// is by layers ("layers"); an image whose named base (annotation,
// provenance) is at that depth or above it is left as it is.
func (db *core) linkDependents(ctx context.Context, tx *sql.Tx, _ int64, img GraphImage) error {
	n := len(img.Chain)
	top := img.Chain[n-1:]
	args := append([]any{top[0].String(), n, relinkScan, n, n, n}, copyRankArgs(img.Repository)...)
	const scope = " AND substr(r.name, 1, ?) = ?"
	rows, err := tx.QueryContext(ctx, db.q(`SELECT c.repository_id, r.name, c.digest, r.gated
		FROM (SELECT repository_id, digest FROM graph_chains WHERE chain_id = ? AND depth = ? LIMIT CAST(? AS BIGINT)) AS c
		JOIN graph_images g ON g.repository_id = c.repository_id AND g.digest = c.digest
		JOIN repositories r ON r.id = c.repository_id
		WHERE g.layers > ? AND NOT EXISTS (SELECT 1 FROM graph_bases b WHERE b.repository_id = c.repository_id AND b.digest = c.digest
			AND (b.layers = ? OR b.method <> 'layers' AND b.layers <= ?))`+scope+` LIMIT CAST(? AS BIGINT)`), append(args, maxRelinked)...)
	if err != nil {
		return fmt.Errorf("find images built on a new base: %w", err)
	}
	type dependent struct {
		repoID int64
		repo   string
		d      digest.Digest
		gated  int
	}
	var deps []dependent
	for rows.Next() {
		var dep dependent
		var d string
		if err := rows.Scan(&dep.repoID, &dep.repo, &d, &dep.gated); err != nil {
			rows.Close()
			return err
		}
		dep.d = digest.Digest(d)
		deps = append(deps, dep)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	best := map[string]*GraphNode{} // per namespace; nil: no copy
	ts := db.now()
	for _, dep := range deps {
		b, ok := best[namespaceOf(dep.repo)]
		if !ok {
			nodes, err := db.bestWithChains(ctx, tx, dep.repo, top)
			if err != nil {
				return err
			}
			if len(nodes) > 0 {
				b = &nodes[0]
			}
			// None: the image is a gate's held manifest (nobody's base
			// until published), and no published copy is indexed.
			best[namespaceOf(dep.repo)] = b
		}
		if b == nil {
			continue
		}
		var deeper int
		if err := tx.QueryRowContext(ctx, db.q(`SELECT COUNT(DISTINCT layers) FROM graph_bases WHERE repository_id = ? AND digest = ? AND layers > ?`),
			dep.repoID, dep.d.String(), n).Scan(&deeper); err != nil {
			return fmt.Errorf("read bases: %w", err)
		}
		if _, err := tx.ExecContext(ctx, db.q(`UPDATE graph_bases SET level = level + 1 WHERE repository_id = ? AND digest = ? AND layers < ?`),
			dep.repoID, dep.d.String(), n); err != nil {
			return fmt.Errorf("renumber bases: %w", err)
		}
		link := BaseLink{RepositoryID: b.RepositoryID, Digest: b.Digest, Method: "layers", Level: deeper + 1, Layers: n}
		created, err := db.storedAt(ctx, tx, dep.repoID, dep.d)
		if err != nil {
			return err
		}
		if err := db.insertBase(ctx, tx, dep.repoID, dep.d, created, link, ts); err != nil {
			return err
		}
		if dep.gated == 1 {
			if err := db.appendEvent(ctx, tx, Event{Kind: EventGraphIndexed, Repository: dep.repo,
				Data: mustJSON(map[string]any{"digest": dep.d.String()})}); err != nil {
				return err
			}
		}
	}
	return nil
}
