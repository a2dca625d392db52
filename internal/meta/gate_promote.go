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

	"github.com/berth-dev/berth/internal/oci"
)

// maxTagLength is the longest tag the distribution spec allows.
const maxTagLength = 128

// This file holds what decides a gate's candidate: a recorded decision,
// the promotion transaction with its rollback tag, immutable tags, and
// manual candidates (gates.go holds gates, candidates and checks).

// Decision is an evaluation of a live candidate that did not promote it.
type Decision struct {
	CandidateID int64
	// State is CandidatePending (waiting for an input) or CandidateBlocked.
	State string
	// Reasons say what is missing or failing, in words.
	Reasons []string
	// Detail is the evaluation's record (the policy, its inputs, the
	// decision) for the API and the audit trail.
	Detail json.RawMessage
	// Event is the data of the promotion_blocked event to append when
	// the candidate becomes blocked or its reasons change.
	Event json.RawMessage
}

// Decide records an evaluation that did not promote the candidate, and
// appends promotion_blocked when it becomes blocked or is blocked for
// other reasons than before. It returns ErrCandidateNotLive if the
// candidate was decided otherwise meanwhile.
func (db Gates) Decide(ctx context.Context, dec Decision) error {
	reasons, _ := json.Marshal(nonNil(dec.Reasons))
	return db.tx(ctx, func(tx *sql.Tx) error {
		c, _, err := db.lockLiveCandidate(ctx, tx, dec.CandidateID)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, db.q("UPDATE gate_candidates SET state = ?, reasons = ?, decision = ?, decided_at = ? WHERE id = ?"),
			dec.State, string(reasons), string(dec.Detail), db.now(), c.ID); err != nil {
			return fmt.Errorf("record decision: %w", err)
		}
		prev, _ := json.Marshal(nonNil(c.Reasons))
		if dec.State != CandidateBlocked || c.State == CandidateBlocked && string(prev) == string(reasons) {
			return nil
		}
		return db.appendEvent(ctx, tx, Event{Kind: EventPromotionBlocked, Repository: c.Repository, Actor: c.Actor, Data: dec.Event})
	})
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// Promotion promotes a live candidate.
type Promotion struct {
	CandidateID int64
	// RollbackTag names the unique rollback tag for the n-th promotion of
	// the candidate's tag (n counts from 1).
	RollbackTag func(n int64) string
	// Detail is the evaluation's record, stored with the candidate and in
	// the audit entry.
	Detail json.RawMessage
	Actor  string
	// Event is extra data of the promotion_succeeded event (the decision).
	Event map[string]any
	// GateUpdatedAt is when the gate the evaluation read was last changed:
	// a gate replaced or deleted since refuses the promotion
	// (ErrGateChanged). Zero skips the check.
	GateUpdatedAt time.Time
	// Checks are the checks posted for the candidate's digest that the
	// evaluation read, name to status: if they differ now (a check
	// posted, changed or gone since), the promotion is refused
	// (ErrChecksChanged). Nil skips the check (an override).
	Checks map[string]string
}

// ErrReadOnly refuses a promotion in a repository whose state takes no
// writes (READ_ONLY): the candidate stays live.
var ErrReadOnly = errors.New("the repository is read-only (state READ_ONLY): it takes no promotions")

// ErrChecksChanged refuses a promotion decided on checks that changed
// since: the candidate stays live, to be evaluated again.
var ErrChecksChanged = errors.New("the candidate's checks changed since it was evaluated")

// repoStateReadOnly is the state of a repository that takes no writes
// (auth.StateReadOnly).
const repoStateReadOnly = "READ_ONLY"

// Promoted is what a promotion did.
type Promoted struct {
	Candidate   Candidate
	RollbackTag string
	// Previous is the digest the tag pointed at before ("" if none).
	Previous digest.Digest
}

