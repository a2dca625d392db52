package meta

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/oci"
)

// Gates are the gates of repositories: the tags each guards, its
// candidates, the checks posted for them, and promotion.
type Gates struct{ *core }

// Gates returns the gate store.
func (db *DB) Gates() Gates { return Gates{db.core} }

// Event kinds of gates. promotion_pending, promotion_succeeded and
// promotion_blocked are delivered to notifications; gate_check and
// vulnerability_data_updated are for the gate's own subscriber (a check
// was posted, advisories were imported: candidates are evaluated again).
const (
	EventPromotionPending   = "promotion_pending"
	EventPromotionSucceeded = "promotion_succeeded"
	EventPromotionBlocked   = "promotion_blocked"
	EventGateCheck          = "gate_check"
	EventGateChanged        = "gate_changed"
	EventGraphIndexed       = "graph_indexed"
	EventVulnDataUpdated    = "vulnerability_data_updated"
)

// Candidate states. Pending and blocked candidates are live: a new
// input may promote them; the others are final.
const (
	CandidatePending    = "pending"
	CandidateBlocked    = "blocked"
	CandidatePromoted   = "promoted"
	CandidateSuperseded = "superseded"
	CandidateWithdrawn  = "withdrawn"
	// CandidateRejected records a digest a guarded tag was rolled back
	// from (a restore): pushes and mirror syncs do not propose it for that
	// tag again; only a manual promotion does.
	CandidateRejected = "rejected"
)

// ErrGuardedTag is returned by MoveTag when a gate guards the tag: the
// digest became (or already was) the tag's candidate, and the tag did not
// move. Nothing was refused: the transaction committed.
var ErrGuardedTag = errors.New("the tag is guarded by the repository's gate: the manifest is its candidate until the gate promotes it")

// ErrRolledBack is returned by MoveTag when a gate guards the tag and the
// digest was rolled back from it: it is not proposed again (a manual
// promotion may bring it back). Nothing changed.
var ErrRolledBack = errors.New("the tag is guarded by the repository's gate and was rolled back from this manifest: it is not proposed again; promote it manually to bring it back")

// ErrGateNotFound is returned for a repository without a gate.
var ErrGateNotFound = fmt.Errorf("gate %w", ErrNotFound)

// ErrCandidateNotFound is returned for a candidate that does not exist.
var ErrCandidateNotFound = fmt.Errorf("candidate %w", ErrNotFound)

// ErrCandidateNotLive is returned when a candidate to promote or decide
// is no longer pending or blocked (promoted, superseded by a newer one,
// withdrawn).
var ErrCandidateNotLive = errors.New("the candidate is no longer pending: it was promoted, superseded by a newer candidate, or withdrawn")

// ErrGateChanged refuses a promotion decided under a gate configuration
// that was replaced or deleted since: the change re-evaluates the
// candidate under the new one (gate_changed), or withdrew it.
var ErrGateChanged = errors.New("the gate changed since the candidate was evaluated")

// ImmutableTagError is returned when a change would move or delete an
// immutable tag.
type ImmutableTagError struct {
	Tag    string
	Reason string
}

func (e *ImmutableTagError) Error() string {
	return fmt.Sprintf("tag %q is immutable (%s): it cannot be moved or deleted", e.Tag, e.Reason)
}

