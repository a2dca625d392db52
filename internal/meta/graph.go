package meta

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// EventBaseImageUpdated is appended for an image whose base moved.
const EventBaseImageUpdated = "base_image_updated"

// GraphImage is an image manifest as the graph indexes it.
type GraphImage struct {
	Repository string
	Digest     digest.Digest
	// Platform is os/architecture[/variant].
	Platform string
	// Chain are the chain IDs of the image's layers, base first.
	Chain []digest.Digest
}

// GraphNode is an indexed image found by a lookup.
type GraphNode struct {
	RepositoryID int64
	Repository   string
	Digest       digest.Digest
	Layers       int
	Platform     string
	// TopChain is the chain ID of its top layer ("" if not indexed).
	TopChain digest.Digest
}

// RecordImage indexes an image's layer chain. Indexing twice is harmless.
func (db Graph) RecordImage(ctx context.Context, img GraphImage) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		_, _, err := db.recordImage(ctx, tx, img)
		return err
	})
}

// IndexImage indexes an image's layer chain and replaces its bases, in one
// transaction (RecordImage, then SetBases): the graph's indexer writes
// both at once, so that a failure leaves neither, and the job that failed
// does both again. An image indexed for the first time is also recorded
// as a base of the images indexed before it that are built on it
// (linkDependents). A manifest without a chain (an index whose platforms
// were indexed, an image the graph does not read, an artifact) is
// recorded as looked at: Indexed reports it, so that a gate waiting for
// the graph knows there is nothing more to wait for; no lookup finds it
// as a base (it has no layers).
func (db Graph) IndexImage(ctx context.Context, img GraphImage, bases []BaseLink) error {
	return db.tx(ctx, func(tx *sql.Tx) error { return db.indexImage(ctx, tx, img, bases) })
}

// IndexImageIn is IndexImage in the caller's transaction: the graph's
// indexer writes an image's rows in the transaction that completes its job
// (jobs.OnComplete), one write instead of two.
func (db Graph) IndexImageIn(ctx context.Context, tx Tx, img GraphImage, bases []BaseLink) error {
	return db.indexImage(ctx, tx.tx, img, bases)
}

func (db *core) indexImage(ctx context.Context, tx *sql.Tx, img GraphImage, bases []BaseLink) error {
	repoID, added, err := db.recordImage(ctx, tx, img)
	if err != nil {
		return err
	}
	if err := db.setBases(ctx, tx, img.Repository, img.Digest, bases); err != nil {
		return err
	}
	if !added {
		return nil
	}
	return db.linkDependents(ctx, tx, repoID, img)
}

// recordImage records an image's layer chain, and reports whether it was
// not recorded before. A manifest without a chain is recorded as looked
// at (no layers, no chain: IndexImage), never as new.
func (db *core) recordImage(ctx context.Context, tx *sql.Tx, img GraphImage) (int64, bool, error) {
	var repoID int64
	if err := tx.QueryRowContext(ctx, db.q("SELECT id FROM repositories WHERE name = ?"), img.Repository).Scan(&repoID); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return 0, false, ErrRepositoryNotFound
		}
		return 0, false, fmt.Errorf("look up repository: %w", err)
	}
	if len(img.Chain) == 0 {
		if _, err := tx.ExecContext(ctx, db.q(`INSERT INTO graph_images (repository_id, digest, layers, top_chain, platform, indexed_at)
			VALUES (?, ?, 0, '', ?, ?) ON CONFLICT (repository_id, digest) DO NOTHING`), repoID, img.Digest.String(), img.Platform, db.now()); err != nil {
			return 0, false, fmt.Errorf("record a manifest looked at: %w", err)
		}
		return repoID, false, nil
	}
	res, err := tx.ExecContext(ctx, db.q(`INSERT INTO graph_images (repository_id, digest, layers, top_chain, platform, indexed_at)
		VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (repository_id, digest) DO NOTHING`),
		repoID, img.Digest.String(), len(img.Chain), img.Chain[len(img.Chain)-1].String(), img.Platform, db.now())
	if err != nil {
		return 0, false, fmt.Errorf("index image: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return repoID, false, nil
	}
	const perStatement = 200
	for start := 0; start < len(img.Chain); start += perStatement {
		batch := img.Chain[start:min(start+perStatement, len(img.Chain))]
		args := make([]any, 0, 4*len(batch))
		for i, c := range batch {
			args = append(args, repoID, img.Digest.String(), start+i+1, c.String())
		}
		stmt := "INSERT INTO graph_chains (repository_id, digest, depth, chain_id) VALUES (?, ?, ?, ?)" + strings.Repeat(", (?, ?, ?, ?)", len(batch)-1)
		if _, err := tx.ExecContext(ctx, db.q(stmt), args...); err != nil {
			return 0, false, fmt.Errorf("index image layers: %w", err)
		}
	}
	return repoID, true, nil
}

