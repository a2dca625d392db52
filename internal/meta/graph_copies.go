package meta

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/opencontainers/go-digest"
)

// The stored copies of a base: which one an image is recorded as built on.

// copyRank orders the stored copies of one base, best first, for an
// image of the dependent repository (its arguments, copyRankArgs): a
// repository of the dependent's own namespace; then (the caller's next
// key) the copy stored first, since a copy of someone else's image can
// only come after it; then by name. An image is recorded as built on the
// best copy only, so that another tenant's copy of its base, in a
// repository that sorts first, never drives its triggers. Being a mirror
// or a pull-through cache earns a copy nothing: any repository admin can
// make a mirror, and an organization admin a cache, of an upstream of
// their own with the same layers.
const copyRank = `CASE WHEN substr(r.name, 1, ?) = ? THEN 0 ELSE 1 END`

func copyRankArgs(dependent string) []any {
	ns := namespaceOf(dependent) + "/"
	return []any{utf8.RuneCountInString(ns), ns}
}

// BestWithChains returns, per depth, the best copy (copyRank) among the
// indexed images whose whole layer chain is one of chains (images that
// are a prefix of an image with these chain IDs), deepest first: one
// node per depth at most, however many copies other repositories hold.
// A gate's held manifest (not published) is no copy: it is nobody's base
// until it is published. It ranks the copies for an image of the
// dependent repository stored now: every copy stored so far is one
// (BestWithChainsAt).
func (db Graph) BestWithChains(ctx context.Context, dependent string, chains []digest.Digest) ([]GraphNode, error) {
	return db.bestWithChainsAt(ctx, db.read, dependent, math.MaxInt64, chains)
}

// BestWithChainsAt is BestWithChains for an image that the dependent
// repository first stored at stored (its manifest's created_at there):
// a copy in another namespace counts only if it was stored then or
// before (copyStoredBy). An image looked at again (an index pushed over
// it, a graph catching up with its backlog) is thus never built on
// another tenant's copy stored after it.
func (db Graph) BestWithChainsAt(ctx context.Context, dependent string, stored time.Time, chains []digest.Digest) ([]GraphNode, error) {
	return db.bestWithChainsAt(ctx, db.read, dependent, stored.UnixMicro(), chains)
}

// bestWithChains is BestWithChains, in q, for an image of the dependent
// repository stored at a time not known (linkDependents: an image indexed
// before its base): copies of its own namespace only. A gate's held base
// of the namespace is no copy, and another namespace's copy stored after
// the image must not take its place.
func (db *core) bestWithChains(ctx context.Context, q queryer, dependent string, chains []digest.Digest) ([]GraphNode, error) {
	return db.bestWithChainsAt(ctx, q, dependent, math.MinInt64, chains)
}

// copyStoredBy is the condition that a copy (repository r, stored at
// the time in column at) is one for an image of the dependent repository
// stored at a given time (its arguments, copyStoredByArgs): a repository
// of the dependent's own namespace, whenever stored (the namespace's base
// pushed after its applications is theirs: linkDependents); another
// namespace's only if stored then or before. A copy another tenant stores
// after an image was built is not what it was built on, and moving its
// tags must not fire for the image. A time before any (a zero time, or
// math.MinInt64 when it is not known) admits the dependent's namespace
// only.
func copyStoredBy(at string) string {
	return `(substr(r.name, 1, ?) = ? OR ` + at + ` <= ?)`
}

func copyStoredByArgs(dependent string, stored int64) []any {
	return append(copyRankArgs(dependent), stored)
}

func (db *core) bestWithChainsAt(ctx context.Context, q queryer, dependent string, stored int64, chains []digest.Digest) ([]GraphNode, error) {
	if len(chains) == 0 {
		return nil, nil
	}
	args := copyRankArgs(dependent)
	for _, c := range chains {
		args = append(args, c.String())
	}
	args = append(args, copyStoredByArgs(dependent, stored)...)
	rows, err := q.QueryContext(ctx, db.q(db.render(`SELECT repository_id, name, digest, layers, platform, top_chain FROM (
		SELECT g.repository_id, r.name, g.digest, g.layers, g.platform, g.top_chain,
			ROW_NUMBER() OVER (PARTITION BY g.top_chain ORDER BY `+copyRank+`, COALESCE(m.created_at, g.indexed_at), r.name, g.digest) AS n
		FROM graph_images g
		JOIN repositories r ON r.id = g.repository_id
		LEFT JOIN manifests m ON m.repository_id = g.repository_id AND m.digest = g.digest
		WHERE g.top_chain IN (?`+strings.Repeat(", ?", len(chains)-1)+`) AND COALESCE(m.held, 0) = 0
			AND `+copyStoredBy("COALESCE(m.created_at, g.indexed_at)")+`) AS c
		WHERE n = 1 ORDER BY layers DESC`)), args...)
	if err != nil {
		return nil, fmt.Errorf("find images by layers: %w", err)
	}
	return scanNodes(rows)
}