// Promote moves the candidate's tag to it in one transaction: the
// candidate and what it reaches become readable, a unique rollback tag is
// created and made immutable, the tag history and an audit entry are
// written, and repo_push (both tags) and promotion_succeeded are
// appended. It returns ErrCandidateNotLive if the candidate is no longer
// live (promoted already, superseded, withdrawn): a promotion happens once.
// It refuses, changing nothing, in a read-only repository (ErrReadOnly),
// when the checks the evaluation read changed (ErrChecksChanged), and when
// the tag is immutable (*ImmutableTagError).
func (db Gates) Promote(ctx context.Context, p Promotion) (Promoted, error) {
	var out Promoted
	err := db.tx(ctx, func(tx *sql.Tx) error {
		if !p.GateUpdatedAt.IsZero() {
			// The gate before the candidate, in the order DeleteGate and
			// PutGate lock them (no deadlock between them).
			var gateRepo int64
			err := tx.QueryRowContext(ctx, db.q("SELECT repository_id FROM gate_candidates WHERE id = ?"), p.CandidateID).Scan(&gateRepo)
			if errors.Is(err, sql.ErrNoRows) {
				return ErrCandidateNotFound
			}
			if err != nil {
				return fmt.Errorf("read candidate: %w", err)
			}
			if err := db.gateUnchanged(ctx, tx, gateRepo, p.GateUpdatedAt); err != nil {
				return err
			}
		}
		c, repoID, err := db.lockLiveCandidate(ctx, tx, p.CandidateID)
		if err != nil {
			return err
		}
		if err := db.promotable(ctx, tx, repoID, c.Digest, p.Checks); err != nil {
			return err
		}
		var mediaType string
		var size int64
		// Locked as its release below will (manifestLock).
		err = tx.QueryRowContext(ctx, db.q("SELECT media_type, size FROM manifests WHERE repository_id = ? AND digest = ?"+db.manifestLock(true)), repoID, c.Digest.String()).
			Scan(&mediaType, &size)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrManifestNotFound
		}
		if err != nil {
			return fmt.Errorf("look up manifest: %w", err)
		}
		prev, _, err := db.setTag(ctx, tx, repoID, c.Tag, c.Digest)
		if err != nil {
			return err
		}
		if err := db.release(ctx, tx, repoID, c.Digest); err != nil {
			return err
		}
		rollback, err := db.rollbackTag(ctx, tx, repoID, c.Tag, c.Digest, p.RollbackTag)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, db.q(`INSERT INTO immutable_tags (repository_id, name, reason, created_at) VALUES (?, ?, ?, ?)`),
			repoID, rollback, "the rollback tag of a promotion of "+c.Tag, db.now()); err != nil {
			return fmt.Errorf("make rollback tag immutable: %w", err)
		}
		ts := db.now()
		if _, err := tx.ExecContext(ctx, db.q("UPDATE gate_candidates SET state = ?, reasons = '[]', decision = ?, rollback_tag = ?, decided_at = ? WHERE id = ?"),
			CandidatePromoted, string(p.Detail), rollback, ts, c.ID); err != nil {
			return fmt.Errorf("record promotion: %w", err)
		}
		ns, _, _ := strings.Cut(c.Repository, "/")
		audit, _ := json.Marshal(map[string]any{"tag": c.Tag, "digest": c.Digest, "rollback_tag": rollback, "previous": prev,
			"candidate": c.ID, "decision": p.Detail})
		if _, err := tx.ExecContext(ctx, db.q(`INSERT INTO audit_log (kind, actor, ip, namespace, repository, metadata, created_at) VALUES (?, ?, '', ?, ?, ?, ?)`),
			"gate_promote", p.Actor, ns, c.Repository, string(audit), ts); err != nil {
			return fmt.Errorf("audit promotion: %w", err)
		}
		push := pushEvent{Digest: c.Digest.String(), MediaType: mediaType, Size: size, UpdatedTags: []string{c.Tag, rollback}}
		if prev != "" {
			push.Previous = map[string]string{c.Tag: prev}
		}
		if err := db.appendEvent(ctx, tx, Event{Kind: EventRepoPush, Repository: c.Repository, Actor: p.Actor, Data: mustJSON(push)}); err != nil {
			return err
		}
		data := map[string]any{"digest": c.Digest.String(), "media_type": mediaType, "tag": c.Tag, "tags": []string{c.Tag, rollback},
			"rollback_tag": rollback, "previous_digest": prev, "candidate": c.ID}
		for k, v := range p.Event {
			if _, ok := data[k]; !ok {
				data[k] = v
			}
		}
		if err := db.appendEvent(ctx, tx, Event{Kind: EventPromotionSucceeded, Repository: c.Repository, Actor: p.Actor, Data: mustJSON(data)}); err != nil {
			return err
		}
		c.State, c.RollbackTag, c.DecidedAt = CandidatePromoted, rollback, fromMicros(ts)
		out = Promoted{Candidate: c, RollbackTag: rollback, Previous: digest.Digest(prev)}
		return nil
	})
	return out, err
}

// promotable refuses a promotion in a read-only repository (ErrReadOnly)
// or, unless checks is nil, when the checks posted for d are no longer
// those (ErrChecksChanged). On PostgreSQL the repository row and the
// checks are read FOR SHARE: a state change or a change of a check already
// posted waits for the promotion to commit, and is then the later change.
// A check of a new name posted while the promotion runs is not locked out
// (no row to lock): it lands after the promotion.
func (db *core) promotable(ctx context.Context, tx *sql.Tx, repoID int64, d digest.Digest, checks map[string]string) error {
	lock := ""
	if db.dialect == postgres {
		lock = " FOR SHARE"
	}
	var state string
	err := tx.QueryRowContext(ctx, db.q("SELECT state FROM repositories WHERE id = ?"+lock), repoID).Scan(&state)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrRepositoryNotFound
	}
	if err != nil {
		return fmt.Errorf("read repository state: %w", err)
	}
	if state == repoStateReadOnly {
		return ErrReadOnly
	}
	if checks == nil {
		return nil
	}
	rows, err := tx.QueryContext(ctx, db.q("SELECT name, status FROM gate_checks WHERE repository_id = ? AND digest = ?"+lock), repoID, d.String())
	if err != nil {
		return fmt.Errorf("read checks: %w", err)
	}
	defer rows.Close()
	n := 0
	changed := false
	for rows.Next() {
		var name, status string
		if err := rows.Scan(&name, &status); err != nil {
			return fmt.Errorf("read checks: %w", err)
		}
		n++
		if was, ok := checks[name]; !ok || was != status {
			changed = true
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read checks: %w", err)
	}
	if changed || n != len(checks) {
		return ErrChecksChanged
	}
	return nil
}