// Indexed reports whether the graph has indexed a manifest of the
// repository, or looked at it and found nothing to index (IndexImage).
func (db Graph) Indexed(ctx context.Context, repo string, d digest.Digest) (bool, error) {
	var one int
	err := db.read.QueryRowContext(ctx, db.q(`SELECT 1 FROM graph_images g JOIN repositories r ON r.id = g.repository_id
		WHERE r.name = ? AND g.digest = ?`), repo, d.String()).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// BaseLink is a base found for an image, to record.
type BaseLink struct {
	RepositoryID int64
	Digest       digest.Digest
	Method       string
	Level        int
	Layers       int
	// Tag is the base's tag the image names (its base annotation, its
	// provenance), if any: the base is then recorded through that tag
	// alone when it ever reached the digest, so that the image is stale
	// once that tag moves, whatever other tags (a gate's rollback tags)
	// still point at the base.
	Tag string
}

// SetBases replaces the recorded bases of an image. Each base is recorded
// with every tag it was reached through: the tags that point at it, or at
// an index holding it, now or when the image was stored (a tag that moved
// on before the graph recorded the image); failing those, the tags that
// ever did (the image was built on a base its tag has left). A base no
// tag ever named is recorded without one.
func (db Graph) SetBases(ctx context.Context, repo string, d digest.Digest, bases []BaseLink) error {
	return db.tx(ctx, func(tx *sql.Tx) error { return db.setBases(ctx, tx, repo, d, bases) })
}

func (db *core) setBases(ctx context.Context, tx *sql.Tx, repo string, d digest.Digest, bases []BaseLink) error {
	var repoID int64
	var gated int
	if err := tx.QueryRowContext(ctx, db.q("SELECT id, gated FROM repositories WHERE name = ?"), repo).Scan(&repoID, &gated); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return ErrRepositoryNotFound
		}
		return fmt.Errorf("look up repository: %w", err)
	}
	if gated == 1 {
		// A gate reads bases: its candidates are evaluated again.
		if err := db.appendEvent(ctx, tx, Event{Kind: EventGraphIndexed, Repository: repo, Data: mustJSON(map[string]any{"digest": d.String()})}); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, db.q("DELETE FROM graph_bases WHERE repository_id = ? AND digest = ?"), repoID, d.String()); err != nil {
		return fmt.Errorf("clear bases: %w", err)
	}
	ts := db.now()
	created, err := db.storedAt(ctx, tx, repoID, d)
	if err != nil {
		return err
	}
	for _, b := range bases {
		if err := db.insertBase(ctx, tx, repoID, d, created, b, ts); err != nil {
			return err
		}
	}
	return nil
}

// storedAt returns when an image's manifest was stored in its repository
// (0 if it is not stored).
func (db *core) storedAt(ctx context.Context, tx *sql.Tx, repoID int64, d digest.Digest) (int64, error) {
	var at int64
	err := tx.QueryRowContext(ctx, db.q("SELECT created_at FROM manifests WHERE repository_id = ? AND digest = ?"), repoID, d.String()).Scan(&at)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read when an image was stored: %w", err)
	}
	return at, nil
}