// BestByDigest returns the best copy of a digest stored as a manifest
// (and published: not a gate's held manifest), for an image of the
// dependent repository whose base names the repository name: the
// repository of that exact name, or else the best by copyRank. Its layer
// count and top chain are those the graph indexed (0 and "" otherwise).
// It ranks the copies for an image stored now: every copy stored so far
// is one (BestByDigestAt).
func (db Graph) BestByDigest(ctx context.Context, d digest.Digest, dependent, name string) (GraphNode, bool, error) {
	return db.bestByDigestAt(ctx, d, dependent, math.MaxInt64, name)
}

// BestByDigestAt is BestByDigest for an image that the dependent
// repository first stored at stored: a copy in another namespace counts
// only if it was stored then or before (copyStoredBy), even in the
// repository the base names: that copy stored after the image is not the
// one its builders pulled.
func (db Graph) BestByDigestAt(ctx context.Context, d digest.Digest, dependent string, stored time.Time, name string) (GraphNode, bool, error) {
	return db.bestByDigestAt(ctx, d, dependent, stored.UnixMicro(), name)
}

func (db Graph) bestByDigestAt(ctx context.Context, d digest.Digest, dependent string, stored int64, name string) (GraphNode, bool, error) {
	args := append([]any{d.String()}, copyStoredByArgs(dependent, stored)...)
	args = append(append(args, name), copyRankArgs(dependent)...)
	rows, err := db.read.QueryContext(ctx, db.q(db.render(`SELECT m.repository_id, r.name, m.digest, COALESCE(g.layers, 0), COALESCE(g.platform, ''),
		COALESCE(g.top_chain, '')
		FROM manifests m JOIN repositories r ON r.id = m.repository_id
		LEFT JOIN graph_images g ON g.repository_id = m.repository_id AND g.digest = m.digest
		WHERE m.digest = ? AND m.held = 0 AND `+copyStoredBy("m.created_at")+`
		ORDER BY CASE WHEN r.name = ? THEN 0 ELSE 1 END, `+copyRank+`, m.created_at, r.name LIMIT 1`)), args...)
	if err != nil {
		return GraphNode{}, false, fmt.Errorf("find manifests by digest: %w", err)
	}
	nodes, err := scanNodes(rows)
	if err != nil || len(nodes) == 0 {
		return GraphNode{}, false, err
	}
	return nodes[0], true, nil
}

// ChildFor returns the child of an index stored in the repository that
// the graph indexed for platform.
func (db Graph) ChildFor(ctx context.Context, repoID int64, index digest.Digest, platform string) (GraphNode, bool, error) {
	rows, err := db.read.QueryContext(ctx, db.q(`SELECT g.repository_id, r.name, g.digest, g.layers, g.platform, g.top_chain FROM manifest_references mr
		JOIN graph_images g ON g.repository_id = mr.repository_id AND g.digest = mr.ref_digest
		JOIN repositories r ON r.id = g.repository_id
		WHERE mr.repository_id = ? AND mr.manifest_digest = ? AND mr.is_manifest = 1 AND g.platform = ? ORDER BY g.digest LIMIT 1`),
		repoID, index.String(), platform)
	if err != nil {
		return GraphNode{}, false, fmt.Errorf("find child for platform: %w", err)
	}
	nodes, err := scanNodes(rows)
	if err != nil || len(nodes) == 0 {
		return GraphNode{}, false, err
	}
	return nodes[0], true, nil
}

func scanNodes(rows *sql.Rows) ([]GraphNode, error) {
	defer rows.Close()
	var out []GraphNode
	for rows.Next() {
		var n GraphNode
		var d, top string
		if err := rows.Scan(&n.RepositoryID, &n.Repository, &d, &n.Layers, &n.Platform, &top); err != nil {
			return nil, err
		}
		n.Digest, n.TopChain = digest.Digest(d), digest.Digest(top)
		out = append(out, n)
	}
	return out, rows.Err()
}