// Gate is a repository's gate as the store keeps it: the tag patterns it
// guards and who may check, which the store applies itself, and the rest
// of its configuration (Config, owned by internal/gate).
type Gate struct {
	Repository string
	Tags       []string
	Checkers   []string
	Config     json.RawMessage
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// GuardsTag reports whether a gate with these patterns guards a tag:
// a pattern is a path.Match glob ("15-alpine", "15-*", "*"). cosign's
// signature, attestation and SBOM tags (sha256-<hex>.sig, .att, .sbom)
// are not guarded for what describes content (see guardsFor): they do
// not publish it.
func GuardsTag(patterns []string, tag string) bool {
	return !isCosignTag(tag) && matchesTag(patterns, tag)
}

// guardsFor is GuardsTag for a manifest about to be tagged: a cosign tag
// that a pattern matches is guarded for anything but a description (an
// image, an index that lists a candidate), so that such a tag cannot
// publish a candidate or new content the gate's checks never saw.
func guardsFor(patterns []string, tag, mediaType string, content []byte) bool {
	if !matchesTag(patterns, tag) {
		return false
	}
	return !isCosignTag(tag) || !describes(mediaType, content)
}

// describes reports whether a manifest only describes other content (a
// signature, an attestation, an SBOM: oci.Manifest.Describes); content
// that does not parse does not.
func describes(mediaType string, content []byte) bool {
	m, err := oci.ParseManifest(content, mediaType)
	return err == nil && m.Describes()
}

// isCosignTag reports whether a tag has the form of cosign's signature,
// attestation and SBOM tags.
func isCosignTag(tag string) bool {
	return strings.HasPrefix(tag, "sha256-") && (strings.HasSuffix(tag, ".sig") || strings.HasSuffix(tag, ".att") || strings.HasSuffix(tag, ".sbom"))
}

func matchesTag(patterns []string, tag string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, tag); ok {
			return true
		}
	}
	return false
}

// Candidate is content that arrived for a guarded tag.
type Candidate struct {
	ID          int64
	Repository  string
	Tag         string
	Digest      digest.Digest
	State       string
	Reasons     []string
	Decision    json.RawMessage
	RollbackTag string
	Actor       string
	CreatedAt   time.Time
	DecidedAt   time.Time
}

// Live reports whether the candidate may still be promoted.
func (c Candidate) Live() bool { return c.State == CandidatePending || c.State == CandidateBlocked }