// insertBase records one base of an image stored at created, through
// every tag it was reached through (SetBases).
func (db *core) insertBase(ctx context.Context, tx *sql.Tx, repoID int64, d digest.Digest, created int64, b BaseLink, ts int64) error {
	var tags []tagAt
	var err error
	if b.Tag != "" {
		if tags, err = db.namedTagReaching(ctx, tx, b.RepositoryID, b.Tag, b.Digest); err != nil {
			return err
		}
	}
	if len(tags) == 0 {
		if tags, err = db.tagsReaching(ctx, tx, b.RepositoryID, b.Digest, created); err != nil {
			return err
		}
	}
	if len(tags) == 0 {
		tags = []tagAt{{top: b.Digest.String()}}
	}
	for _, t := range tags {
		if _, err := tx.ExecContext(ctx, db.q(`INSERT INTO graph_bases (repository_id, digest, base_repository_id, base_digest, base_tag, base_top,
			method, level, layers, matched_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`),
			repoID, d.String(), b.RepositoryID, b.Digest.String(), t.tag, t.top, b.Method, b.Level, b.Layers, ts); err != nil {
			return fmt.Errorf("record base: %w", err)
		}
	}
	return nil
}

type tagAt struct{ tag, top string }

// tagsReaching returns the tags through which d is reached in a
// repository, with what each pointed at (d or an index holding it): the
// current ones and those that reached it when the image built on it was
// stored (created, 0 if unknown: a tag that has moved on since, maybe
// before the graph indexed the image, is still the one it was built from),
// or else the historical ones (the latest period of each). A tag past its
// expiration is gone (liveTag), as if deleted when it expired: it is not
// a current one, and reached d when the image was stored only if it had
// not expired by then (its open period ends at its expiration). The
// periods' ends are compared as liveTag compares expirations (until_at -
// created > 0): the partial indexes on tag_history (until_at > 0) would
// otherwise make SQLite prepare the statement again on every run.
func (db *core) tagsReaching(ctx context.Context, tx *sql.Tx, repoID int64, d digest.Digest, created int64) ([]tagAt, error) {
	rows, err := tx.QueryContext(ctx, db.q(`SELECT name, manifest_digest FROM tags WHERE repository_id = CAST(? AS BIGINT) AND manifest_digest IN
		(SELECT CAST(? AS TEXT) UNION SELECT manifest_digest FROM manifest_references WHERE repository_id = CAST(? AS BIGINT) AND ref_digest = ? AND is_manifest = 1)
		AND `+liveTag("")+`
		ORDER BY name`), repoID, d.String(), repoID, d.String(), db.now())
	if err != nil {
		return nil, fmt.Errorf("find tags of base: %w", err)
	}
	out, err := scanTagAts(rows)
	if err != nil {
		return nil, err
	}
	if created > 0 {
		rows, err = tx.QueryContext(ctx, db.q(`SELECT h.tag, h.digest FROM tag_history h WHERE h.repository_id = CAST(? AS BIGINT) AND h.digest IN
			(SELECT CAST(? AS TEXT) UNION SELECT manifest_digest FROM manifest_references WHERE repository_id = CAST(? AS BIGINT) AND ref_digest = ? AND is_manifest = 1)
			AND h.from_at <= ? AND (h.until_at - ? > 0 OR (h.until_at = 0 AND NOT EXISTS (SELECT 1 FROM tags t
				WHERE t.repository_id = h.repository_id AND t.name = h.tag AND NOT `+liveTag("t")+`)))
			ORDER BY h.tag`), repoID, d.String(), repoID, d.String(), created, created, created)
		if err != nil {
			return nil, fmt.Errorf("find tags of base when its dependent was stored: %w", err)
		}
		then, err := scanTagAts(rows)
		if err != nil {
			return nil, err
		}
		now := make(map[string]bool, len(out))
		for _, t := range out {
			now[t.tag] = true
		}
		for _, t := range then {
			if !now[t.tag] {
				out = append(out, t)
			}
		}
	}
	if len(out) > 0 {
		return out, nil
	}
	// No tag points at it now: the tags that last did (the history of d
	// itself, or of the indexes still holding it).
	rows, err = tx.QueryContext(ctx, db.q(`SELECT h.tag, h.digest FROM tag_history h WHERE h.repository_id = ? AND h.digest IN
		(SELECT CAST(? AS TEXT) UNION SELECT manifest_digest FROM manifest_references WHERE repository_id = ? AND ref_digest = ? AND is_manifest = 1)
		AND h.id = (SELECT MAX(h2.id) FROM tag_history h2 WHERE h2.repository_id = h.repository_id AND h2.tag = h.tag AND h2.digest = h.digest)
		ORDER BY h.tag`), repoID, d.String(), repoID, d.String())
	if err != nil {
		return nil, fmt.Errorf("find past tags of base: %w", err)
	}
	return scanTagAts(rows)
}

