package meta

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// VulnKey names a package as advisories do: an OSV ecosystem ("Debian:12",
// "Go") and a package name.
type VulnKey struct {
	Ecosystem string `json:"ecosystem"`
	Name      string `json:"name"`
}

// VulnRecord is an advisory to import: its OSV JSON and the packages it
// names.
type VulnRecord struct {
	ID        string
	Modified  string
	Withdrawn bool
	Data      []byte
	Keys      []VulnKey
}

// StoredVuln is an imported advisory.
type StoredVuln struct {
	ID        string
	Withdrawn bool
	Data      []byte
}

// vulnDataLockClass is the class of the PostgreSQL advisory lock that
// serializes writes of the advisories and of the content set mapping
// (lockVulnData).
const vulnDataLockClass = 0x76756c6e // "vuln"

// lockVulnData takes, first in a transaction that writes the advisories
// or the content set mapping, the lock that makes such transactions run
// one at a time on PostgreSQL: each reads what is stored and then
// replaces it (deletes, then inserts), so that two at once (a scheduled
// update and `berth admin vulndb fetch`, or two uploads) would both insert
// the same rows and one fail with a duplicate key. Its reads, made after
// the lock, see what the other committed. SQLite has one writer already.
func (db VulnDB) lockVulnData(ctx context.Context, tx *sql.Tx) error {
	if db.dialect != postgres {
		return nil
	}
	if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1, 0)", vulnDataLockClass); err != nil {
		return fmt.Errorf("lock vulnerability data: %w", err)
	}
	return nil
}

// ImportVulns applies the records that are new or whose modified time or
// withdrawal differs from what is stored, unless their modified time is
// older than the stored version's (importing an old bundle, as an
// air-gapped site may, rolls nothing back), in one transaction together with
// a job that re-matches the manifests they name. It returns the ids of
// the records applied. Imports run one at a time (lockVulnData).
func (db VulnDB) ImportVulns(ctx context.Context, recs []VulnRecord) ([]string, error) {
	// The last of several records with one id wins, as a sequence of
	// imports would have it.
	latest := map[string]int{}
	ids := make([]string, 0, len(recs))
	for i, r := range recs {
		if _, ok := latest[r.ID]; !ok {
			ids = append(ids, r.ID)
		}
		latest[r.ID] = i
	}
	var applied []string
	err := db.tx(ctx, func(tx *sql.Tx) error {
		applied = applied[:0]
		if err := db.lockVulnData(ctx, tx); err != nil {
			return err
		}
		type state struct {
			modified  string
			withdrawn bool
		}
		stored := map[string]state{}
		err := chunks(ids, func(part []string) error {
			rows, err := tx.QueryContext(ctx, db.q("SELECT id, modified, withdrawn FROM vuln_records WHERE id IN ("+placeholders(len(part))+")"), anySlice(part)...)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var id string
				var st state
				var w int
				if err := rows.Scan(&id, &st.modified, &w); err != nil {
					return err
				}
				st.withdrawn = w == 1
				stored[id] = st
			}
			return rows.Err()
		})
		if err != nil {
			return fmt.Errorf("read advisories: %w", err)
		}
		ts := db.now()
		var records, keys [][]any
		for _, id := range ids {
			r := recs[latest[id]]
			if st, ok := stored[id]; ok && (st.modified == r.Modified && st.withdrawn == r.Withdrawn || olderThan(r.Modified, st.modified)) {
				continue // unchanged, or an older version than the stored one (an old bundle)
			}
			applied = append(applied, id)
			records = append(records, []any{r.ID, r.Modified, boolInt(r.Withdrawn), r.Data, ts})
			seen := map[VulnKey]bool{}
			for _, k := range r.Keys {
				if !seen[k] {
					seen[k] = true
					keys = append(keys, []any{k.Ecosystem, k.Name, r.ID})
				}
			}
		}
		if len(applied) == 0 {
			return nil
		}
		// The keys of a record's old version go: the re-match finds the
		// manifests it matched before through manifest_vulns.
		err = chunks(applied, func(part []string) error {
			if _, err := tx.ExecContext(ctx, db.q("DELETE FROM vuln_keys WHERE record_id IN ("+placeholders(len(part))+")"), anySlice(part)...); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, db.q("DELETE FROM vuln_records WHERE id IN ("+placeholders(len(part))+")"), anySlice(part)...)
			return err
		})
		if err != nil {
			return fmt.Errorf("replace advisories: %w", err)
		}
		// Records are up to a few MiB (usually a few KiB): 20 per statement.
		if err := db.insertRowsBy(ctx, tx, "vuln_records (id, modified, withdrawn, data, updated_at)", records, 20); err != nil {
			return fmt.Errorf("store advisories: %w", err)
		}
		if err := db.insertRows(ctx, tx, "vuln_keys (ecosystem, name, record_id)", keys); err != nil {
			return fmt.Errorf("store advisory packages: %w", err)
		}
		payload, _ := json.Marshal(ScanJob{Kind: ScanJobRematch, Records: applied})
		if _, err = db.enqueueJob(ctx, tx, Job{Queue: ScanQueue, OrderingKey: "rematch", Payload: payload}); err != nil {
			return err
		}
		// Gates evaluate their candidates again: a scan input changed.
		return db.appendEvent(ctx, tx, Event{Kind: EventVulnDataUpdated, Data: mustJSON(map[string]any{"records": len(applied)})})
	})
	return applied, err
}

