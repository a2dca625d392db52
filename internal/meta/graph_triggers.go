package meta

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"

	"github.com/opencontainers/go-digest"
)

// The base_image_updated triggers: which images a moved base tag fires
// for, and what each event says.

// BaseMove is a tag of a base repository that moved.
type BaseMove struct {
	Repository string
	Tag        string
	New        digest.Digest
	Actor      string
	// Diffs holds, per base a dependent is built on (what the tag pointed
	// at when it was recorded: the base, or an index holding it), what
	// moving from it to New fixed and brought (fixed_vulnerabilities,
	// new_vulnerabilities, vulnerabilities_compared), computed once per
	// base (DependentBases) and added to the event of every dependent
	// built on it. A dependent on a base it does not hold hears nothing
	// compared.
	Diffs map[digest.Digest]map[string]any
	// Dependent and DependentDigest, when set, restrict the move to that
	// one image (an index: its platforms): a move the graph catches up
	// with for an image recorded after it (MissedMoves).
	Dependent       string
	DependentDigest digest.Digest
	// Batch is how many dependents FireBaseMoved fires for per
	// transaction (0: defaultFireBatch).
	Batch int
	// afterBatch, if set, runs after each batch commits (tests).
	afterBatch func(ctx context.Context, fired int) error
}

// dependentsOf is the condition on graph_bases b (joined with the
// dependent's repository r) that selects the images a move fires for,
// and its arguments after the base repository's id. An image the tag has
// pointed at (or a platform of one) is none of them: one built FROM the
// tag and pushed to it (v2 built on base:latest, pushed as base:latest
// and base:sha2) is recorded as reached through the tag, and would fire
// for itself, or for the tag's next move (to v3, built FROM it in turn),
// its rebuild pushing to the tag again, without end.
func (mv BaseMove) dependentsOf() (string, []any) {
	cond := ` b.base_tag = ? AND b.level = 1 AND b.base_top <> ? AND NOT ` + wasTagged("b")
	args := []any{mv.Tag, mv.New.String()}
	if mv.Dependent != "" {
		cond += ` AND r.name = ? AND b.digest IN (SELECT CAST(? AS TEXT) UNION SELECT ref_digest FROM manifest_references
			WHERE repository_id = b.repository_id AND manifest_digest = ? AND is_manifest = 1)`
		args = append(args, mv.Dependent, mv.DependentDigest.String(), mv.DependentDigest.String())
	}
	return cond, args
}

// wasTagged is the condition that the tag through which the dependent of
// graph_bases row b (a platform's manifest) reached its base has pointed
// at the dependent itself, or at an index (in the base's repository)
// holding it, now or before (tag_history): pushed to the tag it was built
// from, the dependent is no longer reached through that tag, which is not
// built on wherever it goes next. Only the periods the time machine keeps
// (gc.timeMachine) are known; the open one always is.
func wasTagged(b string) string {
	return `(EXISTS (SELECT 1 FROM tag_history sh WHERE sh.repository_id = ` + b + `.base_repository_id AND sh.digest = ` + b + `.digest
			AND sh.tag = ` + b + `.base_tag)
		OR EXISTS (SELECT 1 FROM manifest_references sr JOIN tag_history sh ON sh.repository_id = sr.repository_id AND sh.digest = sr.manifest_digest
			WHERE sr.repository_id = ` + b + `.base_repository_id AND sr.ref_digest = ` + b + `.digest AND sr.is_manifest = 1 AND sh.tag = ` + b + `.base_tag))`
}

// notCompared are the vulnerability fields of an event whose bases were
// not compared.
func notCompared() map[string]any {
	return map[string]any{"fixed_vulnerabilities": []any{}, "new_vulnerabilities": []any{}, "vulnerabilities_compared": false}
}