// namedTagReaching returns the one tag the image names, with what it
// pointed at when it reached d (d or an index holding it): now, or else
// in its latest period that did; none if the tag never reached d.
func (db *core) namedTagReaching(ctx context.Context, tx *sql.Tx, repoID int64, tag string, d digest.Digest) ([]tagAt, error) {
	rows, err := tx.QueryContext(ctx, db.q(`SELECT h.tag, h.digest FROM tag_history h WHERE h.repository_id = ? AND h.tag = ? AND h.digest IN
		(SELECT CAST(? AS TEXT) UNION SELECT manifest_digest FROM manifest_references WHERE repository_id = ? AND ref_digest = ? AND is_manifest = 1)
		ORDER BY h.id DESC LIMIT 1`), repoID, tag, d.String(), repoID, d.String())
	if err != nil {
		return nil, fmt.Errorf("find the named tag of a base: %w", err)
	}
	return scanTagAts(rows)
}

func scanTagAts(rows *sql.Rows) ([]tagAt, error) {
	defer rows.Close()
	var out []tagAt
	for rows.Next() {
		var t tagAt
		if err := rows.Scan(&t.tag, &t.top); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// GraphBase is a recorded base of an image.
type GraphBase struct {
	Repository string
	// Digest is the base image (a platform's manifest).
	Digest digest.Digest
	// Tag is the tag the base was reached through ("" if none ever named
	// it), and Top what it pointed at then: Digest or an index holding it.
	Tag    string
	Top    digest.Digest
	Method string
	// Level is 1 for the immediate base, 2 for its base, and so on.
	Level     int
	Layers    int
	MatchedAt time.Time
	// Current is what Tag points at now ("" if it was deleted); Moved is
	// true when that is not Top.
	Current digest.Digest
	Moved   bool
	// Public is true when the base's repository is public.
	Public bool
}

// baseColumns are a base's (graph_bases b, its repository br, its tag t
// now): the last says whether the tag has pointed at the dependent itself
// (or an index holding it), which is no longer reached through it
// (wasTagged).
var baseColumns = `br.name, b.base_digest, b.base_tag, b.base_top, b.method, b.level, b.layers, b.matched_at, COALESCE(t.manifest_digest, ''), br.visibility,
	CASE WHEN b.base_tag <> '' AND ` + wasTagged("b") + ` THEN 1 ELSE 0 END`

func scanBase(row interface{ Scan(...any) error }, extra ...any) (GraphBase, error) {
	var b GraphBase
	var d, top, cur, visibility string
	var matched int64
	var self int
	if err := row.Scan(append([]any{&b.Repository, &d, &b.Tag, &top, &b.Method, &b.Level, &b.Layers, &matched, &cur, &visibility, &self}, extra...)...); err != nil {
		return GraphBase{}, err
	}
	b.Public = visibility == "public"
	b.Digest, b.Top, b.Current, b.MatchedAt = digest.Digest(d), digest.Digest(top), digest.Digest(cur), fromMicros(matched)
	// A tag that has pointed at the dependent itself (pushed to the tag it
	// was built from) is not one it is reached through: its moves are not
	// its base's.
	b.Moved = b.Tag != "" && b.Current != b.Top && self == 0
	return b, nil
}

// Bases returns the recorded bases of an image (a platform's manifest, or
// an index: then its children's), immediate first. A base that is a
// gate's held manifest (not published) is left out.
func (db Graph) Bases(ctx context.Context, repo string, d digest.Digest) ([]GraphBase, error) {
	rows, err := db.read.QueryContext(ctx, db.q(`SELECT `+baseColumns+` FROM graph_bases b
		JOIN repositories r ON r.id = b.repository_id
		JOIN repositories br ON br.id = b.base_repository_id
		LEFT JOIN tags t ON t.repository_id = b.base_repository_id AND t.name = b.base_tag AND b.base_tag <> ''
		WHERE r.name = ? AND b.digest IN (SELECT CAST(? AS TEXT) UNION SELECT ref_digest FROM manifest_references WHERE repository_id = r.id AND manifest_digest = ? AND is_manifest = 1)
		AND NOT EXISTS (SELECT 1 FROM manifests hm WHERE hm.repository_id = b.base_repository_id AND hm.digest = b.base_digest AND hm.held = 1)
		ORDER BY b.level, br.name, b.base_digest, b.base_tag`), repo, d.String(), d.String())
	if err != nil {
		return nil, fmt.Errorf("list bases: %w", err)
	}
	defer rows.Close()
	var out []GraphBase
	for rows.Next() {
		b, err := scanBase(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

// GraphDependent is an image built on a given one.
type GraphDependent struct {
	Repository string
	// Digest is the dependent image (a platform's manifest); Tagged are
	// the digests its tags point at (Digest, or indexes holding it) and
	// Tags those tags.
	Digest digest.Digest
	Tagged []digest.Digest
	Tags   []string
	// Base is how it is built on the image asked about (Level 1: directly).
	Base GraphBase
	// Stale is true when the tag its immediate base was reached through has
	// moved on; StaleBase is that base's repository ("" when not stale),
	// which may not be the one asked about (transitive dependents): only a
	// caller who may read it may learn that its tag moved.
	Stale     bool
	StaleBase string
}

// DependentsQuery selects the dependents ReadableDependents lists.
type DependentsQuery struct {
	// Transitive lists the images built on it at any depth, not only
	// directly (level 1).
	Transitive bool
	// N is how many dependents to return at most.
	N int
	// Readable says whether the caller may read a repository: the
	// dependents in the others are passed over (nil: none is). It is
	// asked once per dependent read.
	Readable func(repo string) (bool, error)
	// MaxRows bounds the dependents read, readable or not
	// (0: DefaultMaxDependentRows).
	MaxRows int
	// After is where to go on from: the Next of the page before (the
	// zero value: from the start).
	After DependentsPosition
}

// DependentsPosition is a place in a listing of dependents, which is by
// level, then repository name and digest: after the dependent at Level
// in Repository with Digest (the zero value: before the first).
type DependentsPosition struct {
	Level      int
	Repository string
	Digest     digest.Digest
}

// DependentsPage is a page of dependents ReadableDependentsPage lists.
type DependentsPage struct {
	Dependents []GraphDependent
	// More is true when the listing may go on: more readable dependents
	// follow, or MaxRows stopped it before the end.
	More bool
	// Next is where the next page starts (DependentsQuery.After) when
	// More is true: past the last dependent read, the caller's or not,
	// so that the next page does not read again what this one passed
	// over.
	Next DependentsPosition
}

// DefaultMaxDependentRows bounds the dependents one listing reads
// (DependentsQuery.MaxRows).
const DefaultMaxDependentRows = 50000

// Dependents returns the images still stored that are built on an image
// (a platform's manifest, or an index: then on any of its children), up
// to n. Directly only (level 1), or transitively (any level).
func (db Graph) Dependents(ctx context.Context, repo string, d digest.Digest, transitive bool, n int) ([]GraphDependent, error) {
	out, _, err := db.ReadableDependents(ctx, repo, d, DependentsQuery{Transitive: transitive, N: n})
	return out, err
}

// ReadableDependents is Dependents of the images in repositories the
// caller may read (q.Readable): it reads on, by level, repository name and
// digest, until it has found q.N of them or read q.MaxRows dependents,
// so that dependents the caller may not read, however many come first,
// do not hide theirs. It also reports whether the list may go on: more
// readable dependents follow, or the bound stopped it before the end.
func (db Graph) ReadableDependents(ctx context.Context, repo string, d digest.Digest, q DependentsQuery) ([]GraphDependent, bool, error) {
	p, err := db.ReadableDependentsPage(ctx, repo, d, q)
	return p.Dependents, p.More, err
}

// ReadableDependentsPage is ReadableDependents from q.After on, with where
// it stopped: a listing reads at most q.MaxRows dependents, and the next
// page (q.After = the page's Next) goes on from there, so that the
// caller reaches every readable dependent in bounded pages. A dependent
// is listed once, at the lowest level it is found at (a transitive
// listing finds an image built on two platforms of an index at two
// levels only at the lower), on whichever page reaches that level.
func (db Graph) ReadableDependentsPage(ctx context.Context, repo string, d digest.Digest, q DependentsQuery) (DependentsPage, error) {
	if q.N <= 0 {
		return DependentsPage{}, nil
	}
	maxRows := q.MaxRows
	if maxRows <= 0 {
		maxRows = DefaultMaxDependentRows
	}
	type key struct {
		repo string
		d    digest.Digest
	}
	var out []GraphDependent
	ids := map[key]int64{}
	seen := map[key]bool{}
	// after is the last dependent read and done with (listed, passed
	// over, or read before): where a next page goes on.
	after := q.After
	read, page, more := 0, q.N+1, false
	for read < maxRows {
		limit := min(page, maxRows-read)
		rows, err := db.dependentsPage(ctx, repo, d, q.Transitive, after, limit)
		if err != nil {
			return DependentsPage{}, err
		}
		read += len(rows)
		for _, r := range rows {
			at := DependentsPosition{r.dep.Base.Level, r.dep.Repository, r.dep.Digest}
			k := key{r.dep.Repository, r.dep.Digest}
			if seen[k] {
				after = at
				continue
			}
			seen[k] = true
			if q.Readable != nil {
				ok, err := q.Readable(r.dep.Repository)
				if err != nil {
					return DependentsPage{}, err
				}
				if !ok {
					after = at
					continue
				}
			}
			if len(out) == q.N {
				more = true // one more readable: the list goes on, from before it
				break
			}
			ids[k] = r.repoID
			out = append(out, r.dep)
			after = at
		}
		if more || len(rows) < limit {
			break // done, or the rows ended
		}
		if read >= maxRows {
			more = true // the bound, before the end
		}
		page = min(page*4, 10000)
	}
	for i := range out {
		tagged, tags, err := db.taggedAs(ctx, db.read, ids[key{out[i].Repository, out[i].Digest}], out[i].Digest)
		if err != nil {
			return DependentsPage{}, err
		}
		out[i].Tagged, out[i].Tags = tagged, tags
	}
	p := DependentsPage{Dependents: out, More: more}
	if more {
		p.Next = after
	}
	return p, nil
}

// dependentRow is a dependent as dependentsPage reads it.
type dependentRow struct {
	dep    GraphDependent
	repoID int64
}

// dependentsPage reads up to n dependents after a place in the listing
// (the zero position: from the start), one row each: of the tags a
// dependent's base was reached through, the first by name (each row says
// whether any of them moved). A transitive listing reads a dependent
// only at the lowest level it is built on the image at (an image built
// on two platforms of an index, at two levels): so that a page after
// the one that listed it at the lower level does not list it again.
func (db Graph) dependentsPage(ctx context.Context, repo string, d digest.Digest, transitive bool, after DependentsPosition, n int) ([]dependentRow, error) {
	cond := " AND b.level = 1"
	args := []any{repo, d.String(), d.String()}
	if transitive {
		cond = ` AND NOT EXISTS (SELECT 1 FROM graph_bases lb WHERE lb.repository_id = b.repository_id AND lb.digest = b.digest
			AND lb.base_repository_id = b.base_repository_id AND lb.level < b.level
			AND lb.base_digest IN (SELECT CAST(? AS TEXT) UNION SELECT ref_digest FROM manifest_references WHERE repository_id = br.id AND manifest_digest = ? AND is_manifest = 1))`
		args = append(args, d.String(), d.String())
	}
	if after.Repository != "" {
		cond += " AND (b.level > ? OR (b.level = ? AND (r.name > ? OR (r.name = ? AND b.digest > ?))))"
		args = append(args, after.Level, after.Level, after.Repository, after.Repository, after.Digest.String())
	}
	rows, err := db.read.QueryContext(ctx, db.q(`SELECT `+baseColumns+`, r.name, b.digest, b.repository_id,
			COALESCE((SELECT MIN(ir.name) FROM graph_bases ib JOIN repositories ir ON ir.id = ib.base_repository_id
				LEFT JOIN tags it ON it.repository_id = ib.base_repository_id AND it.name = ib.base_tag
				WHERE ib.repository_id = b.repository_id AND ib.digest = b.digest AND ib.level = 1 AND ib.base_tag <> ''
				AND (it.manifest_digest IS NULL OR it.manifest_digest <> ib.base_top) AND NOT `+wasTagged("ib")+`), '')
		FROM graph_bases b
		JOIN repositories br ON br.id = b.base_repository_id
		JOIN repositories r ON r.id = b.repository_id
		JOIN manifests m ON m.repository_id = b.repository_id AND m.digest = b.digest AND m.held = 0
		LEFT JOIN tags t ON t.repository_id = b.base_repository_id AND t.name = b.base_tag AND b.base_tag <> ''
		WHERE br.name = ? AND b.base_digest IN (SELECT CAST(? AS TEXT) UNION SELECT ref_digest FROM manifest_references WHERE repository_id = br.id AND manifest_digest = ? AND is_manifest = 1)
		AND NOT EXISTS (SELECT 1 FROM graph_bases ob WHERE ob.repository_id = b.repository_id AND ob.digest = b.digest
			AND ob.base_repository_id = b.base_repository_id AND ob.base_digest = b.base_digest AND ob.base_tag < b.base_tag)`+cond+`
		ORDER BY b.level, r.name, b.digest, b.base_tag LIMIT CAST(? AS BIGINT)`), append(args, n)...)
	if err != nil {
		return nil, fmt.Errorf("list dependents: %w", err)
	}
	defer rows.Close()
	var out []dependentRow
	for rows.Next() {
		var r dependentRow
		var dg string
		b, err := scanBase(rows, &r.dep.Repository, &dg, &r.repoID, &r.dep.StaleBase)
		if err != nil {
			return nil, fmt.Errorf("scan a dependent: %w", err)
		}
		r.dep.Digest, r.dep.Base, r.dep.Stale = digest.Digest(dg), b, r.dep.StaleBase != ""
		out = append(out, r)
	}
	return out, rows.Err()
}

type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// taggedAs returns the digests through which an image is tagged (itself,
// or indexes holding it) and their tags. A tag past its expiration is
// gone (liveTag): it tags nothing.
func (db *core) taggedAs(ctx context.Context, q queryer, repoID int64, d digest.Digest) ([]digest.Digest, []string, error) {
	rows, err := q.QueryContext(ctx, db.q(`SELECT name, manifest_digest FROM tags WHERE repository_id = ? AND manifest_digest IN
		(SELECT CAST(? AS TEXT) UNION SELECT manifest_digest FROM manifest_references WHERE repository_id = ? AND ref_digest = ? AND is_manifest = 1)
		AND `+liveTag("")+`
		ORDER BY manifest_digest, name`), repoID, d.String(), repoID, d.String(), db.now())
	if err != nil {
		return nil, nil, fmt.Errorf("find tags of image: %w", err)
	}
	ts, err := scanTagAts(rows)
	if err != nil {
		return nil, nil, err
	}
	var tagged []digest.Digest
	var tags []string
	for _, t := range ts {
		if len(tagged) == 0 || tagged[len(tagged)-1] != digest.Digest(t.top) {
			tagged = append(tagged, digest.Digest(t.top))
		}
		tags = append(tags, t.tag)
	}
	return tagged, tags, nil
}