// VulnRecordsFor returns the advisories, not withdrawn, that name any of
// the keys exactly: one query per ecosystem and few hundred names, each an
// index range on (ecosystem, name).
func (db VulnDB) VulnRecordsFor(ctx context.Context, keys []VulnKey) ([]StoredVuln, error) {
	names := map[string][]string{}
	var ecosystems []string
	for _, k := range keys {
		if _, ok := names[k.Ecosystem]; !ok {
			ecosystems = append(ecosystems, k.Ecosystem)
		}
		names[k.Ecosystem] = append(names[k.Ecosystem], k.Name)
	}
	seen := map[string]bool{}
	var out []StoredVuln
	for _, eco := range ecosystems {
		err := chunks(names[eco], func(part []string) error {
			rows, err := db.read.QueryContext(ctx, db.q(`SELECT r.id, r.data FROM vuln_keys k JOIN vuln_records r ON r.id = k.record_id
				WHERE k.ecosystem = ? AND k.name IN (`+placeholders(len(part))+`) AND r.withdrawn = 0`), append([]any{eco}, anySlice(part)...)...)
			if err != nil {
				return fmt.Errorf("find advisories: %w", err)
			}
			defer rows.Close()
			for rows.Next() {
				var v StoredVuln
				if err := rows.Scan(&v.ID, &v.Data); err != nil {
					return err
				}
				if !seen[v.ID] {
					seen[v.ID] = true
					out = append(out, v)
				}
			}
			return rows.Err()
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// VulnRecordsByID returns the named advisories, withdrawn ones included.
func (db VulnDB) VulnRecordsByID(ctx context.Context, ids []string) ([]StoredVuln, error) {
	var out []StoredVuln
	err := chunks(ids, func(part []string) error {
		rows, err := db.read.QueryContext(ctx, db.q("SELECT id, withdrawn, data FROM vuln_records WHERE id IN ("+placeholders(len(part))+")"), anySlice(part)...)
		if err != nil {
			return fmt.Errorf("read advisories: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var v StoredVuln
			var w int
			if err := rows.Scan(&v.ID, &w, &v.Data); err != nil {
				return err
			}
			v.Withdrawn = w == 1
			out = append(out, v)
		}
		return rows.Err()
	})
	return out, err
}

// VulnKeysOf returns the packages the named advisories name.
func (db VulnDB) VulnKeysOf(ctx context.Context, ids []string) ([]VulnKey, error) {
	seen := map[VulnKey]bool{}
	var out []VulnKey
	err := chunks(ids, func(part []string) error {
		rows, err := db.read.QueryContext(ctx, db.q("SELECT ecosystem, name FROM vuln_keys WHERE record_id IN ("+placeholders(len(part))+")"), anySlice(part)...)
		if err != nil {
			return fmt.Errorf("read advisory packages: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var k VulnKey
			if err := rows.Scan(&k.Ecosystem, &k.Name); err != nil {
				return err
			}
			if !seen[k] {
				seen[k] = true
				out = append(out, k)
			}
		}
		return rows.Err()
	})
	return out, err
}

// VulnSource is the import state of one ecosystem.
type VulnSource struct {
	Ecosystem string    `json:"ecosystem"`
	Records   int64     `json:"records"`
	UpdatedAt time.Time `json:"updated_at"`
}

// TouchVulnSource records that an import covered an ecosystem (its base
// name, "Debian") and counts its records.
func (db VulnDB) TouchVulnSource(ctx context.Context, ecosystem string) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		var n int64
		if err := tx.QueryRowContext(ctx, db.q(`SELECT COUNT(DISTINCT record_id) FROM vuln_keys WHERE ecosystem = ? OR ecosystem LIKE CAST(? AS TEXT)`),
			ecosystem, ecosystem+":%").Scan(&n); err != nil {
			return fmt.Errorf("count advisories: %w", err)
		}
		_, err := tx.ExecContext(ctx, db.q(`INSERT INTO vuln_sources (ecosystem, records, updated_at) VALUES (?, ?, ?)
			ON CONFLICT (ecosystem) DO UPDATE SET records = excluded.records, updated_at = excluded.updated_at`), ecosystem, n, db.now())
		if err != nil {
			return fmt.Errorf("record import: %w", err)
		}
		return nil
	})
}

// VulnSources lists the imported ecosystems.
func (db VulnDB) VulnSources(ctx context.Context) ([]VulnSource, error) {
	rows, err := db.read.QueryContext(ctx, "SELECT ecosystem, records, updated_at FROM vuln_sources ORDER BY ecosystem")
	if err != nil {
		return nil, fmt.Errorf("read imports: %w", err)
	}
	defer rows.Close()
	out := []VulnSource{}
	for rows.Next() {
		var s VulnSource
		var ts int64
		if err := rows.Scan(&s.Ecosystem, &s.Records, &ts); err != nil {
			return nil, err
		}
		s.UpdatedAt = fromMicros(ts)
		out = append(out, s)
	}
	return out, rows.Err()
}

// VulnDBVersion is the time of the last change to the advisories or to
// the content set mapping (zero when none): a scan that matched before it
// must match again.
func (db VulnDB) VulnDBVersion(ctx context.Context) (int64, error) {
	var v sql.NullInt64
	if err := db.read.QueryRowContext(ctx, `SELECT MAX(t) FROM (SELECT MAX(updated_at) AS t FROM vuln_records
		UNION ALL SELECT MAX(updated_at) FROM cpe_mapping_source) v`).Scan(&v); err != nil {
		return 0, fmt.Errorf("read advisories: %w", err)
	}
	return v.Int64, nil
}

// PackageEcosystems lists the distinct ecosystems ("Debian:12", "Go",
// ...) of the packages of scanned images. It walks the package index by
// its leading column, one step per ecosystem, never row by row.
func (db VulnDB) PackageEcosystems(ctx context.Context) ([]string, error) {
	rows, err := db.read.QueryContext(ctx, `WITH RECURSIVE e(eco) AS (
		SELECT MIN(ecosystem) FROM manifest_packages
		UNION ALL
		SELECT (SELECT MIN(ecosystem) FROM manifest_packages WHERE ecosystem > e.eco) FROM e WHERE e.eco IS NOT NULL)
		SELECT eco FROM e WHERE eco IS NOT NULL`)
	if err != nil {
		return nil, fmt.Errorf("list package ecosystems: %w", err)
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var e string
		if err := rows.Scan(&e); err != nil {
			return nil, fmt.Errorf("list package ecosystems: %w", err)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// HasVulnEcosystem reports whether any imported advisory names a package
// of exactly this ecosystem ("Debian:12").
func (db VulnDB) HasVulnEcosystem(ctx context.Context, ecosystem string) (bool, error) {
	var one int
	err := db.read.QueryRowContext(ctx, db.q("SELECT 1 FROM vuln_keys WHERE ecosystem = ? LIMIT 1"), ecosystem).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read advisories: %w", err)
	}
	return true, nil
}

// VulnDBQueue is the job queue of scheduled vulnerability database
// updates (scan.vulndb.updateInterval): one job at a time, across every
// process sharing the database.
const VulnDBQueue = "vulndb"

// vulnDBFetchKey is the ordering key of every update job.
const vulnDBFetchKey = "fetch"

// VulnDBFetchState says whether a scheduled update is pending or running,
// and when the last one ended (zero when none ever did). It only reads.
func (db VulnDB) VulnDBFetchState(ctx context.Context) (live bool, ended time.Time, err error) {
	var status string
	var updated int64
	err = db.read.QueryRowContext(ctx, db.q(`SELECT status, updated_at FROM jobs WHERE queue = ? AND ordering_key = ?
		ORDER BY id DESC LIMIT 1`), VulnDBQueue, vulnDBFetchKey).Scan(&status, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return false, time.Time{}, nil
	}
	if err != nil {
		return false, time.Time{}, fmt.Errorf("read vulnerability database updates: %w", err)
	}
	if status == JobPending || status == JobRunning {
		return true, time.Time{}, nil
	}
	return false, fromMicros(updated), nil
}

// EnqueueVulnDBFetch queues a scheduled update unless one is pending or
// running, or one ended after since. The check and the enqueue hold the
// queue's ordering-key lock, so that replicas calling it together enqueue
// one job between them. It reports whether it enqueued.
func (db VulnDB) EnqueueVulnDBFetch(ctx context.Context, since time.Time) (bool, error) {
	var queued bool
	err := db.tx(ctx, func(tx *sql.Tx) error {
		queued = false
		if err := db.lockJobKey(ctx, tx, VulnDBQueue, vulnDBFetchKey); err != nil {
			return err
		}
		var n int
		err := tx.QueryRowContext(ctx, db.q(`SELECT COUNT(*) FROM jobs WHERE queue = ? AND ordering_key = ?
			AND (status IN ('pending', 'running') OR updated_at > ?)`), VulnDBQueue, vulnDBFetchKey, since.UnixMicro()).Scan(&n)
		if err != nil {
			return fmt.Errorf("read vulnerability database updates: %w", err)
		}
		if n > 0 {
			return nil
		}
		if _, err := db.enqueueJob(ctx, tx, Job{Queue: VulnDBQueue, OrderingKey: vulnDBFetchKey, MaxAttempts: 3}); err != nil {
			return err
		}
		queued = true
		return nil
	})
	return queued, err
}

// olderThan reports whether OSV modified time a is before b; false when
// either does not parse.
func olderThan(a, b string) bool {
	ta, errA := time.Parse(time.RFC3339, a)
	tb, errB := time.Parse(time.RFC3339, b)
	return errA == nil && errB == nil && ta.Before(tb)
}