// Check is a result posted for a manifest.
type Check struct {
	Name       string    `json:"name"`
	Status     string    `json:"status"`
	DetailsURL string    `json:"details_url"`
	Summary    string    `json:"summary"`
	Actor      string    `json:"actor"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// PutGate creates or replaces a repository's gate. The repository must
// exist (ErrRepositoryNotFound).
func (db Gates) PutGate(ctx context.Context, g Gate) error {
	tags, _ := json.Marshal(g.Tags)
	return db.tx(ctx, func(tx *sql.Tx) error {
		repoID, err := db.repoID(ctx, tx, g.Repository)
		if err != nil {
			return err
		}
		ts := db.now()
		if _, err := tx.ExecContext(ctx, db.q(`INSERT INTO gates (repository_id, tags, config, created_at, updated_at) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (repository_id) DO UPDATE SET tags = excluded.tags, config = excluded.config, updated_at = excluded.updated_at`),
			repoID, string(tags), string(g.Config), ts, ts); err != nil {
			return fmt.Errorf("store gate: %w", err)
		}
		// gate_checkers' names are for replicas of an older version
		// during an upgrade (migration 29).
		if _, err := tx.ExecContext(ctx, db.q("UPDATE repositories SET gated = 1, gate_checkers = ? WHERE id = ?"),
			strings.Join(g.Checkers, "\n"), repoID); err != nil {
			return fmt.Errorf("flag gated repository: %w", err)
		}
		if err := db.setCheckers(ctx, tx, repoID, g.Checkers); err != nil {
			return err
		}
		// Candidates for tags the gate no longer guards are withdrawn;
		// the others are evaluated again under the new configuration.
		rows, err := tx.QueryContext(ctx, db.q("SELECT id, tag FROM gate_candidates WHERE repository_id = ? AND state IN ('pending', 'blocked')"), repoID)
		if err != nil {
			return fmt.Errorf("list live candidates: %w", err)
		}
		var unguarded []int64
		for rows.Next() {
			var id int64
			var tag string
			if err := rows.Scan(&id, &tag); err != nil {
				rows.Close()
				return fmt.Errorf("list live candidates: %w", err)
			}
			if !matchesTag(g.Tags, tag) {
				unguarded = append(unguarded, id)
			}
		}
		rows.Close()
		for _, id := range unguarded {
			if _, err := tx.ExecContext(ctx, db.q("UPDATE gate_candidates SET state = ?, decided_at = ? WHERE id = ?"), CandidateWithdrawn, ts, id); err != nil {
				return fmt.Errorf("withdraw candidate: %w", err)
			}
		}
		return db.appendEvent(ctx, tx, Event{Kind: EventGateChanged, Repository: g.Repository, Data: mustJSON(map[string]any{"tags": g.Tags})})
	})
}

// setCheckers records a gate's checkers by account id: a name no user or
// robot has is refused (*UnknownCheckerError).
func (db Gates) setCheckers(ctx context.Context, tx *sql.Tx, repoID int64, names []string) error {
	if _, err := tx.ExecContext(ctx, db.q("DELETE FROM gate_checkers WHERE repository_id = ?"), repoID); err != nil {
		return fmt.Errorf("replace gate checkers: %w", err)
	}
	// On PostgreSQL the account is read FOR KEY SHARE: one deleted
	// meanwhile waits, instead of failing the insert on its key.
	lock := ""
	if db.dialect == postgres {
		lock = " FOR KEY SHARE"
	}
	for _, name := range names {
		var id int64
		err := tx.QueryRowContext(ctx, db.q("SELECT id FROM users WHERE username = ?"+lock), name).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return &UnknownCheckerError{Name: name}
		}
		if err != nil {
			return fmt.Errorf("look up gate checker: %w", err)
		}
		if _, err := tx.ExecContext(ctx, db.q("INSERT INTO gate_checkers (repository_id, user_id) VALUES (?, ?) ON CONFLICT DO NOTHING"), repoID, id); err != nil {
			return fmt.Errorf("record gate checker: %w", err)
		}
	}
	return nil
}

// UnknownCheckerError is a gate checker that names no user or robot.
type UnknownCheckerError struct{ Name string }

func (e *UnknownCheckerError) Error() string {
	return fmt.Sprintf("checkers: no user or robot is named %q", e.Name)
}

// GetGate returns a repository's gate or ErrGateNotFound. Its Checkers are
// the accounts it names now, by their names: an account deleted since is
// not among them.
func (db Gates) GetGate(ctx context.Context, repo string) (Gate, error) {
	var tags, cfg string
	var repoID, created, updated int64
	err := db.read.QueryRowContext(ctx, db.q(`SELECT g.tags, g.config, r.id, g.created_at, g.updated_at FROM gates g
		JOIN repositories r ON r.id = g.repository_id WHERE r.name = ?`), repo).Scan(&tags, &cfg, &repoID, &created, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return Gate{}, ErrGateNotFound
	}
	if err != nil {
		return Gate{}, fmt.Errorf("read gate: %w", err)
	}
	g := Gate{Repository: repo, Config: json.RawMessage(cfg), CreatedAt: fromMicros(created), UpdatedAt: fromMicros(updated)}
	if err := json.Unmarshal([]byte(tags), &g.Tags); err != nil {
		return Gate{}, fmt.Errorf("read gate tags: %w", err)
	}
	rows, err := db.read.QueryContext(ctx, db.q(`SELECT u.username FROM gate_checkers c JOIN users u ON u.id = c.user_id
		WHERE c.repository_id = ? ORDER BY u.username`), repoID)
	if err != nil {
		return Gate{}, fmt.Errorf("read gate checkers: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return Gate{}, fmt.Errorf("read gate checkers: %w", err)
		}
		g.Checkers = append(g.Checkers, name)
	}
	if err := rows.Err(); err != nil {
		return Gate{}, fmt.Errorf("read gate checkers: %w", err)
	}
	return g, nil
}

// DeleteGate removes a repository's gate: what it held becomes readable,
// its live candidates are withdrawn (their tags stay where they are).
func (db Gates) DeleteGate(ctx context.Context, repo string) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		repoID, err := db.repoID(ctx, tx, repo)
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, db.q("DELETE FROM gates WHERE repository_id = ?"), repoID)
		if err != nil {
			return fmt.Errorf("delete gate: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrGateNotFound
		}
		for _, stmt := range []string{
			"UPDATE repositories SET gated = 0, gate_checkers = '' WHERE id = ?",
			"DELETE FROM gate_checkers WHERE repository_id = ?",
			"UPDATE manifests SET held = 0 WHERE repository_id = ? AND held = 1",
		} {
			if _, err := tx.ExecContext(ctx, db.q(stmt), repoID); err != nil {
				return fmt.Errorf("release gated repository: %w", err)
			}
		}
		_, err = tx.ExecContext(ctx, db.q(`UPDATE gate_candidates SET state = ?, decided_at = ? WHERE repository_id = ? AND state IN ('pending', 'blocked')`),
			CandidateWithdrawn, db.now(), repoID)
		if err != nil {
			return fmt.Errorf("withdraw candidates: %w", err)
		}
		return nil
	})
}

func (db *core) repoID(ctx context.Context, tx *sql.Tx, repo string) (int64, error) {
	var id int64
	err := tx.QueryRowContext(ctx, db.q("SELECT id FROM repositories WHERE name = ?"), repo).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, ErrRepositoryNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("look up repository: %w", err)
	}
	return id, nil
}

// addCandidate records that d arrived for a guarded tag: a new pending
// candidate that supersedes the tag's live ones, unless the tag already
// points at d (a tag past its expiration is gone: liveTarget) or a live
// candidate for d exists. It returns the new
// candidate's id (0 when none was made).
func (db *core) addCandidate(ctx context.Context, tx *sql.Tx, repoID int64, tag string, d digest.Digest, actor string) (int64, error) {
	return db.proposeCandidate(ctx, tx, repoID, tag, d, actor, false)
}

// proposeCandidate is addCandidate; a digest the tag was rolled back from
// is proposed again only manually.
func (db *core) proposeCandidate(ctx context.Context, tx *sql.Tx, repoID int64, tag string, d digest.Digest, actor string, manual bool) (int64, error) {
	if err := db.lockGuardedTag(ctx, tx, repoID, tag); err != nil {
		return 0, err
	}
	current, err := db.liveTarget(ctx, tx, repoID, tag)
	if err != nil {
		return 0, err
	}
	if current == d.String() {
		return 0, nil
	}
	if current != "" {
		if err := db.immutable(ctx, tx, repoID, tag); err != nil {
			return 0, err
		}
	}
	states := "'pending', 'blocked'"
	if !manual {
		states += ", 'rejected'"
	}
	var one int
	err = tx.QueryRowContext(ctx, db.q(`SELECT 1 FROM gate_candidates WHERE repository_id = ? AND tag = ? AND digest = ? AND state IN (`+states+`) LIMIT 1`),
		repoID, tag, d.String()).Scan(&one)
	if err == nil {
		return 0, nil // already a candidate (a mirror that syncs again), or rolled back from
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("find candidate: %w", err)
	}
	ts := db.now()
	if _, err := tx.ExecContext(ctx, db.q(`UPDATE gate_candidates SET state = ?, decided_at = ? WHERE repository_id = ? AND tag = ? AND state IN ('pending', 'blocked')`),
		CandidateSuperseded, ts, repoID, tag); err != nil {
		return 0, fmt.Errorf("supersede candidates: %w", err)
	}
	var id int64
	if err := tx.QueryRowContext(ctx, db.q(`INSERT INTO gate_candidates (repository_id, tag, digest, state, actor, created_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING id`),
		repoID, tag, d.String(), CandidatePending, actor, ts).Scan(&id); err != nil {
		return 0, fmt.Errorf("record candidate: %w", err)
	}
	return id, nil
}

// hold marks a manifest stored in a gated repository held.
func (db *core) hold(ctx context.Context, tx *sql.Tx, repoID int64, d digest.Digest) error {
	if _, err := tx.ExecContext(ctx, db.q("UPDATE manifests SET held = 1 WHERE repository_id = ? AND digest = ?"), repoID, d.String()); err != nil {
		return fmt.Errorf("hold manifest: %w", err)
	}
	return nil
}

// readable reports whether the repository stores a manifest and no gate
// holds it (false if it is not stored).
func (db *core) readable(ctx context.Context, tx *sql.Tx, repoID int64, d string) (bool, error) {
	var held int
	err := tx.QueryRowContext(ctx, db.q("SELECT held FROM manifests WHERE repository_id = ? AND digest = ?"), repoID, d).Scan(&held)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read manifest: %w", err)
	}
	return held == 0, nil
}

// release makes a manifest readable, with everything held that it
// reaches: the manifests it references (an index's platforms) and its
// referrers that describe it (signatures, SBOMs, attestations: describes),
// transitively. A referrer that does not (a runnable image, an index,
// naming it as subject) stays held with all it alone reaches: a subject
// field cannot publish what no check saw. The manifest itself is
// updated first (its transaction holds its row already); what it reaches
// is found first and then updated in digest order: two transactions
// releasing overlapping sets wait for each other in that order instead
// of deadlocking (a publishing push holds its references only FOR KEY
// SHARE, which these updates do not wait for: checkRefs).
func (db *core) release(ctx context.Context, tx *sql.Tx, repoID int64, d digest.Digest) error {
	work := []string{d.String()}
	seen := map[string]bool{}
	var reached []string
	for len(work) > 0 {
		cur := work[len(work)-1]
		work = work[:len(work)-1]
		if seen[cur] {
			continue
		}
		seen[cur] = true
		if cur == d.String() {
			if _, err := tx.ExecContext(ctx, db.q("UPDATE manifests SET held = 0 WHERE repository_id = ? AND digest = ? AND held = 1"), repoID, cur); err != nil {
				return fmt.Errorf("release manifest: %w", err)
			}
		} else {
			reached = append(reached, cur)
		}
		rows, err := tx.QueryContext(ctx, db.q(`SELECT m.digest FROM manifest_references x JOIN manifests m ON m.repository_id = x.repository_id AND m.digest = x.ref_digest
			WHERE x.repository_id = ? AND x.manifest_digest = ? AND x.is_manifest = 1 AND m.held = 1`), repoID, cur)
		if err != nil {
			return fmt.Errorf("find held content: %w", err)
		}
		next, err := scanStrings(rows)
		if err != nil {
			return fmt.Errorf("find held content: %w", err)
		}
		described, err := db.heldDescriptions(ctx, tx, repoID, cur)
		if err != nil {
			return err
		}
		work = append(append(work, next...), described...)
	}
	slices.Sort(reached)
	for _, cur := range reached {
		if _, err := tx.ExecContext(ctx, db.q("UPDATE manifests SET held = 0 WHERE repository_id = ? AND digest = ? AND held = 1"), repoID, cur); err != nil {
			return fmt.Errorf("release manifest: %w", err)
		}
	}
	return nil
}

// heldDescriptions returns the held referrers of a manifest that only
// describe it (describes, recorded when each was stored; read from the
// content of those stored before it was recorded).
func (db *core) heldDescriptions(ctx context.Context, tx *sql.Tx, repoID int64, subject string) ([]string, error) {
	rows, err := tx.QueryContext(ctx, db.q(`SELECT digest, media_type, describes IS NULL, CASE WHEN describes IS NULL THEN content END FROM manifests
		WHERE repository_id = ? AND subject = ? AND held = 1 AND (describes IS NULL OR describes = 1)`), repoID, subject)
	if err != nil {
		return nil, fmt.Errorf("find held referrers: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var d, mediaType string
		var unknown bool
		var content []byte
		if err := rows.Scan(&d, &mediaType, &unknown, &content); err != nil {
			return nil, fmt.Errorf("find held referrers: %w", err)
		}
		if !unknown || describes(mediaType, content) {
			out = append(out, d)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("find held referrers: %w", err)
	}
	return out, nil
}

const candidateColumns = `c.id, r.name, c.tag, c.digest, c.state, c.reasons, c.decision, c.rollback_tag, c.actor, c.created_at, c.decided_at`

func scanCandidate(row interface{ Scan(...any) error }) (Candidate, error) {
	var c Candidate
	var d, reasons, decision string
	var created, decided int64
	if err := row.Scan(&c.ID, &c.Repository, &c.Tag, &d, &c.State, &reasons, &decision, &c.RollbackTag, &c.Actor, &created, &decided); err != nil {
		return Candidate{}, err
	}
	c.Digest, c.Decision, c.CreatedAt = digest.Digest(d), json.RawMessage(decision), fromMicros(created)
	if decided != 0 {
		c.DecidedAt = fromMicros(decided)
	}
	_ = json.Unmarshal([]byte(reasons), &c.Reasons)
	return c, nil
}

// Candidate returns a candidate by id.
func (db Gates) Candidate(ctx context.Context, id int64) (Candidate, error) {
	c, err := scanCandidate(db.read.QueryRowContext(ctx, db.q(`SELECT `+candidateColumns+` FROM gate_candidates c
		JOIN repositories r ON r.id = c.repository_id WHERE c.id = ?`), id))
	if errors.Is(err, sql.ErrNoRows) {
		return Candidate{}, ErrCandidateNotFound
	}
	if err != nil {
		return Candidate{}, fmt.Errorf("read candidate: %w", err)
	}
	return c, nil
}

// CandidateQuery selects a repository's candidates.
type CandidateQuery struct {
	// Live selects pending and blocked candidates only.
	Live bool
	// Digest, Tag select one manifest's or one tag's candidates.
	Digest digest.Digest
	Tag    string
	// ByID lists them oldest first, from the first whose id is above
	// After: keyset paging (a page's last id is the next page's After).
	ByID  bool
	After int64
	// Limit caps the answer (default 100), newest first unless ByID.
	Limit int
}

// Candidates lists a repository's candidates, newest first (q.ByID:
// oldest first).
func (db Gates) Candidates(ctx context.Context, repo string, q CandidateQuery) ([]Candidate, error) {
	query := `SELECT ` + candidateColumns + ` FROM gate_candidates c JOIN repositories r ON r.id = c.repository_id WHERE r.name = ?`
	args := []any{repo}
	if q.Live {
		query += " AND c.state IN ('pending', 'blocked')"
	}
	if q.Digest != "" {
		query += " AND c.digest = ?"
		args = append(args, q.Digest.String())
	}
	if q.Tag != "" {
		query += " AND c.tag = ?"
		args = append(args, q.Tag)
	}
	if q.Limit <= 0 {
		q.Limit = 100
	}
	if q.ByID {
		query += " AND c.id > ? ORDER BY c.id LIMIT CAST(? AS BIGINT)"
		return db.listCandidates(ctx, query, append(args, q.After, q.Limit)...)
	}
	query += " ORDER BY c.id DESC LIMIT CAST(? AS BIGINT)"
	return db.listCandidates(ctx, query, append(args, q.Limit)...)
}

// LiveCandidates lists the live candidates of every repository, oldest
// first, up to n (re-evaluation after a vulnerability data import).
func (db Gates) LiveCandidates(ctx context.Context, n int) ([]Candidate, error) {
	return db.listCandidates(ctx, `SELECT `+candidateColumns+` FROM gate_candidates c JOIN repositories r ON r.id = c.repository_id
		WHERE c.state IN ('pending', 'blocked') ORDER BY c.id LIMIT CAST(? AS BIGINT)`, n)
}

func (db *core) listCandidates(ctx context.Context, query string, args ...any) ([]Candidate, error) {
	rows, err := db.read.QueryContext(ctx, db.q(query), args...)
	if err != nil {
		return nil, fmt.Errorf("list candidates: %w", err)
	}
	defer rows.Close()
	var out []Candidate
	for rows.Next() {
		c, err := scanCandidate(rows)
		if err != nil {
			return nil, fmt.Errorf("list candidates: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// PostCheck records a check result for a manifest of the repository
// (replacing the previous result of that name) with a gate_check event
// for the gate's subscriber. The manifest must be stored
// (ErrManifestNotFound).
func (db Gates) PostCheck(ctx context.Context, repo string, d digest.Digest, c Check) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		repoID, err := db.repoID(ctx, tx, repo)
		if err != nil {
			return err
		}
		var one int
		err = tx.QueryRowContext(ctx, db.q("SELECT 1 FROM manifests WHERE repository_id = ? AND digest = ?"), repoID, d.String()).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrManifestNotFound
		}
		if err != nil {
			return fmt.Errorf("look up manifest: %w", err)
		}
		if _, err := tx.ExecContext(ctx, db.q(`INSERT INTO gate_checks (repository_id, digest, name, status, details_url, summary, actor, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (repository_id, digest, name) DO UPDATE SET status = excluded.status, details_url = excluded.details_url,
			summary = excluded.summary, actor = excluded.actor, updated_at = excluded.updated_at`),
			repoID, d.String(), c.Name, c.Status, c.DetailsURL, c.Summary, c.Actor, db.now()); err != nil {
			return fmt.Errorf("store check: %w", err)
		}
		return db.appendEvent(ctx, tx, Event{Kind: EventGateCheck, Repository: repo, Actor: c.Actor,
			Data: mustJSON(map[string]any{"digest": d.String(), "name": c.Name, "status": c.Status})})
	})
}

// Checks returns the checks posted for a manifest, by name.
func (db Gates) Checks(ctx context.Context, repo string, d digest.Digest) ([]Check, error) {
	rows, err := db.read.QueryContext(ctx, db.q(`SELECT c.name, c.status, c.details_url, c.summary, c.actor, c.updated_at FROM gate_checks c
		JOIN repositories r ON r.id = c.repository_id WHERE r.name = ? AND c.digest = ? ORDER BY c.name`), repo, d.String())
	if err != nil {
		return nil, fmt.Errorf("list checks: %w", err)
	}
	defer rows.Close()
	var out []Check
	for rows.Next() {
		var c Check
		var at int64
		if err := rows.Scan(&c.Name, &c.Status, &c.DetailsURL, &c.Summary, &c.Actor, &at); err != nil {
			return nil, fmt.Errorf("list checks: %w", err)
		}
		c.UpdatedAt = fromMicros(at)
		out = append(out, c)
	}
	return out, rows.Err()
}

// lockLiveCandidate locks a candidate's tag and returns the candidate,
// ErrCandidateNotFound, or ErrCandidateNotLive.
func (db *core) lockLiveCandidate(ctx context.Context, tx *sql.Tx, id int64) (Candidate, int64, error) {
	var repoID int64
	var tag string
	err := tx.QueryRowContext(ctx, db.q("SELECT repository_id, tag FROM gate_candidates WHERE id = ?"), id).Scan(&repoID, &tag)
	if errors.Is(err, sql.ErrNoRows) {
		return Candidate{}, 0, ErrCandidateNotFound
	}
	if err != nil {
		return Candidate{}, 0, fmt.Errorf("read candidate: %w", err)
	}
	if err := db.lockGuardedTag(ctx, tx, repoID, tag); err != nil {
		return Candidate{}, 0, err
	}
	lock := ""
	if db.dialect == postgres {
		// A gate change that withdrew it meanwhile has committed, and is
		// seen: the decision must not bring a withdrawn candidate back.
		lock = " FOR UPDATE OF c"
	}
	c, err := scanCandidate(tx.QueryRowContext(ctx, db.q(`SELECT `+candidateColumns+` FROM gate_candidates c
		JOIN repositories r ON r.id = c.repository_id WHERE c.id = ?`+lock), id))
	if err != nil {
		return Candidate{}, 0, fmt.Errorf("read candidate: %w", err)
	}
	if !c.Live() {
		return c, repoID, ErrCandidateNotLive
	}
	return c, repoID, nil
}

// HasLiveCandidates reports whether a repository has pending or blocked
// candidates.
func (db Gates) HasLiveCandidates(ctx context.Context, repo string) (bool, error) {
	var one int
	err := db.read.QueryRowContext(ctx, db.q(`SELECT 1 FROM gate_candidates c JOIN repositories r ON r.id = c.repository_id
		WHERE r.name = ? AND c.state IN ('pending', 'blocked') LIMIT 1`), repo).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up live candidates: %w", err)
	}
	return true, nil
}
