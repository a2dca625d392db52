package meta

import (
	"context"
	"database/sql"
	"encoding/json"
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

// ImportVulns applies the records that are new or whose modified time or
// withdrawal differs from what is stored, in one transaction together with
// a job that re-matches the manifests they name. It returns the ids of
// the records applied.
func (db *DB) ImportVulns(ctx context.Context, recs []VulnRecord) ([]string, error) {
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
		ts := now()
		var records, keys [][]any
		for _, id := range ids {
			r := recs[latest[id]]
			if st, ok := stored[id]; ok && st.modified == r.Modified && st.withdrawn == r.Withdrawn {
				continue // unchanged
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
		_, err = db.EnqueueJobTx(ctx, tx, Job{Queue: ScanQueue, OrderingKey: "rematch", Payload: payload})
		return err
	})
	return applied, err
}

// VulnRecordsFor returns the advisories, not withdrawn, that name any of
// the keys exactly: one query per ecosystem and few hundred names, each an
// index range on (ecosystem, name).
func (db *DB) VulnRecordsFor(ctx context.Context, keys []VulnKey) ([]StoredVuln, error) {
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
func (db *DB) VulnRecordsByID(ctx context.Context, ids []string) ([]StoredVuln, error) {
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
func (db *DB) VulnKeysOf(ctx context.Context, ids []string) ([]VulnKey, error) {
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
func (db *DB) TouchVulnSource(ctx context.Context, ecosystem string) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		var n int64
		if err := tx.QueryRowContext(ctx, db.q(`SELECT COUNT(DISTINCT record_id) FROM vuln_keys WHERE ecosystem = ? OR ecosystem LIKE ?`),
			ecosystem, ecosystem+":%").Scan(&n); err != nil {
			return fmt.Errorf("count advisories: %w", err)
		}
		_, err := tx.ExecContext(ctx, db.q(`INSERT INTO vuln_sources (ecosystem, records, updated_at) VALUES (?, ?, ?)
			ON CONFLICT (ecosystem) DO UPDATE SET records = excluded.records, updated_at = excluded.updated_at`), ecosystem, n, now())
		if err != nil {
			return fmt.Errorf("record import: %w", err)
		}
		return nil
	})
}

// VulnSources lists the imported ecosystems.
func (db *DB) VulnSources(ctx context.Context) ([]VulnSource, error) {
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
func (db *DB) VulnDBVersion(ctx context.Context) (int64, error) {
	var v sql.NullInt64
	if err := db.read.QueryRowContext(ctx, `SELECT MAX(t) FROM (SELECT MAX(updated_at) AS t FROM vuln_records
		UNION ALL SELECT MAX(updated_at) FROM cpe_mapping_source) v`).Scan(&v); err != nil {
		return 0, fmt.Errorf("read advisories: %w", err)
	}
	return v.Int64, nil
}
