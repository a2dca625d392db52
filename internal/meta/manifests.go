package meta

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// Manifest is a stored manifest.
type Manifest struct {
	Digest       digest.Digest
	MediaType    string
	ArtifactType string
	Size         int64
	Content      []byte
	Subject      digest.Digest
	Annotations  map[string]string
	CreatedAt    time.Time
	// ConfirmedAt is when a client last confirmed the stored manifest
	// (GetManifest only; zero: never).
	ConfirmedAt time.Time
	// Held is true while a gate holds the manifest (a candidate, or what
	// only candidates reach): readers without the gate's check permission
	// must not see it (GetManifest, Referrers).
	Held bool
}

// Ref is something a manifest refers to that must exist in its repository:
// a blob (config, layer) or, for an index, a child manifest.
type Ref struct {
	Digest     digest.Digest
	IsManifest bool
}

// ErrManifestNotFound is returned for an unknown manifest or tag.
var ErrManifestNotFound = fmt.Errorf("manifest %w", ErrNotFound)

// MissingRefsError lists the references of a manifest that the repository
// does not have: the first few of them, and how many in all.
type MissingRefsError struct {
	Missing []Ref
	Count   int
}

// maxMissingNamed bounds the references a MissingRefsError names (a
// manifest may list tens of thousands; the answer stays small).
const maxMissingNamed = 10

func (e *MissingRefsError) Error() string {
	var parts []string
	for _, r := range e.Missing {
		kind := "blob"
		if r.IsManifest {
			kind = "manifest"
		}
		parts = append(parts, kind+" "+r.Digest.String())
	}
	msg := "manifest references unknown " + strings.Join(parts, ", ")
	if e.Count > len(e.Missing) {
		msg += fmt.Sprintf(" and %d more (%d unknown in all)", e.Count-len(e.Missing), e.Count)
	}
	return msg
}

// PutManifest is a manifest push.
type PutManifest struct {
	Repository string
	Manifest   Manifest
	Refs       []Ref
	Tag        string // optional
	// MoreTags are further tags set in the same transaction (an import
	// with several target tags announces them in one repo_push).
	MoreTags []string
	Actor    string
	// Create says how to create the repository if the push is its first
	// write (nil: private, no permissions).
	Create *RepoCreate
	// Generated marks content Berth made itself (a computed SBOM): it is
	// stored without a repo_push event (so no subscriber of the feed, the
	// scanner included, reacts to it).
	Generated bool
	// DeletedWithSubject makes the manifest go when its subject is deleted
	// from the repository (what Berth derived from the subject, like the
	// scanner's SBOM; referrers that clients push stay, as the distribution
	// spec allows). Set on the push that stores the manifest.
	DeletedWithSubject bool
	// LinkBlobs are stored blobs linked to the repository in the same
	// transaction, before the references are checked (content Berth
	// generated and wrote to storage itself).
	LinkBlobs []Blob
	// ExpiresAt, if set, is when the tags the push sets expire (Quay's
	// quay.expires-after label).
	ExpiresAt time.Time
	// ConfirmBefore, if set, confirms a manifest the repository stores
	// already and that was neither stored nor confirmed since then (half
	// garbage collection's delay ago): the client pushing it again will
	// name it next (in an index), so collection spares it for another
	// delay.
	ConfirmBefore time.Time
	// renew makes the push restart the life of a tag that points at the
	// manifest already (PutManifest, a client's push: setTagAs).
	renew bool
}

// pushEvent is the data of a repo_push event. NewManifest says the push
// stored the manifest in the repository (rather than only moved tags to
// it): the scanner's subscriber scans such manifests.
type pushEvent struct {
	Digest      string   `json:"digest"`
	MediaType   string   `json:"media_type"`
	Size        int64    `json:"size"`
	UpdatedTags []string `json:"updated_tags"`
	NewManifest bool     `json:"new_manifest"`
	// Previous is the digest each updated tag pointed to before, for the
	// tags that existed (subscribers reading moves: the base-image graph).
	Previous map[string]string `json:"previous,omitempty"`
}

// PutManifest stores a manifest, its references, and its tag in one
// transaction with its repo_push event. Every reference must already be in
// the repository; otherwise nothing changes and a *MissingRefsError is
// returned.
//
// A tag that points at the manifest already starts a new life, as if the
// push had moved it (setTagAs), but no repo_push announces it: no tag
// moved. The pull-through cache (PutProxyManifest) and content Berth
// derives (PutManifestIn) store without it.
func (db Manifests) PutManifest(ctx context.Context, p PutManifest) error {
	p.renew = true
	return db.putManifest(ctx, p, true, nil)
}