// DependentBases returns the bases the tagged images a move fires for
// (FireBaseMoved; a tag past its expiration tags nothing) are built on:
// what the tag pointed at when each was recorded, up to n, so that the
// caller compares each with the new base once, whatever the number of
// images built on it.
func (db Graph) DependentBases(ctx context.Context, mv BaseMove, n int) ([]digest.Digest, error) {
	cond, args := mv.dependentsOf()
	now := db.now() // a tag past its expiration tags nothing (liveTag)
	rows, err := db.read.QueryContext(ctx, db.q(`SELECT DISTINCT b.base_top FROM graph_bases b
		JOIN repositories br ON br.id = b.base_repository_id
		JOIN repositories r ON r.id = b.repository_id
		JOIN manifests m ON m.repository_id = b.repository_id AND m.digest = b.digest
		WHERE br.name = ? AND`+cond+`
		AND (EXISTS (SELECT 1 FROM tags t WHERE t.repository_id = b.repository_id AND t.manifest_digest = b.digest AND `+liveTag("t")+`)
			OR EXISTS (SELECT 1 FROM manifest_references mr JOIN tags t ON t.repository_id = mr.repository_id AND t.manifest_digest = mr.manifest_digest
				WHERE mr.repository_id = b.repository_id AND mr.ref_digest = b.digest AND mr.is_manifest = 1 AND `+liveTag("t")+`))
		ORDER BY b.base_top LIMIT CAST(? AS BIGINT)`), append(append([]any{mv.Repository}, args...), now, now, n)...)
	if err != nil {
		return nil, fmt.Errorf("find the bases of a moved tag's dependents: %w", err)
	}
	tops, err := scanStrings(rows)
	if err != nil {
		return nil, err
	}
	out := make([]digest.Digest, len(tops))
	for i, t := range tops {
		out[i] = digest.Digest(t)
	}
	return out, nil
}

// defaultFireBatch is how many dependents FireBaseMoved fires for per
// transaction, unless the move says otherwise (BaseMove.Batch).
const defaultFireBatch = 500

// FireBaseMoved appends a base_image_updated event for every tagged image
// whose immediate base was reached through the moved tag and is not the
// tag's new digest: one per dependent as tagged (an index and its
// platforms fire once) and new base, ever, so a replay or a second move
// to the same digest fires nothing. A dependent already rebuilt (no
// longer tagged), or whose tags have all expired (liveTag), fires
// nothing; an event lists the dependent's live tags only. It returns how
// many events it appended.
// Each event's old_digest is the base its dependent is built on (what
// the tag pointed at then), however many times the tag moved since.
//
// The dependents are fired for in batches (BaseMove.Batch), each in a
// transaction of its own, by repository name and digest: a move of a
// widely used base does not hold the writer (on SQLite, every push) for
// all of them, and one that fails part way keeps what its batches fired:
// run again, it skips them (graph_triggers) and goes on.
//
// A dependent in another namespace than a private base of the
// organization's own (not a mirror, not a pull-through cache, whose
// content is the upstream's) learns only that its base moved: its event names
// neither the base's repository and tag nor where the tag went, carries
// no actor and no vulnerabilities of the base (vulnerabilities_compared
// false).
func (db Graph) FireBaseMoved(ctx context.Context, mv BaseMove) (int, error) {
	batch := mv.Batch
	if batch <= 0 {
		batch = defaultFireBatch
	}
	fired := 0
	var after movedDependent
	for {
		deps, err := db.movedDependents(ctx, mv, after, batch)
		if err != nil || len(deps) == 0 {
			return fired, err
		}
		n := 0
		if err := db.tx(ctx, func(tx *sql.Tx) error {
			var err error
			n, err = db.fireBatch(ctx, tx, mv, deps)
			return err
		}); err != nil {
			return fired, err
		}
		fired += n
		if mv.afterBatch != nil {
			if err := mv.afterBatch(ctx, fired); err != nil {
				return fired, err
			}
		}
		if len(deps) < batch {
			return fired, nil
		}
		after = deps[len(deps)-1]
	}
}

// movedDependent is an image a move fires for, and the base it is built
// on (what the tag pointed at when it was recorded).
type movedDependent struct {
	repoID            int64
	repo, dg, baseTop string
}