// gateUnchanged returns ErrGateChanged unless the repository's gate is
// still the one last changed at updated (read FOR SHARE: a change waits
// for the promotion, then re-evaluates or withdraws what it left).
func (db *core) gateUnchanged(ctx context.Context, tx *sql.Tx, repoID int64, updated time.Time) error {
	lock := ""
	if db.dialect == postgres {
		lock = " FOR SHARE"
	}
	var at int64
	err := tx.QueryRowContext(ctx, db.q("SELECT updated_at FROM gates WHERE repository_id = ?"+lock), repoID).Scan(&at)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrGateChanged
	}
	if err != nil {
		return fmt.Errorf("read gate: %w", err)
	}
	if at != updated.UnixMicro() {
		return ErrGateChanged
	}
	return nil
}

// rollbackTag takes the next number of the tag's rollback counter and
// creates, pointing at d, the first tag it names that does not exist yet
// (created here, not looked up and then set: a push of that name at the
// same moment keeps its tag, and the rollback takes the next name).
func (db *core) rollbackTag(ctx context.Context, tx *sql.Tx, repoID int64, tag string, d digest.Digest, name func(int64) string) (string, error) {
	var n int64
	err := tx.QueryRowContext(ctx, db.q("SELECT n FROM gate_counters WHERE repository_id = ? AND tag = ?"), repoID, tag).Scan(&n)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("read rollback counter: %w", err)
	}
	ts := db.now()
	tried := map[string]bool{}
	for range 1000 {
		n++
		candidate := name(n)
		if tried[candidate] {
			// The template does not vary with n ({tag}-{digest12}, the
			// same digest promoted again): number its name.
			candidate += fmt.Sprintf("-%d", n)
		}
		tried[candidate] = true
		if len(candidate) > maxTagLength {
			// A long guarded tag: cut, and keep the number unique.
			suffix := fmt.Sprintf("-%d", n)
			candidate = candidate[:maxTagLength-len(suffix)] + suffix
		}
		if err := oci.ValidateTag(candidate); err != nil {
			return "", fmt.Errorf("rollback tag of %q: %w", tag, err)
		}
		created, err := db.createTag(ctx, tx, repoID, candidate, d, ts)
		if err != nil {
			return "", err
		}
		if !created {
			continue
		}
		if _, err := tx.ExecContext(ctx, db.q(`INSERT INTO gate_counters (repository_id, tag, n) VALUES (?, ?, ?)
			ON CONFLICT (repository_id, tag) DO UPDATE SET n = excluded.n`), repoID, tag, n); err != nil {
			return "", fmt.Errorf("store rollback counter: %w", err)
		}
		if err := db.recordTagHistory(ctx, tx, repoID, candidate, d.String(), ts); err != nil {
			return "", err
		}
		return candidate, nil
	}
	return "", fmt.Errorf("no free rollback tag name for %q: the template makes names that are all taken", tag)
}

// ManualCandidate returns the live candidate of d for a guarded tag, or
// makes one (superseding the tag's others, without promotion_pending: a
// person asked for it) for a manual promotion. d must be stored in the
// repository.
func (db Gates) ManualCandidate(ctx context.Context, repo, tag string, d digest.Digest, actor string) (Candidate, error) {
	var id int64
	err := db.tx(ctx, func(tx *sql.Tx) error {
		repoID, err := db.repoID(ctx, tx, repo)
		if err != nil {
			return err
		}
		// The gate, held until this commits (a DeleteGate waits, then
		// withdraws the candidate made here), and still there.
		if _, gated, err := db.guardedTags(ctx, tx, repoID); err != nil || !gated {
			if err == nil {
				err = ErrGateNotFound
			}
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
		if id, err = db.proposeCandidate(ctx, tx, repoID, tag, d, actor, true); err != nil || id != 0 {
			return err
		}
		err = tx.QueryRowContext(ctx, db.q(`SELECT id FROM gate_candidates WHERE repository_id = ? AND tag = ? AND digest = ? AND state IN ('pending', 'blocked')`),
			repoID, tag, d.String()).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("tag %s already points at %s: %w", tag, d, ErrExists)
		}
		return err
	})
	if err != nil {
		return Candidate{}, err
	}
	return db.Candidate(ctx, id)
}