// putManifest is PutManifest, optionally without the reference check (the
// pull-through cache stores references it fetches later) and with a hook
// run for every tag set, in the transaction.
func (db *core) putManifest(ctx context.Context, p PutManifest, checkRefs bool, onTag func(tx *sql.Tx, repoID int64, tag string) error) error {
	return db.quotaRefused(ctx, p, db.tx(ctx, func(tx *sql.Tx) error {
		return db.putManifestTx(ctx, tx, p, checkRefs, onTag)
	}))
}

// PutManifestIn is PutManifest inside the caller's transaction: content
// Berth derives (a scan's SBOM) commits with what it was derived from. A
// quota refusal is returned as it is, without the quota_error event
// PutManifest records in a transaction of its own.
func (db Manifests) PutManifestIn(ctx context.Context, tx Tx, p PutManifest) error {
	return db.putManifestTx(ctx, tx.tx, p, true, nil)
}

// putManifestTx is the body of putManifest's transaction.
func (db *core) putManifestTx(ctx context.Context, tx *sql.Tx, p PutManifest, checkRefs bool, onTag func(tx *sql.Tx, repoID int64, tag string) error) error {
	m := p.Manifest
	w := Writer{Actor: p.Actor, Create: p.Create}
	repoID, err := db.ensureRepository(ctx, tx, p.Repository, w)
	if err != nil {
		return err
	}
	// The gate first (FOR SHARE on PostgreSQL), then the guarded tags'
	// locks, before any manifest row (the lock order at gateLockClass):
	// DeleteGate, PutGate and Promote take them in this order too.
	guarded, gated, err := db.guardedTags(ctx, tx, repoID, append([]string{p.Tag}, p.MoreTags...)...)
	if err != nil {
		return err
	}
	for _, b := range p.LinkBlobs {
		if err := db.linkBlob(ctx, tx, p.Repository, b, UploadClaim{}, w); err != nil {
			return err
		}
	}
	if checkRefs {
		if err := db.checkRefs(ctx, tx, repoID, p.Refs, gated && publishes(guarded, m, p)); err != nil {
			return err
		}
	}
	var annotations any
	if len(m.Annotations) > 0 {
		b, _ := json.Marshal(m.Annotations)
		annotations = string(b)
	}
	columns, values := "", ""
	args := []any{repoID, m.Digest.String(), m.MediaType, m.ArtifactType, int64(len(m.Content)), m.Content, nil, annotations, db.now(), boolInt(p.DeletedWithSubject)}
	if m.Subject != "" {
		// With whether a release of the subject publishes it (release).
		columns, values = ", describes", ", ?"
		args[6] = m.Subject.String()
		args = append(args, boolInt(describes(m.MediaType, m.Content)))
	}
	res, err := tx.ExecContext(ctx, db.q(`INSERT INTO manifests (repository_id, digest, media_type, artifact_type, size, content, subject, annotations, created_at, deleted_with_subject`+columns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?`+values+`) ON CONFLICT (repository_id, digest) DO NOTHING`), args...)
	if err != nil {
		return fmt.Errorf("store manifest: %w", err)
	}
	created, _ := res.RowsAffected()
	if created == 0 && !p.ConfirmBefore.IsZero() {
		if err := db.confirmManifest(ctx, tx, repoID, m.Digest, p.ConfirmBefore); err != nil {
			return err
		}
	}
	if created == 0 && db.dialect == postgres {
		// The manifest exists: hold it until this push commits, so
		// that a concurrent delete waits for the tag set here (and a
		// delete that won meanwhile makes this push store it again);
		// gated, as releasing it would (manifestLock).
		var one int
		err := tx.QueryRowContext(ctx, "SELECT 1 FROM manifests WHERE repository_id = $1 AND digest = $2"+db.manifestLock(gated), repoID, m.Digest.String()).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return errRetry
		}
		if err != nil {
			return fmt.Errorf("lock manifest: %w", err)
		}
	}
	if created == 1 {
		if err := db.insertRefs(ctx, tx, repoID, m.Digest, p.Refs); err != nil {
			return err
		}
		// Namespace quota: count the new references, refuse past
		// the Reject limit (quota_accounting.go).
		if err := db.quotaRef(ctx, tx, p, repoID, !checkRefs); err != nil {
			return err
		}
	}
	if !p.ExpiresAt.IsZero() {
		// The tag policies' lock, shared, before any tag's row: a
		// policy change takes it first, then writes tags' rows.
		if err := db.lockTagPolicies(ctx, tx, p.Repository, false); err != nil {
			return err
		}
	}
	var candidates []candidateArrival
	tags := []string{}
	var previous map[string]string
	published := false // an unguarded tag of a gated repository publishes the manifest
	for _, tag := range append([]string{p.Tag}, p.MoreTags...) {
		if tag == "" {
			continue
		}
		if gated && guardsFor(guarded, tag, m.MediaType, m.Content) {
			id, err := db.addCandidate(ctx, tx, repoID, tag, m.Digest, p.Actor)
			if err != nil {
				return err
			}
			if id != 0 {
				candidates = append(candidates, candidateArrival{id: id, tag: tag})
			}
			continue
		}
		published = true
		prev, moved, err := db.setTagAs(ctx, tx, repoID, tag, m.Digest, p.renew)
		if err == nil && !p.ExpiresAt.IsZero() {
			err = db.expireFromLabel(ctx, tx, repoID, tag, p.ExpiresAt)
		}
		if err != nil {
			return err
		}
		if moved {
			tags = append(tags, tag)
			if prev != "" {
				if previous == nil {
					previous = map[string]string{}
				}
				previous[tag] = prev
			}
		}
		if onTag != nil {
			if err := onTag(tx, repoID, tag); err != nil {
				return err
			}
		}
	}
	if gated {
		if err := db.gateArrival(ctx, tx, repoID, m, created == 1, published, p.Tag != "" || len(p.MoreTags) > 0); err != nil {
			return err
		}
	}
	for _, c := range candidates {
		if err := db.appendEvent(ctx, tx, Event{Kind: EventPromotionPending, Repository: p.Repository, Actor: p.Actor,
			Data: mustJSON(pendingEvent{Digest: m.Digest.String(), MediaType: m.MediaType, Size: int64(len(m.Content)), Tag: c.tag,
				Tags: []string{c.tag}, Candidate: c.id, NewManifest: created == 1})}); err != nil {
			return err
		}
	}
	if (created == 0 || len(candidates) > 0) && len(tags) == 0 || p.Generated {
		// Nothing observable changed, announced by its maker, or a
		// candidate announced by promotion_pending (its repo_push
		// comes with its promotion).
		return nil
	}
	return db.appendEvent(ctx, tx, Event{Kind: EventRepoPush, Repository: p.Repository, Actor: p.Actor,
		Data: mustJSON(pushEvent{Digest: m.Digest.String(), MediaType: m.MediaType, Size: int64(len(m.Content)), UpdatedTags: tags,
			NewManifest: created == 1, Previous: previous})})
}

// candidateArrival is a candidate a push made.
type candidateArrival struct {
	id  int64
	tag string
}

// pendingEvent is the data of a promotion_pending event; its digest,
// media_type and new_manifest fields are read as a repo_push's by the
// scanner and the base-image graph, which index candidates too.
type pendingEvent struct {
	Digest      string   `json:"digest"`
	MediaType   string   `json:"media_type"`
	Size        int64    `json:"size"`
	Tag         string   `json:"tag"`
	Tags        []string `json:"tags"`
	Candidate   int64    `json:"candidate"`
	NewManifest bool     `json:"new_manifest"`
}

// gateArrival applies a gated repository's holding rule to a manifest
// just stored or tagged: published by an unguarded tag, it is released
// with all it reaches; new and otherwise, it is held if it came for a
// guarded tag or by digest (it may be a platform of a candidate to come),
// except a description (describes) of a stored readable subject (a
// signature of a published image): a subject publishes nothing else, and
// a description held for want of its subject is released with it.
func (db *core) gateArrival(ctx context.Context, tx *sql.Tx, repoID int64, m Manifest, created, published, tagged bool) error {
	if published {
		return db.release(ctx, tx, repoID, m.Digest)
	}
	if !created {
		return nil
	}
	if !tagged && m.Subject != "" && describes(m.MediaType, m.Content) {
		readable, err := db.readable(ctx, tx, repoID, m.Subject.String())
		if err != nil || readable {
			return err
		}
	}
	return db.hold(ctx, tx, repoID, m.Digest)
}

// insertRefs records a manifest's references, many rows per statement.
func (db *core) insertRefs(ctx context.Context, tx *sql.Tx, repoID int64, d digest.Digest, refs []Ref) error {
	const perStatement = 200 // 4 parameters each: well under SQLite's and PostgreSQL's limits
	for start := 0; start < len(refs); start += perStatement {
		batch := refs[start:min(start+perStatement, len(refs))]
		args := make([]any, 0, 4*len(batch))
		for _, r := range batch {
			args = append(args, repoID, d.String(), r.Digest.String(), boolInt(r.IsManifest))
		}
		values := strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?), ", len(batch)), ", ")
		if _, err := tx.ExecContext(ctx, db.q(`INSERT INTO manifest_references (repository_id, manifest_digest, ref_digest, is_manifest)
			VALUES `+values+` ON CONFLICT DO NOTHING`), args...); err != nil {
			return fmt.Errorf("store manifest references: %w", err)
		}
	}
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// publishes reports whether a push into a gated repository tags its
// manifest with a tag the gate does not guard, and so releases it with
// the manifests it references (gateArrival).
func publishes(guarded []string, m Manifest, p PutManifest) bool {
	for _, tag := range append([]string{p.Tag}, p.MoreTags...) {
		if tag != "" && !guardsFor(guarded, tag, m.MediaType, m.Content) {
			return true
		}
	}
	return false
}

// refBatch is how many digests one reference query looks up.
const refBatch = 500

// checkRefs verifies every reference exists in the repository, a batch of
// digests per query. On PostgreSQL the rows found are locked FOR SHARE so
// that a concurrent unlink or delete waits for this push to commit (and
// then sees its references and refuses). A push that may release the
// manifests it references (mayRelease: it publishes its manifest in a
// gated repository) locks them FOR KEY SHARE instead, which still makes a
// delete wait but not release's update (UPDATE manifests SET held = 0
// takes FOR NO KEY UPDATE): two index pushes publishing one held platform
// each held it FOR SHARE, and each then waited for the other's share lock
// to release it; and a promotion (or retag) of an index that had locked
// the index and then released its platforms waited for a push of the
// index that held the platforms FOR SHARE and waited for the index's row
// (deadlocks, detected after a second). release updates what it reaches
// in digest order, so such updates wait for each other in one order.
func (db *core) checkRefs(ctx context.Context, tx *sql.Tx, repoID int64, refs []Ref, mayRelease bool) error {
	lock, manifestLock := "", ""
	if db.dialect == postgres {
		lock, manifestLock = " FOR SHARE", " FOR SHARE"
		if mayRelease {
			manifestLock = " FOR KEY SHARE"
		}
	}
	var blobs, manifests []Ref
	for _, r := range refs {
		if r.IsManifest {
			manifests = append(manifests, r)
		} else {
			blobs = append(blobs, r)
		}
	}
	missing := &MissingRefsError{}
	for _, group := range []struct {
		refs        []Ref
		query, tail string
	}{
		{blobs, "SELECT digest FROM repository_blobs WHERE repository_id = ? AND digest IN (", ")" + lock},
		{manifests, "SELECT digest FROM manifests WHERE repository_id = ? AND digest IN (", ")" + manifestLock},
	} {
		for start := 0; start < len(group.refs); start += refBatch {
			batch := group.refs[start:min(start+refBatch, len(group.refs))]
			args := make([]any, 0, len(batch)+1)
			args = append(args, repoID)
			for _, r := range batch {
				args = append(args, r.Digest.String())
			}
			rows, err := tx.QueryContext(ctx, db.q(group.query+placeholders(len(batch))+group.tail), args...)
			if err != nil {
				return fmt.Errorf("check manifest references: %w", err)
			}
			found, err := scanStrings(rows)
			if err != nil {
				return fmt.Errorf("check manifest references: %w", err)
			}
			have := make(map[string]bool, len(found))
			for _, d := range found {
				have[d] = true
			}
			for _, r := range batch {
				if !have[r.Digest.String()] {
					missing.Count++
					if len(missing.Missing) < maxMissingNamed {
						missing.Missing = append(missing.Missing, r)
					}
				}
			}
		}
	}
	if missing.Count > 0 {
		return missing
	}
	return nil
}

// GetManifest returns a manifest by tag or digest (exactly one set). With
// withContent false, Content is left nil (for HEAD). A tag past its
// expiration is not found (liveTag).
//
// ConfirmedAt is when a client last confirmed it (ConfirmManifest).
func (db Manifests) GetManifest(ctx context.Context, repo, tag string, d digest.Digest, withContent bool) (Manifest, error) {
	content := "NULL"
	if withContent {
		content = "m.content"
	}
	ctx = db.pointLookup(ctx)
	var row *sql.Row
	if tag != "" {
		row = db.read.QueryRowContext(ctx, db.q(`SELECT m.digest, m.media_type, m.artifact_type, m.size, m.held, m.created_at, m.confirmed_at, `+content+` FROM repositories r
			JOIN tags t ON t.repository_id = r.id
			JOIN manifests m ON m.repository_id = t.repository_id AND m.digest = t.manifest_digest
			WHERE r.name = ? AND t.name = ? AND `+liveTag("t")), repo, tag, db.now())
	} else {
		row = db.read.QueryRowContext(ctx, db.q(`SELECT m.digest, m.media_type, m.artifact_type, m.size, m.held, m.created_at, m.confirmed_at, `+content+` FROM repositories r
			JOIN manifests m ON m.repository_id = r.id
			WHERE r.name = ? AND m.digest = ?`), repo, d.String())
	}
	var m Manifest
	var dg string
	var held int
	var created, confirmed int64
	err := row.Scan(&dg, &m.MediaType, &m.ArtifactType, &m.Size, &held, &created, &confirmed, &m.Content)
	if errors.Is(err, sql.ErrNoRows) {
		return Manifest{}, ErrManifestNotFound
	}
	if err != nil {
		return Manifest{}, fmt.Errorf("get manifest: %w", err)
	}
	m.Digest, m.Held, m.CreatedAt = digest.Digest(dg), held == 1, fromMicros(created)
	if confirmed > 0 {
		m.ConfirmedAt = fromMicros(confirmed)
	}
	return m, nil
}

// ConfirmManifest records that a client was told a manifest of the
// repository exists (a GET or HEAD by digest) unless it was stored or
// confirmed after stale: garbage collection spares it for its delay from
// now (the client may name it in an index next, without pushing it). It
// reports whether the manifest is (still) stored.
func (db Manifests) ConfirmManifest(ctx context.Context, repo string, d digest.Digest, stale time.Time) (bool, error) {
	res, err := db.write.ExecContext(ctx, db.q(`UPDATE manifests SET confirmed_at = ?
		WHERE repository_id = (SELECT id FROM repositories WHERE name = ?) AND digest = ? AND created_at < ? AND confirmed_at < ?`),
		db.now(), repo, d.String(), stale.UnixMicro(), stale.UnixMicro())
	if err != nil {
		return false, fmt.Errorf("confirm manifest: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return true, nil
	}
	_, err = db.GetManifest(ctx, repo, "", d, false)
	if errors.Is(err, ErrManifestNotFound) {
		return false, nil
	}
	return err == nil, err
}

// confirmManifest confirms, in a push's transaction, a manifest the
// repository stores already, as ConfirmManifest does.
func (db *core) confirmManifest(ctx context.Context, tx *sql.Tx, repoID int64, d digest.Digest, stale time.Time) error {
	if _, err := tx.ExecContext(ctx, db.q(`UPDATE manifests SET confirmed_at = ?
		WHERE repository_id = ? AND digest = ? AND created_at < ? AND confirmed_at < ?`), db.now(), repoID, d.String(), stale.UnixMicro(), stale.UnixMicro()); err != nil {
		return fmt.Errorf("confirm manifest: %w", err)
	}
	return nil
}

// DeleteManifest removes a manifest from a repository with every tag that
// points at it, and appends a manifest_deleted event naming those tags.
func (db Manifests) DeleteManifest(ctx context.Context, repo string, d digest.Digest, actor string) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		var repoID, gated int64
		if err := tx.QueryRowContext(ctx, db.q("SELECT id, gated FROM repositories WHERE name = ?"), repo).Scan(&repoID, &gated); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return ErrManifestNotFound
			}
			return fmt.Errorf("look up repository: %w", err)
		}
		if err := db.lockCandidatesOf(ctx, tx, repoID, gated == 1, d); err != nil {
			return err // the gate and its tags before the manifest (gate_locks.go)
		}
		// Then the links of what it and the referrers going with it
		// reference, dated anew (waiting for a push, a HEAD or an upload
		// holding one), before the manifest's row and the namespace's
		// usage row: a push locks them in that order. Nothing is dated
		// if it is not stored; a delete refused below rolls it back.
		if err := db.restartLinkCap(ctx, tx, repoID, d.String(), true, true); err != nil {
			return err
		}
		// Then the manifest (PostgreSQL): an index push that lists it
		// holds it FOR SHARE until it commits, so the parent check below,
		// a statement later, sees that index. SQLite serializes writers.
		lock := ""
		if db.dialect == postgres {
			lock = " FOR UPDATE"
		}
		var one int
		err := tx.QueryRowContext(ctx, db.q("SELECT 1 FROM manifests WHERE repository_id = ? AND digest = ?"+lock), repoID, d.String()).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrManifestNotFound
		}
		if err != nil {
			return fmt.Errorf("look up manifest: %w", err)
		}
		if err := db.refusedIfReferenced(ctx, tx, repoID, d, "manifest"); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, db.q("SELECT name FROM tags WHERE repository_id = ? AND manifest_digest = ? ORDER BY name"), repoID, d.String())
		if err != nil {
			return fmt.Errorf("list tags of manifest: %w", err)
		}
		tags, err := scanStrings(rows)
		if err != nil {
			return fmt.Errorf("list tags of manifest: %w", err)
		}
		if err := db.firstImmutable(ctx, tx, repoID, tags); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, db.q(`UPDATE gate_candidates SET state = ?, decided_at = ? WHERE repository_id = ? AND digest = ? AND state IN ('pending', 'blocked')`),
			CandidateWithdrawn, db.now(), repoID, d.String()); err != nil {
			return fmt.Errorf("withdraw candidates: %w", err)
		}
		if _, err := tx.ExecContext(ctx, db.q("DELETE FROM tags WHERE repository_id = ? AND manifest_digest = ?"), repoID, d.String()); err != nil {
			return fmt.Errorf("delete tags: %w", err)
		}
		if err := db.endTagHistory(ctx, tx, repoID, tags...); err != nil {
			return err
		}
		if err := db.quotaUnref(ctx, tx, repoID, repo, d.String()); err != nil { // namespace quota
			return err
		}
		if _, err := tx.ExecContext(ctx, db.q("DELETE FROM manifest_references WHERE repository_id = ? AND manifest_digest = ?"), repoID, d.String()); err != nil {
			return fmt.Errorf("delete manifest references: %w", err)
		}
		res, err := tx.ExecContext(ctx, db.q("DELETE FROM manifests WHERE repository_id = ? AND digest = ?"), repoID, d.String())
		if err != nil {
			return fmt.Errorf("delete manifest: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrManifestNotFound
		}
		// What was stored to go with it (the scanner's SBOM) goes too,
		// unless a tag or an index keeps it.
		if err := db.deleteGeneratedReferrers(ctx, tx, repoID, repo, d); err != nil {
			return err
		}
		return db.appendEvent(ctx, tx, Event{Kind: EventManifestDeleted, Repository: repo, Actor: actor,
			Data: mustJSON(map[string]any{"digest": d.String(), "tags": tags})})
	})
}

// refusedIfReferenced returns an *InUseError if a manifest of the
// repository references d (an index listing it as a child, an image
// listing it as a layer or config).
func (db *core) refusedIfReferenced(ctx context.Context, tx *sql.Tx, repoID int64, d digest.Digest, kind string) error {
	const named = 5
	rows, err := tx.QueryContext(ctx, db.q(`SELECT manifest_digest FROM manifest_references WHERE repository_id = ? AND ref_digest = ?
		ORDER BY manifest_digest LIMIT CAST(? AS BIGINT)`), repoID, d.String(), named+1)
	if err != nil {
		return fmt.Errorf("find references: %w", err)
	}
	parents, err := scanStrings(rows)
	if err != nil {
		return fmt.Errorf("find references: %w", err)
	}
	if len(parents) == 0 {
		return nil
	}
	e := &InUseError{What: kind + " " + d.String(), Count: len(parents)}
	if len(parents) > named {
		if err := tx.QueryRowContext(ctx, db.q("SELECT COUNT(*) FROM manifest_references WHERE repository_id = ? AND ref_digest = ?"),
			repoID, d.String()).Scan(&e.Count); err != nil {
			return fmt.Errorf("count references: %w", err)
		}
		parents = parents[:named]
	}
	for _, p := range parents {
		e.References = append(e.References, digest.Digest(p))
	}
	return e
}