// movedDependents returns the next up to n images a move fires for,
// after one (by repository name and digest; the zero value: from the
// start). An image recorded through the tag more than once (the tag
// pointed at its base, and at an index holding it) comes once, with the
// first of its bases. Read outside the transaction that fires for them:
// the writer is not held while the graph is searched.
func (db Graph) movedDependents(ctx context.Context, mv BaseMove, after movedDependent, n int) ([]movedDependent, error) {
	cond, args := mv.dependentsOf()
	args = append([]any{mv.Repository}, args...)
	if after.repo != "" {
		cond += ` AND (r.name > ? OR (r.name = ? AND b.digest > ?))`
		args = append(args, after.repo, after.repo, after.dg)
	}
	rows, err := db.read.QueryContext(ctx, db.q(`SELECT b.repository_id, r.name, b.digest, MIN(b.base_top) FROM graph_bases b
		JOIN repositories br ON br.id = b.base_repository_id
		JOIN repositories r ON r.id = b.repository_id
		JOIN manifests m ON m.repository_id = b.repository_id AND m.digest = b.digest
		WHERE br.name = ? AND`+cond+`
		GROUP BY b.repository_id, r.name, b.digest
		ORDER BY r.name, b.digest LIMIT CAST(? AS BIGINT)`), append(args, n)...)
	if err != nil {
		return nil, fmt.Errorf("find dependents of a moved tag: %w", err)
	}
	defer rows.Close()
	var out []movedDependent
	for rows.Next() {
		var d movedDependent
		if err := rows.Scan(&d.repoID, &d.repo, &d.dg, &d.baseTop); err != nil {
			return nil, fmt.Errorf("scan a dependent of a moved tag: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// fireBatch fires a move for a batch of its dependents in tx
// (FireBaseMoved), and returns how many events it appended.
func (db Graph) fireBatch(ctx context.Context, tx *sql.Tx, mv BaseMove, deps []movedDependent) (int, error) {
	var visibility, state string
	var cached int
	if err := tx.QueryRowContext(ctx, db.q(`SELECT r.visibility, r.state,
		CASE WHEN EXISTS (SELECT 1 FROM proxy_caches p JOIN namespaces n ON n.id = p.namespace_id WHERE n.name = ?) THEN 1 ELSE 0 END
		FROM repositories r WHERE r.name = ?`), namespaceOf(mv.Repository), mv.Repository).Scan(&visibility, &state, &cached); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return 0, nil // the base's repository is gone
		}
		return 0, fmt.Errorf("look up repository: %w", err)
	}
	// Upstream content (a mirror, a pull-through cache) is named as a
	// public base is: its digests are the upstream's, and rebuilds pin
	// them (FROM ${BERTH_BASE_DOCKER_URL}@digest).
	upstream := state == "MIRROR" || cached == 1
	fired := 0
	for _, d := range deps {
		tagged, _, err := db.taggedAs(ctx, tx, d.repoID, digest.Digest(d.dg))
		if err != nil {
			return 0, err
		}
		for _, top := range tagged {
			res, err := tx.ExecContext(ctx, db.q(`INSERT INTO graph_triggers (repository_id, digest, new_base, fired_at) VALUES (?, ?, ?, ?)
				ON CONFLICT DO NOTHING`), d.repoID, top.String(), mv.New.String(), db.now())
			if err != nil {
				return 0, fmt.Errorf("record trigger: %w", err)
			}
			if n, _ := res.RowsAffected(); n == 0 {
				continue
			}
			tags, err := db.tagsOf(ctx, tx, d.repoID, top)
			if err != nil {
				return 0, err
			}
			data := notCompared()
			actor := mv.Actor
			if visibility != "public" && !upstream && namespaceOf(d.repo) != namespaceOf(mv.Repository) {
				// A private base of another namespace: not named.
				actor = ""
				data["base"] = map[string]any{"repository": "", "tag": "", "old_digest": d.baseTop, "new_digest": ""}
			} else {
				for k, v := range mv.Diffs[digest.Digest(d.baseTop)] {
					data[k] = v
				}
				data["base"] = map[string]any{"repository": mv.Repository, "tag": mv.Tag, "old_digest": d.baseTop, "new_digest": mv.New.String()}
			}
			data["digest"], data["tags"] = top.String(), tags
			if err := db.appendBaseImageUpdated(ctx, tx, d.repo, actor, data); err != nil {
				return 0, err
			}
			fired++
		}
	}
	return fired, nil
}

// appendBaseImageUpdated appends a base_image_updated event, as
// appendEvent does, with its audit entry: the same but for the
// vulnerability lists (a base's can run to hundreds of entries, copied
// for every dependent), of which the entry keeps the counts.
func (db Graph) appendBaseImageUpdated(ctx context.Context, tx *sql.Tx, repo, actor string, data map[string]any) error {
	b, err := json.Marshal(data)
	if err != nil {
		return fmt.Errorf("event data: %w", err)
	}
	audit := make(map[string]any, len(data))
	for k, v := range data {
		switch k {
		case "fixed_vulnerabilities", "new_vulnerabilities":
			audit[k+"_count"] = lenOf(v)
		default:
			audit[k] = v
		}
	}
	ab, err := json.Marshal(audit)
	if err != nil {
		return fmt.Errorf("audit data: %w", err)
	}
	return db.appendEventAudited(ctx, tx, Event{Kind: EventBaseImageUpdated, Repository: repo, Actor: actor, Data: b}, ab)
}

// lenOf is the length of a list (a vulnerability list of an event), 0
// for anything else.
func lenOf(v any) int {
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Slice {
		return rv.Len()
	}
	return 0
}

// MissedMove is a base tag that moved after an image built on it was
// stored, and before the graph recorded the image: the move's trigger,
// if it ran first, found nothing built on the tag.
type MissedMove struct {
	// Repository and Tag are the base's; New is where the tag points now.
	Repository string
	Tag        string
	New        digest.Digest
}

// maxMissedMoves bounds the moves one image catches up with.
const maxMissedMoves = 20

// MissedMoves returns the tags through which an image (an index: its
// platforms) is recorded as built directly on its base, that pointed at
// that base when the image was stored and point elsewhere now: each
// should fire for it (FireBaseMoved for that one image), once the graph
// has recorded it. A tag that left the base before the image was stored
// is not among them: the image was built on an old base on purpose, and
// fires when the tag moves next. A move that fired for the image as
// tagged by d (graph_triggers) is not either: retagging an image that
// heard of its base's move queues nothing. Nor is a tag past its
// expiration (liveTag): it is gone, as a deleted one, and points nowhere.
func (db Graph) MissedMoves(ctx context.Context, repo string, d digest.Digest) ([]MissedMove, error) {
	return db.missedMoves(ctx, db.read, repo, d)
}

// MissedMovesIn is MissedMoves in the caller's transaction (the one that
// records the image, completing the graph's job). On PostgreSQL it first
// holds the tags the image is built through (lockBaseTags), so that a
// move of one either commits before it reads them (and is caught up
// with) or after this transaction (and its own job finds the image).
func (db Graph) MissedMovesIn(ctx context.Context, tx Tx, repo string, d digest.Digest) ([]MissedMove, error) {
	if db.dialect == postgres {
		if err := db.lockBaseTags(ctx, tx.tx, repo, d); err != nil {
			return nil, err
		}
	}
	return db.missedMoves(ctx, tx.tx, repo, d)
}

// lockBaseTags locks, FOR SHARE until tx ends, the tags through which an
// image (an index: its platforms) is recorded as built directly on its
// base, in the order of their keys. Under READ COMMITTED, the read of
// where those tags point (missedMoves) could otherwise see a move that
// has not committed as not made: the move commits, its job runs before
// tx commits and does not see the image (DependentBases), and neither
// fires. Held, a move (setTagAs locks the tag FOR UPDATE) waits for tx;
// a move already made waits to commit before the lock is granted, and
// the read after it, a statement of its own, sees where the tag went.
//
// Lock order: tx holds no tag and no manifest before this (its graph
// rows hold their repositories' keys), and after it only enqueues (the
// jobs' advisory locks, which no tag mover holds), so it cannot deadlock
// with a move of one tag. A push moving two of these tags in the
// opposite order, or the deletion of the base's repository (its tags,
// then its row), can deadlock with it; PostgreSQL ends one of the two,
// and its transaction is run again (txRetry). A tag made again after
// being deleted is not locked: there is no row yet.
func (db *core) lockBaseTags(ctx context.Context, tx *sql.Tx, repo string, d digest.Digest) error {
	rows, err := tx.QueryContext(ctx, db.q(`SELECT 1 FROM tags t WHERE EXISTS (SELECT 1 FROM repositories r
		JOIN graph_bases b ON b.repository_id = r.id
		WHERE r.name = ? AND b.digest IN (SELECT CAST(? AS TEXT) UNION SELECT ref_digest FROM manifest_references
			WHERE repository_id = r.id AND manifest_digest = ? AND is_manifest = 1)
		AND b.level = 1 AND b.base_tag <> '' AND b.base_repository_id = t.repository_id AND b.base_tag = t.name)
		ORDER BY t.repository_id, t.name FOR SHARE`), repo, d.String(), d.String())
	if err != nil {
		return fmt.Errorf("lock the base tags of an image: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
	}
	return rows.Err()
}

func (db *core) missedMoves(ctx context.Context, q queryer, repo string, d digest.Digest) ([]MissedMove, error) {
	rows, err := q.QueryContext(ctx, db.q(`SELECT DISTINCT br.name, b.base_tag, t.manifest_digest FROM repositories r
		JOIN graph_bases b ON b.repository_id = r.id
		JOIN manifests m ON m.repository_id = b.repository_id AND m.digest = b.digest
		JOIN repositories br ON br.id = b.base_repository_id
		JOIN tags t ON t.repository_id = b.base_repository_id AND t.name = b.base_tag
		WHERE r.name = ? AND b.digest IN (SELECT CAST(? AS TEXT) UNION SELECT ref_digest FROM manifest_references
			WHERE repository_id = r.id AND manifest_digest = ? AND is_manifest = 1)
		AND b.level = 1 AND b.base_tag <> '' AND t.manifest_digest <> b.base_top AND `+liveTag("t")+` AND NOT `+wasTagged("b")+`
		AND EXISTS (SELECT 1 FROM tag_history h WHERE h.repository_id = b.base_repository_id AND h.tag = b.base_tag AND h.digest = b.base_top
			AND h.from_at <= m.created_at AND h.until_at > m.created_at)
		AND NOT EXISTS (SELECT 1 FROM graph_triggers g WHERE g.repository_id = r.id AND g.digest = ? AND g.new_base = t.manifest_digest)
		ORDER BY br.name, b.base_tag, t.manifest_digest LIMIT CAST(? AS BIGINT)`), repo, d.String(), d.String(), db.now(), d.String(), maxMissedMoves)
	if err != nil {
		return nil, fmt.Errorf("find base moves an image missed: %w", err)
	}
	defer rows.Close()
	var out []MissedMove
	for rows.Next() {
		var mv MissedMove
		var cur string
		if err := rows.Scan(&mv.Repository, &mv.Tag, &cur); err != nil {
			return nil, err
		}
		mv.New = digest.Digest(cur)
		out = append(out, mv)
	}
	return out, rows.Err()
}

// TagHasDependents reports whether images are recorded as built directly
// on a base through its tag: a tag deleted and made again then fires for
// them (FireBaseMoved), a brand new tag costs this one indexed read.
func (db Graph) TagHasDependents(ctx context.Context, repo, tag string) (bool, error) {
	return db.tagHasDependents(ctx, db.read, repo, tag)
}

// TagHasDependentsIn is TagHasDependents in the caller's transaction (the
// graph's feed subscriber's).
func (db Graph) TagHasDependentsIn(ctx context.Context, tx Tx, repo, tag string) (bool, error) {
	return db.tagHasDependents(ctx, tx.tx, repo, tag)
}

func (db *core) tagHasDependents(ctx context.Context, q queryer, repo, tag string) (bool, error) {
	rows, err := q.QueryContext(ctx, db.q(`SELECT 1 FROM graph_bases b JOIN repositories r ON r.id = b.base_repository_id
		WHERE r.name = ? AND b.base_tag = ? AND b.level = 1 LIMIT 1`), repo, tag)
	if err != nil {
		return false, fmt.Errorf("find dependents of a tag: %w", err)
	}
	defer rows.Close()
	found := rows.Next()
	return found, rows.Err()
}

// tagsOf returns the tags pointing at a digest, but those past their
// expiration (liveTag).
func (db *core) tagsOf(ctx context.Context, tx *sql.Tx, repoID int64, d digest.Digest) ([]string, error) {
	rows, err := tx.QueryContext(ctx, db.q("SELECT name FROM tags WHERE repository_id = ? AND manifest_digest = ? AND "+liveTag("")+" ORDER BY name"),
		repoID, d.String(), db.now())
	if err != nil {
		return nil, fmt.Errorf("list tags: %w", err)
	}
	return scanStrings(rows)
}
